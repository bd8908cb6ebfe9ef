"""The relay's view of the IMAP streams after login: just enough to see a client open a mailbox.

Pure and passive: both classes are fed the bytes the relay forwards, say where things are, and never
alter or buffer the stream.  Each keeps at most a bounded piece of one line.

* ``ClientCommands`` finds ``tag SELECT mailbox`` / ``tag EXAMINE mailbox`` (atom, quoted or literal
  mailbox, modified UTF-7 or UTF-8, with or without parameters such as ``(CONDSTORE)``) and says at
  which byte the command ends, so the relay can hold the rest.  Literals (``{n}``, ``{n+}``,
  ``~{n}``) are passed over by count, so an APPEND's message never looks like a command.  After
  ``COMPRESS`` or ``STARTTLS`` the stream is no longer readable: it stops for good.  A command it
  does not understand (or one longer than ``MAX_KEPT``) is simply not reported.
* ``ResponseBoundaries`` follows the server's responses (lines and literals alike) to say where one
  complete response ends: the only places where the relay may add a line of its own.

Known blind spot, harmless: a synchronising literal the server refuses (the client then never sends
it) makes the tracker take the next bytes as that literal; it may miss a SELECT, never alter one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imapclient import imap_utf7

MAX_KEPT = 1024         # bytes of one command kept: "tag EXAMINE <mailbox> (params)", mailbox names included
_TAIL = 32              # bytes of a line's end kept to see a literal's announcement past MAX_KEPT
_LITERAL = re.compile(rb"~?\{(\d{1,19})\+?\}\r?\n\Z")
_TAG = re.compile(rb"[!#$&'*,./0-9:;<=>?@A-Z\[\]^_`a-z|}~-]+")
_ATOM = re.compile(rb"[!#$&'+,./0-9:;<=>?@A-Z\[\]^_`a-z|}~-]+")   # ASTRING-CHAR, no "%", "*", "{"
OPEN_VERBS = ("SELECT", "EXAMINE")
_STOP_VERBS = (b"COMPRESS", b"STARTTLS")


@dataclass(frozen=True, slots=True)
class Opened:
    tag: str
    verb: str           # SELECT or EXAMINE
    mailbox: str        # decoded: what a LIST shows


class ClientCommands:
    def __init__(self) -> None:
        self.stopped = False
        self._literal = 0               # bytes of a literal still to pass over
        self._parts: list[bytes] = []   # the command so far: text, literal, text, ... (bounded)
        self._kept = 0
        self._overflow = False
        self._line_tail = b""           # the current line's end, for a literal's announcement

    def feed(self, data: bytes) -> tuple[Opened | None, int]:
        """Read ``data`` up to the end of the first mailbox-opening command in it.

        Returns (the command, the bytes of ``data`` read: the command's last byte, its LF, is
        data[n - 1]), or (None, len(data)).  Feed the rest again to go on."""
        i, n = 0, len(data)
        while i < n and not self.stopped:
            if self._literal:
                take = min(self._literal, n - i)
                self._keep(data[i:i + take])
                self._literal -= take
                i += take
                if not self._literal:
                    self._parts.append(b"")        # the text after the literal
                continue
            j = data.find(b"\n", i)
            end = n if j < 0 else j + 1
            self._keep(data[i:end])
            self._line_tail = (self._line_tail + data[max(i, end - _TAIL):end])[-_TAIL:]
            i = end
            if j >= 0:
                opened = self._line_end()
                if opened is not None:
                    return opened, i
        return None, n

    def _keep(self, chunk: bytes) -> None:
        if self._overflow:
            return
        self._kept += len(chunk)
        if self._kept > MAX_KEPT:
            self._overflow = True
            self._parts = []
            return
        if not self._parts:
            self._parts.append(b"")
        self._parts[-1] += chunk

    def _line_end(self) -> Opened | None:
        tail, self._line_tail = self._line_tail, b""
        m = _LITERAL.search(tail)
        if m is not None:
            self._literal = int(m.group(1))
            if not self._overflow:
                # the literal's own part follows the text (odd indexes are literals)
                self._parts[-1] = self._parts[-1][:len(self._parts[-1]) - len(m.group(0))]
                self._parts.append(b"")
            if self._literal:
                return None
            self._parts.append(b"")
            return None
        parts, overflow = self._parts, self._overflow
        self._parts, self._kept, self._overflow = [], 0, False
        if overflow or not parts:
            return None
        return self._command(parts)

    def _command(self, parts: list[bytes]) -> Opened | None:
        first = parts[0]
        m = _TAG.match(first)
        if m is None or first[m.end():m.end() + 1] != b" ":
            return None
        tag = m.group(0)
        rest = first[m.end() + 1:]
        verb, _, rest = rest.partition(b" ")
        verb = verb.rstrip(b"\r\n").upper()
        if verb in _STOP_VERBS:
            self.stopped = True        # what follows may be compressed or encrypted
            return None
        if verb.decode("ascii", "replace") not in OPEN_VERBS:
            return None
        if len(parts) > 1:
            # tag SELECT {n}\r\n<mailbox> [params]\r\n: nothing between the verb and the literal
            if rest or len(parts) != 3 or not _params_ok(parts[2]):
                return None
            raw = parts[1]
        else:
            raw, after = _astring(rest)
            if raw is None or not _params_ok(after):
                return None
        name = _decode(raw)
        if name is None:
            return None
        return Opened(tag.decode("ascii"), verb.decode("ascii"), name)


def _astring(b: bytes) -> tuple[bytes | None, bytes]:
    """(the mailbox, what follows it) from an atom or quoted string at the start of ``b``."""
    if b.startswith(b'"'):
        out = bytearray()
        i = 1
        while i < len(b):
            c = b[i]
            if c == 0x5C:              # backslash: only \\ and \" are legal
                if i + 1 >= len(b) or b[i + 1] not in b'\\"':
                    return None, b""
                out.append(b[i + 1])
                i += 2
            elif c == 0x22:
                return bytes(out), b[i + 1:]
            elif c in b"\r\n\0":
                return None, b""
            else:
                out.append(c)
                i += 1
        return None, b""
    m = _ATOM.match(b)
    if m is None:
        return None, b""
    return m.group(0), b[m.end():]


def _params_ok(after: bytes) -> bool:
    """After the mailbox: the line's end, or a space and a parenthesised list (CONDSTORE, QRESYNC ...)."""
    after = after.rstrip(b"\r\n")
    return after == b"" or (after.startswith(b" (") and after.endswith(b")"))


