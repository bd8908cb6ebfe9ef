"""A fast parser for the FETCH responses the copy engine asks for.

imapclient's general parser lexes every response character by character in
Python; on a 250 MB copy that was the largest CPU cost.  The engine only asks
for UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ and BODY[] (one literal per
message), so one regular expression per item suffices.  Anything else in a
response makes this parser give up on that response, and the caller falls back
to imapclient's parser: unusual servers cost speed, never correctness.

Input is imaplib's untagged FETCH data: a flat list in which a response with
literals is one or more ``(text ending in {n}, literal)`` tuples followed by the
trailing text as bytes, and a response without literals is a single bytes item.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from imapclient.datetime_util import parse_to_datetime

from .flags import split_flags

_HEAD = re.compile(rb"^(\d+) \((.*)\)$", re.S)
_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}$")
_ITEM = re.compile(
    rb"\s*(UID|FLAGS|INTERNALDATE|RFC822\.SIZE|MODSEQ|BODY\[\])"
    rb"\s+(\([^()\"]*\)|\"(?:[^\"\\]|\\.)*\"|\x00L(\d+)\x00|NIL|\d+)", re.I)
_PLACEHOLDER = b"\x00L%d\x00"


class Unparsed(Exception):
    pass


def records(data: Sequence) -> list[list]:
    """Split imaplib's flat list into one list of pieces per FETCH response."""
    out, cur = [], []
    for piece in data:
        if piece is None:
            continue
        if piece == b"":   # the empty rest of a line that ended with a literal
            if cur:
                out.append(cur)
                cur = []
            continue
        cur.append(piece)
        if not isinstance(piece, tuple):
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def parse_record(pieces: list) -> tuple[int, dict[bytes, object]]:
    """(sequence number, {item: value}) for one response; raises Unparsed."""
    literals: list[bytes] = []
    text = []
    for piece in pieces:
        if isinstance(piece, tuple):
            head, lit = piece
            m = _LITERAL_AT_END.search(head)
            if not m:
                raise Unparsed(head[:80])
            text.append(head[:m.start()] + _PLACEHOLDER % len(literals))
            literals.append(lit)
        else:
            text.append(piece)
    m = _HEAD.match(b"".join(text))
    if not m:
        raise Unparsed(b"".join(text)[:80])
    body = m.group(2)
    out: dict[bytes, object] = {b"SEQ": int(m.group(1))}
    pos = 0
    while pos < len(body):
        im = _ITEM.match(body, pos)
        if not im:
            if body[pos:].strip():
                raise Unparsed(body[pos:pos + 80])
            break
        pos = im.end()
        key, val = im.group(1).upper(), im.group(2)
        if key == b"BODY[]":
            out[key] = literals[int(im.group(3))] if im.group(3) is not None else _scalar(val)
        elif key == b"FLAGS":
            out[key] = tuple(val[1:-1].split())
        elif key == b"INTERNALDATE":
            out[key] = parse_to_datetime(_unquote(val), normalise=False)
        elif key == b"MODSEQ":
            out[key] = (int(val.strip(b"()")),)
        else:
            out[key] = int(val)
    return out[b"SEQ"], out


def _unquote(v: bytes) -> bytes:
    if v.startswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", v[1:-1])
    return v


def _scalar(v: bytes):
    if v.upper() == b"NIL":
        return None
    if v.startswith(b'"'):
        return _unquote(v)
    raise Unparsed(v[:80])


def parse_fetch(data: Sequence, fallback: Callable[[list], dict],
                on_dropped: Callable[[int, bytes], None] | None = None) -> dict[int, dict]:
    """{uid: {item: value}}, like imapclient's parse_fetch_response with use_uid=True.

    FLAGS hold only RFC 3501 atoms, whichever parser read them: the rest (a literal with
    CRLF in it, a space, a parenthesis) is left out and reported to ``on_dropped``.
    """
    out: dict[int, dict] = {}
    for rec in records(data):
        try:
            _, items = parse_record(rec)
        except Unparsed:
            for uid, items in fallback(rec).items():
                out[uid] = _clean_flags(uid, items, on_dropped)
            continue
        uid = items.get(b"UID")
        if uid is None:
            continue  # an unsolicited FETCH (e.g. a flag change) without UID: not ours
        out[uid] = _clean_flags(uid, items, on_dropped)
    return out


def _clean_flags(uid: int, items: dict, on_dropped) -> dict:
    flags = items.get(b"FLAGS")
    if flags is None:
        return items
    kept, dropped = split_flags(flags if isinstance(flags, (tuple, list)) else (flags,))
    if dropped:
        items = dict(items)
        items[b"FLAGS"] = kept
        for f in dropped:
            if on_dropped is not None:
                on_dropped(uid, f)
    return items
