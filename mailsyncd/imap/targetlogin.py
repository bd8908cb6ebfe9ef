"""Logging in to the target on a user's behalf: a pure state machine, no sockets.

The proxy feeds it the target's bytes and performs the actions it returns.  It
reads the greeting, optionally STARTTLS, sends ID with the client's address
(Dovecot honours ``x-originating-ip`` from ``login_trusted_networks``), then
logs in and collects the post-login capabilities for the client's tagged OK.

Outcomes are coarse on purpose: the client must not learn from the target's
words which users exist, so a refusal is ``auth`` and anything that looks like
the target being unwell is ``unavailable``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from ..errors import UnsafeCommand, not_now
from .cmdguard import check_line
from .preauth import needs_literal, quote

MAX_RESPONSE = 65536          # a hostile or broken target must not make us buffer without bound
_LITERAL_END = re.compile(rb"\{(\d{1,9})\}$")
_CAPS_CODE = re.compile(rb"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


def _line(command: bytes) -> Send:
    """A command line for the target, through the one check every outgoing command passes."""
    check_line(command)
    return Send(command + b"\r\n")


@dataclass(frozen=True, slots=True)
class StartTLS:
    pass


@dataclass(frozen=True, slots=True)
class Done:
    capabilities: str         # as the target announced them after login
    leftover: bytes           # anything the target sent after the tagged OK


@dataclass(frozen=True, slots=True)
class Failed:
    kind: str                 # "auth" | "unavailable" | "protocol"
    detail: str               # for our log; never contains a secret

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


Action = Send | StartTLS | Done | Failed


class ResponseReader:
    """Splits a server's byte stream into whole responses (a line plus any literals it announces)."""

    def __init__(self, limit: int = MAX_RESPONSE):
        self.limit = limit
        self.buf = bytearray()
        self._parts: list[bytes] = []
        self._need: int | None = None

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next(self) -> bytes | None:
        while True:
            if self._need is not None:
                if len(self.buf) < self._need:
                    return self._check()
                self._parts.append(bytes(self.buf[:self._need]))
                del self.buf[:self._need]
                self._need = None
            end = self.buf.find(b"\r\n")
            if end < 0:
                return self._check()
            line = bytes(self.buf[:end])
            del self.buf[:end + 2]
            m = _LITERAL_END.search(line)
            if m:
                self._parts.append(line + b"\r\n")
                self._need = int(m.group(1))
                if self._need > self.limit:
                    raise ValueError("response literal too large")
                continue
            self._parts.append(line)
            whole, self._parts = b"".join(self._parts), []
            return whole

    def _check(self) -> None:
        if len(self.buf) + sum(map(len, self._parts)) > self.limit:
            raise ValueError("response too long")


def _status(line: bytes, tag: bytes) -> tuple[str, bytes] | None:
    """('OK'|'NO'|'BAD', rest) for the tagged response to ``tag``."""
    if not line.startswith(tag + b" "):
        return None
    word, _, rest = line[len(tag) + 1:].partition(b" ")
    return word.upper().decode("ascii", "replace"), rest


def _caps_in(text: bytes) -> str | None:
    m = _CAPS_CODE.search(text)
    return m.group(1).decode("ascii", "replace").strip() if m else None