def _decode(raw: bytes) -> str | None:
    if not raw or b"\0" in raw or b"\r" in raw or b"\n" in raw:
        return None
    try:
        if raw.isascii():
            name = imap_utf7.decode(raw)
            # imapclient's decoder forgives: a name that is not its own canonical form is not understood
            return name if imap_utf7.encode(name) == raw else None
        return raw.decode("utf-8")     # UTF8=ACCEPT (RFC 6855) clients send UTF-8 as it is
    except (UnicodeError, ValueError):
        return None


class ResponseBoundaries:
    """Where the server's stream is between two complete responses (lines, literals passed over)."""

    def __init__(self) -> None:
        self.at_boundary = True
        self._literal = 0
        self._line_tail = b""

    def feed(self, data: bytes) -> int | None:
        """Read ``data``; returns the first offset k > 0 such that data[:k] ends a complete response
        (None if none does).  ``at_boundary`` then says where the stream stands after all of it."""
        first = None
        i, n = 0, len(data)
        while i < n:
            if self._literal:
                take = min(self._literal, n - i)
                self._literal -= take
                i += take
                self.at_boundary = False
                continue
            j = data.find(b"\n", i)
            end = n if j < 0 else j + 1
            self._line_tail = (self._line_tail + data[max(i, end - _TAIL):end])[-_TAIL:]
            i = end
            if j < 0:
                self.at_boundary = False
                break
            m = _LITERAL.search(self._line_tail)
            self._line_tail = b""
            if m is not None:
                self._literal = int(m.group(1))
                self.at_boundary = False
                continue
            self.at_boundary = True
            if first is None:
                first = i
        return first
