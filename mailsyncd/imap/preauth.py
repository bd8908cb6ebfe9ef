"""The front door's pre-auth command parser: bytes in, commands out, no sockets.

Pull-based on purpose: the protocol takes one event at a time, so it can switch
the parser to a SASL response line after ``AUTHENTICATE``, stop at ``LOGIN``
and hand whatever the client pipelined behind it to the target untouched, or
drop everything buffered at ``STARTTLS`` (so plaintext injected before the
handshake is never executed).

Limits: a line (without its literals) is at most ``max_line`` bytes; a literal
is at most ``max_literal`` bytes, and a non-synchronising ``{n+}`` at most 4096
(LITERAL-, RFC 7888).  Only what pre-auth commands need is parsed: atoms,
quoted strings with ``\\"`` and ``\\\\``, literals, NIL and parenthesised lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 8192
MAX_LITERAL = 8192
MAX_NONSYNC_LITERAL = 4096

# RFC 3501 atom-char: any CHAR except atom-specials; a tag also excludes "+".
_ATOM = re.compile(rb'[^\x00-\x20\x7f(){%*"\\\]]+')
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
_LITERAL_END = re.compile(rb"~?\{(\d{1,20})(\+?)\}\Z")


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    name: str                 # upper-cased
    args: tuple               # str (atom/quoted), bytes (literal), None (NIL), tuple (list)


@dataclass(frozen=True, slots=True)
class Continue:
    """A synchronising literal was announced: send ``+`` before the client sends it."""


@dataclass(frozen=True, slots=True)
class Bad:
    tag: str | None           # None when the line had no usable tag: answer with "* BAD"
    text: str


@dataclass(frozen=True, slots=True)
class Fatal:
    """The stream cannot be resynchronised: answer BYE and close."""
    text: str


@dataclass(frozen=True, slots=True)
class SaslLine:
    data: bytes               # one client response line of AUTHENTICATE, without CRLF


Event = Command | Continue | Bad | Fatal | SaslLine


class ParseError(Exception):
    pass


class PreauthParser:
    def __init__(self, *, max_line: int = MAX_LINE, max_literal: int = MAX_LITERAL):
        self.max_line = max_line
        self.max_literal = max_literal
        self._buf = bytearray()
        self._dead = False
        self.sasl = False          # set by the protocol while AUTHENTICATE waits for a response
        self._reset_command()

    def _reset_command(self) -> None:
        self._tag: str | None = None
        self._name: str | None = None
        self._stack: list[list] = [[]]
        self._literal_left: int | None = None   # bytes of an announced literal still to read
        self._line_bytes = 0

    # -- feeding -------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if not self._dead:
            self._buf += data

    def discard(self) -> None:
        """Forget buffered input and any half-read command (at STARTTLS)."""
        self._buf.clear()
        self._reset_command()

    def take_buffer(self) -> bytes:
        """Everything received but not yet parsed, for the target after login."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    # -- events ----------------------------------------------------------------
    def next_event(self) -> Event | None:
        """The next complete event, or None when more input is needed."""
        if self._dead:
            return None
        if self.sasl:
            return self._sasl_line()
        while True:
            if self._literal_left is not None:
                if len(self._buf) < self._literal_left:
                    return None
                n = self._literal_left
                self._stack[-1].append(bytes(self._buf[:n]))
                del self._buf[:n]
                self._literal_left = None
            end = self._buf.find(b"\r\n")
            if end < 0:
                if self._line_bytes + _unterminated(self._buf) > self.max_line:
                    return self._fatal("line too long")
                return None
            line = bytes(self._buf[:end])
            del self._buf[:end + 2]
            self._line_bytes += len(line)
            if self._line_bytes > self.max_line:
                return self._fatal("line too long")
            ev = self._line(line)
            if ev is not None:
                return ev

    def _fatal(self, text: str) -> Fatal:
        self._dead = True
        self._buf.clear()
        return Fatal(text)

    def _sasl_line(self) -> Event | None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if _unterminated(self._buf) > self.max_line:
                return self._fatal("line too long")
            return None
        if end > self.max_line:
            return self._fatal("line too long")
        data = bytes(self._buf[:end])
        del self._buf[:end + 2]
        self.sasl = False
        return SaslLine(data)

    def _line(self, line: bytes) -> Event | None:
        """Parse one CRLF-terminated fragment; a command may span several (literals)."""
        pos = 0
        try:
            if self._tag is None:
                m = _TAG.match(line)
                if not m or line[m.end():m.end() + 1] != b" ":
                    raise ParseError("missing tag" if not m else "missing command")
                self._tag = m.group().decode("ascii", "replace")
                pos = m.end() + 1
                m = _ATOM.match(line, pos)
                if not m:
                    raise ParseError("missing command")
                self._name = m.group().decode("ascii", "replace").upper()
                pos = m.end()
            lit = _LITERAL_END.search(line, pos)
            body_end = lit.start() if lit else len(line)
            self._tokens(line, pos, body_end)
            if lit:
                return self._announce(int(lit.group(1)), bool(lit.group(2)))
            if len(self._stack) != 1:
                raise ParseError("unbalanced parentheses")
            cmd = Command(self._tag, self._name, tuple(self._stack[0]))
            self._reset_command()
            return cmd
        except ParseError as e:
            tag = self._tag
            self._reset_command()
            return Bad(tag, str(e))

    def _announce(self, n: int, nonsync: bool) -> Event | None:
        if nonsync and n > min(MAX_NONSYNC_LITERAL, self.max_literal):
            # The client sends the bytes without waiting: there is no way to skip them safely.
            return self._fatal(f"non-synchronising literal over {min(MAX_NONSYNC_LITERAL, self.max_literal)} bytes")
        if n > self.max_literal:
            tag = self._tag
            self._reset_command()
            return Bad(tag, f"literal too large ({n} bytes; at most {self.max_literal} before login)")
        self._literal_left = n
        return None if nonsync else Continue()

    def _tokens(self, line: bytes, pos: int, end: int) -> None:
        out = self._stack
        while pos < end:
            c = line[pos]
            if c == 0x20:
                pos += 1
            elif c == 0x28:  # (
                new: list = []
                out[-1].append(new)
                out.append(new)
                pos += 1
            elif c == 0x29:  # )
                if len(out) == 1:
                    raise ParseError("unbalanced parentheses")
                done = out.pop()
                out[-1][-1] = tuple(done)
                pos += 1
            elif c == 0x22:  # "
                pos = self._quoted(line, pos + 1, end)
            else:
                m = _ATOM.match(line, pos, end)
                if not m:
                    raise ParseError(f"unexpected character {chr(c)!r}" if 0x20 < c < 0x7f
                                     else f"unexpected byte 0x{c:02x}")
                word = m.group()
                out[-1].append(None if word.upper() == b"NIL" else word.decode("utf-8", "replace"))
                pos = m.end()
        # a literal that follows sits at this nesting level; lists closed around it become tuples later

    def _quoted(self, line: bytes, pos: int, end: int) -> int:
        chars = bytearray()
        while pos < end:
            c = line[pos]
            if c == 0x22:
                try:
                    self._stack[-1].append(chars.decode("utf-8"))
                except UnicodeDecodeError:
                    raise ParseError("quoted string is not valid UTF-8") from None
                return pos + 1
            if c == 0x5c:  # backslash: only \" and \\ are defined
                if pos + 1 >= end or line[pos + 1] not in (0x22, 0x5c):
                    raise ParseError("bad escape in quoted string")
                chars.append(line[pos + 1])
                pos += 2
                continue
            chars.append(c)
            pos += 1
        raise ParseError("unterminated quoted string")


def _unterminated(buf: bytearray) -> int:
    """Length of a line still waiting for its CRLF; a trailing CR may be the start of it."""
    return len(buf) - (1 if buf.endswith(b"\r") else 0)


def quote(s: str) -> bytes:
    """An IMAP string for ``s``: quoted when safe, else a synchronising-free literal is the caller's job."""
    return b'"' + s.encode("utf-8").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def needs_literal(s: str) -> bool:
    return any(ch in s for ch in "\r\n\0") or not s.isascii()
