"""Fuzz the parsers that read a source's FETCH, LIST and STATUS answers (shaped as imaplib hands them over).

Only the project's own exceptions may escape, and no flag or folder name that comes
out may hold CR, LF or NUL: those would end a command line on the target.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsyncd.errors import MailsyncError
from mailsyncd.imap.flags import is_flag
from mailsyncd.net.imap import parse_fetch_data, parse_list, parse_status

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_CTL = (b"\r", b"\n", b"\0", "\r", "\n", "\0")

TOKENS = [b"UID", b"FLAGS", b"(", b")", b" ", b"  ", b"\\Seen", b"\\Flagged", b"$Junk", b"NIL", b"X-JUNK", b"1",
          b"4294967296", b"BODY[]", b"INTERNALDATE", b'"06-May-2021 07:08:09 +0000"', b'"32-Foo-9999 99:99:99 +9999"',
          b"RFC822.SIZE", b"MODSEQ", b"(12)", b'"', b'"a\\"b"', b"\\", b"\r\n", b"\r", b"\n", b"\x00", b"{", b"}",
          b"[", b"]", b"*", b"%", b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY", b"HIGHESTMODSEQ", b"SIZE", b"-1",
          b'"/"', b"\\Noselect", b"INBOX", b"&AA0ACg-", b"&Jjo-", b"&", b"\xff\xfe", "名".encode()]

token = st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6))
text = st.lists(token, max_size=24).map(b"".join)


def _literal_record(head: bytes, lit: bytes, tail: bytes) -> list:
    return [(head + b"{%d}" % len(lit), lit), tail]


record = st.one_of(
    text.map(lambda t: [t]),
    st.tuples(text, text, text).map(lambda a: _literal_record(*a)),
    st.tuples(st.integers(1, 9), text, text, text).map(
        lambda a: _literal_record(b"%d (UID %d FLAGS (" % (a[0], a[0]) + a[1], a[2], b") " + a[3] + b")")),
    st.tuples(st.integers(1, 9), st.lists(token, max_size=6), text).map(
        lambda a: _literal_record(b"%d (UID %d FLAGS (%s) BODY[] " % (a[0], a[0], b" ".join(a[1])), a[2], b")")),
)
data = st.lists(record, max_size=4).map(lambda rs: [p for r in rs for p in r])


def _clean(value) -> bool:
    return not any(c in value for c in _CTL if type(c) is type(value))


@FUZZ
@given(data)
def test_fetch_parser(d):
    dropped = []
    try:
        out = parse_fetch_data(d, False, lambda uid, f: dropped.append(f))
    except MailsyncError:
        return
    for uid, items in out.items():
        assert isinstance(uid, int)
        for f in items.get(b"FLAGS", ()):
            assert is_flag(f) and _clean(f), f


def _list_line(t: bytes, name: bytes, literal: bool) -> list:
    if literal:
        return [(b"(" + t + b') "/" ' + b"{%d}" % len(name), name), b""]
    return [b"(" + t + b') "/" ' + name]


@FUZZ
@given(st.lists(st.one_of(text.map(lambda t: [t]), st.tuples(text, text, st.booleans()).map(lambda a: _list_line(*a))),
                max_size=4).map(lambda rs: [p for r in rs for p in r]))
def test_list_parser(d):
    try:
        boxes = parse_list(d)
    except MailsyncError:
        return
    for mb in boxes:
        assert isinstance(mb.name, str) and _clean(mb.name), mb.name
        assert all(_clean(f) for f in mb.flags)


@FUZZ
@given(st.lists(st.one_of(
    text.map(lambda t: [t]),
    st.tuples(text, text).map(lambda a: [a[0] + b" (" + a[1] + b")"]),
    st.tuples(text, text).map(lambda a: [(b"{%d}" % len(a[0]), a[0]), b" (" + a[1] + b")"])), max_size=4)
    .map(lambda rs: [p for r in rs for p in r]))
def test_status_parser(d):
    try:
        out = parse_status(d)
    except MailsyncError:
        return
    for name, status in out.items():
        assert isinstance(name, str) and _clean(name), name
        assert all(isinstance(v, int) for v in (status.messages, status.uidnext, status.uidvalidity))


def test_the_crlf_flag_literal_is_dropped_and_reported():
    """The finding itself, as the fuzzer would meet it: a literal inside FLAGS behind an unknown item."""
    inj = b'x\r\nZ1 UID STORE 1:* +FLAGS.SILENT (\\Deleted)\r\nZ2 EXPUNGE\r\nY'
    d = [(b"1 (UID 7 X-JUNK 1 FLAGS (\\Seen {%d}" % len(inj), inj), (b") BODY[] {3}", b"abc"), b")"]
    dropped = []
    out = parse_fetch_data(d, False, lambda uid, f: dropped.append((uid, f)))
    assert out[7][b"FLAGS"] == (b"\\Seen",) and out[7][b"BODY[]"] == b"abc"
    assert dropped == [(7, inj)]
