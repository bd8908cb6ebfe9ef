"""Strings from servers, made safe to show: on a terminal, in a log line, in a page.

A folder name, a server's error text or a DNS answer is hostile input: an ESC sequence can clear
or retitle the admin's terminal, CR/LF can forge a log line, a bidi override can make a name read
backwards.  :func:`shown` writes each such character as a Python-style escape (``\\x1b``,
``\\u202e``) and keeps everything else, so ``已发送`` stays ``已发送``.  A backslash is kept as is:
what is shown is for reading, not for parsing back.
"""

from __future__ import annotations

import json
import re
import unicodedata

# Controls (Cc: C0, DEL, C1), format characters (Cf: bidi overrides and isolates, zero-width
# characters, BOM), line and paragraph separators (Zl, Zp), lone surrogates (Cs) and unassigned
# code points (Cn: a newer Unicode on the admin's terminal may give them a meaning).
# Kept: spaces (Zs) and private-use characters (Co), which move no cursor and hide nothing.
_HIDDEN = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp", "Cn"))
_ELLIPSIS = "…"


def hidden(c: str) -> bool:
    """Whether the character ``c`` is one :func:`shown` escapes."""
    return not c.isprintable() and unicodedata.category(c) in _HIDDEN


_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(c: str) -> str:
    if c in _SHORT:
        return _SHORT[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def shown(text: object, limit: int | None = None) -> str:
    """``text`` with every hidden character escaped: one line of printable text.

    ``limit`` bounds the result's length (in characters, an ellipsis included); an escape is
    never cut in half.
    """
    s = text if isinstance(text, str) else \
        text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    if s.isprintable() and (limit is None or len(s) <= limit):
        return s
    if limit is not None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        s = s[:limit + 1]           # every character shows as one or more
    pieces = [_escape(c) if hidden(c) else c for c in s]
    if limit is None or (len(s) <= limit and sum(map(len, pieces)) <= limit):
        return "".join(pieces)
    out, used = [], 0
    for p in pieces:
        if used + len(p) > limit - 1:
            break
        out.append(p)
        used += len(p)
    return "".join(out) + _ELLIPSIS


def field(text: object, limit: int = 120) -> str:
    """A value for a ``key=value`` log field: :func:`shown`, quoted when it has whitespace,
    so that a user name like ``x ip=1.2.3.4`` cannot pass for another field."""
    s = shown(text, limit)
    return repr(s) if not s or any(c.isspace() for c in s) else s


_JSON_SUSPECT = re.compile(r"[^\n -~]")     # all but ASCII text and indent newlines: look closer


def _json_escape(m: re.Match) -> str:
    c = m.group()
    if not hidden(c):
        return c
    n = ord(c)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000                           # JSON writes an astral character as a surrogate pair
    return f"\\u{0xd800 + (n >> 10):04x}\\u{0xdc00 + (n & 0x3ff):04x}"


def json_text(doc, **kw) -> str:
    """``json.dumps`` that keeps readable text readable and writes every hidden character as a
    ``\\u`` escape: the decoded value is the server's exact string, yet no control character,
    bidi override or lone surrogate is in the bytes that reach a terminal or a browser."""
    # ensure_ascii=False leaves C1 controls, DEL, bidi overrides and lone surrogates raw;
    # outside strings JSON has only ASCII, so every hidden character found is inside a string.
    return _JSON_SUSPECT.sub(_json_escape, json.dumps(doc, ensure_ascii=False, **kw))


def server_words(raw: bytes) -> str:
    """A server's response text as characters: UTF-8, else GB18030 (a superset of GBK, in which
    Tencent's servers were seen refusing logins: github.com/pandolia/qqbot/issues/221).  Still
    hostile: show it with :func:`shown`."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("gb18030", "replace")