class TargetLogin:
    """Drives one login.  ``mode`` is the domain's ``target.auth``: master | master_separator | same."""

    def __init__(self, *, mode: str, user: str, secret: str, master_user: str | None = None,
                 separator: str = "*", starttls: bool = False, id_fields: dict[str, str] | None = None):
        self.mode = mode
        self.user = user
        self._secret = secret
        self.master_user = master_user
        self.separator = separator
        self.starttls = starttls
        self.id_fields = id_fields or {}
        self.reader = ResponseReader()
        self.caps: set[str] = set()
        self._state = "greeting"
        self._n = 0
        self._tag = b""
        self._id_tag: bytes | None = None
        self._sasl_pending: bytes | None = None
        self.finished = False

    def __repr__(self) -> str:
        return f"<TargetLogin user={self.user!r} mode={self.mode} state={self._state}>"

    def _next_tag(self) -> bytes:
        self._n += 1
        self._tag = b"P%d" % self._n
        return self._tag

    # -- driving -----------------------------------------------------------
    def receive(self, data: bytes) -> list[Action]:
        if self.finished:
            return []
        self.reader.feed(data)
        out: list[Action] = []
        try:
            while not self.finished:
                resp = self.reader.next()
                if resp is None:
                    break
                out += self._handle(resp)
        except ValueError as e:
            out.append(self._fail("protocol", str(e)))
        return out

    def _fail(self, kind: str, detail: str) -> Failed:
        self.finished = True
        return Failed(kind, detail)

    def _handle(self, resp: bytes) -> list[Action]:
        if resp.startswith(b"* "):
            return self._untagged(resp[2:])
        if resp.startswith(b"+"):
            if self._state == "auth" and self._sasl_pending is not None:
                data, self._sasl_pending = self._sasl_pending, None
                return [_line(data)]
            return [self._fail("protocol", "unexpected continuation request")]
        if self._id_tag and _status(resp, self._id_tag):
            # A target without ID answers BAD; that is no reason to refuse the user.
            self._id_tag = None
            return []
        st = _status(resp, self._tag)
        if st is None:
            return [self._fail("protocol", f"unexpected response {resp[:80]!r}")]
        word, rest = st
        return self._tagged(word, rest)

    def _untagged(self, body: bytes) -> list[Action]:
        word = body.split(b" ", 1)[0].upper()
        if word == b"BYE":
            return [self._fail("unavailable", "target said BYE: " + body[4:200].decode("utf-8", "replace"))]
        if word == b"CAPABILITY":
            self.caps = set(body.decode("ascii", "replace").split()[1:])
            return []
        if self._state == "greeting":
            if word == b"PREAUTH":
                return [self._fail("protocol", "target greeted with PREAUTH")]
            if word != b"OK":
                return [self._fail("protocol", f"unexpected greeting {body[:80]!r}")]
            caps = _caps_in(body)
            if caps is not None:
                self.caps = set(caps.split())
            if self.starttls:
                self._state = "starttls"
                return [_line(self._next_tag() + b" STARTTLS")]
            return self._login()
        return []

    def _tagged(self, word: str, rest: bytes) -> list[Action]:
        text = rest[:200].decode("utf-8", "replace")
        if self._state == "starttls":
            if word != "OK":
                return [self._fail("unavailable", f"target refused STARTTLS: {text}")]
            self.caps = set()   # capabilities before TLS do not count after it
            self.reader.buf.clear()
            return [StartTLS(), *self._login()]
        if self._state == "auth":
            if word == "OK":
                caps = _caps_in(rest)
                if caps is not None:
                    return self._done(caps)
                self._state = "caps"
                return [_line(self._next_tag() + b" CAPABILITY")]
            kind = "unavailable" if not_now(rest) else "auth"
            return [self._fail(kind, f"target answered {word}: {text}")]
        if self._state == "caps":
            if word != "OK":
                return [self._fail("protocol", f"CAPABILITY failed: {text}")]
            return self._done(" ".join(sorted(self.caps)))
        return [self._fail("protocol", f"unexpected tagged {word} in state {self._state}")]

    def _done(self, caps: str) -> list[Action]:
        self.finished = True
        leftover = bytes(self.reader.buf)
        self.reader.buf.clear()
        return [Done(caps, leftover)]

    # -- the login itself ----------------------------------------------------------
    def _login(self) -> list[Action]:
        try:
            return self._login_lines()
        except UnsafeCommand as e:
            return [self._fail("protocol", str(e))]

    def _login_lines(self) -> list[Action]:
        out: list[Action] = []
        self._state = "auth"
        if self.id_fields:
            fields = b" ".join(quote(k) + b" " + quote(v) for k, v in self.id_fields.items())
            self._id_tag = self._next_tag()
            out.append(_line(self._id_tag + b" ID (" + fields + b")"))
        if self.mode == "master":
            cmd = self._plain(self.user, self.master_user or "", self._secret)
        else:
            who = self.user if self.mode == "same" else f"{self.user}{self.separator}{self.master_user}"
            if needs_literal(who) or needs_literal(self._secret):
                cmd = self._plain("", who, self._secret)   # PLAIN carries any UTF-8; LOGIN would need literals
            else:
                cmd = b"LOGIN " + quote(who) + b" " + quote(self._secret)
        tag = self._next_tag()
        out.append(_line(tag + b" " + cmd))
        return out

    def _plain(self, authzid: str, authcid: str, secret: str) -> bytes:
        blob = base64.b64encode(b"\0".join(s.encode("utf-8") for s in (authzid, authcid, secret)))
        if "SASL-IR" in self.caps:
            return b"AUTHENTICATE PLAIN " + blob
        self._sasl_pending = blob
        return b"AUTHENTICATE PLAIN"
