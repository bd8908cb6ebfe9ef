"""The POP3 client: a logged-in session that can only read (no DELE), behind the command guard.

Messages are read with "TOP n <all lines>", which unlike RETR does not mark them
\\Seen (Dovecot stores RETR's \\Seen on QUIT and also when the connection merely
drops, so a crash mid-pass would change the source); RETR is used only where TOP is
refused or truncates, and the session always ends with RSET before QUIT, which
undoes RETR's \\Seen.  Every byte the server sends is bounded: lines by _CHUNK,
a message by the size cap.
"""

from __future__ import annotations

import logging
import poplib
import socket
import ssl
from base64 import b64encode
from collections import deque

from ..errors import AuthFailed, ConnectionLost, MailsyncError, ProtocolError, TLSFailure, Unreachable, not_now
from . import imap, popguard

logger = logging.getLogger(__name__)

FALLBACK_KEY = "pop3_no_uidl"  # source.<this>: fingerprint  (to be added to config.Endpoint)
FALLBACK_VALUE = "fingerprint"

_PIPELINE = 32                  # TOP/RETR commands in flight when the server offers PIPELINING
_ALL_LINES = 999_999_999        # "TOP n _ALL_LINES": the whole message, without RETR's \\Seen
_CHUNK = 1 << 20                # readline() bound: long lines are read in pieces


def _text(e: BaseException) -> str:
    arg = e.args[0] if e.args else b""
    return (arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)).strip()


def _words(e: BaseException) -> str:
    """The server's words without the -ERR."""
    t = _text(e)
    return t[4:].strip() if t.upper().startswith("-ERR") else t


def _is_eof(e: poplib.error_proto) -> bool:
    return _text(e) in ("-ERR EOF", "line too long")  # poplib's words for a broken stream


class Pop3Source:
    """A logged-in POP3 session, read-only by construction: this class has no DELE."""

    def __init__(self, endpoint, address: str, password: str, cap: int = 64 * 1024**2):
        self.endpoint = endpoint
        self.cap = cap                 # sync.max_message_size: never read a larger message
        self.where = f"source {endpoint.host}:{endpoint.port}"
        self.user = endpoint.login_name(address)
        self.use_top = True            # until the server refuses TOP or its TOP truncates
        self._p = self._connect()
        try:
            self.caps = self._capa()
            self._login(password)
            self.caps = self._capa()  # some servers say more once logged in
        except BaseException:
            self._drop()
            raise

    # -- opening -----------------------------------------------------------
    def _connect(self) -> poplib.POP3:
        ep, where = self.endpoint, self.where
        p = None
        try:
            if ep.security == "tls":
                p = popguard.POP3_SSL(ep.host, ep.port, timeout=ep.timeout, context=imap.tls_context(ep))
            else:
                p = popguard.POP3(ep.host, ep.port, timeout=ep.timeout)
                if ep.security == "starttls":
                    self._p = p
                    if "STLS" not in self._capa():
                        raise TLSFailure(f"{where}: server does not offer STLS (security: starttls)")
                    try:
                        p.stls(imap.tls_context(ep))
                    except poplib.error_proto as e:
                        if _is_eof(e):
                            raise
                        raise TLSFailure(f"{where}: server refused STLS: {_words(e)}") from None
            return p
        except MailsyncError:
            _close_quietly(p)
            raise
        except ssl.SSLCertVerificationError as e:
            _close_quietly(p)
            raise TLSFailure(f"{where}: TLS certificate not trusted: {e.verify_message}") from None
        except ssl.SSLError as e:
            _close_quietly(p)
            raise TLSFailure(f"{where}: TLS handshake failed: {e.reason or e}") from None
        except socket.gaierror as e:
            raise Unreachable(f"{where}: host name does not resolve ({e.strerror})") from None
        except (socket.timeout, TimeoutError):
            _close_quietly(p)
            raise Unreachable(f"{where}: connection timed out after {ep.timeout:g}s") from None
        except ConnectionRefusedError:
            raise Unreachable(f"{where}: connection refused") from None
        except OSError as e:
            _close_quietly(p)
            raise Unreachable(f"{where}: {e.strerror or e}") from None
        except poplib.error_proto as e:
            _close_quietly(p)
            if _is_eof(e):
                raise Unreachable(f"{where}: the server closed the connection") from None
            raise Unreachable(f"{where}: server refused the session: {_words(e)}") from None

    def _capa(self) -> dict[str, list[str]]:
        try:
            return self._p.capa()
        except poplib.error_proto as e:
            if _is_eof(e):
                raise ConnectionLost(f"{self.where}: connection lost: {_text(e)}") from None
            return {}  # CAPA is optional (RFC 2449)
        except OSError as e:
            raise ConnectionLost(f"{self.where}: connection lost: {e}") from None

    def _login(self, password: str) -> None:
        where, user = self.where, self.user
        for s in (user, password):
            if any(c in s for c in "\r\n\0"):
                raise AuthFailed(f"{where}: the user name or password holds a line break or NUL, "
                                 "which POP3 cannot send")
        try:
            sasl = [m.upper() for m in self.caps.get("SASL", [])]
            if "USER" not in self.caps and "PLAIN" in sasl:
                token = b64encode(f"\0{user}\0{password}".encode()).decode()
                self._p._shortcmd(f"AUTH PLAIN {token}")
            else:
                self._p.user(user)
                self._p.pass_(password)
        except poplib.error_proto as e:
            if _is_eof(e):
                raise ConnectionLost(f"{where}: connection lost during login") from None
            text = _words(e)
            if not_now(text):
                raise ConnectionLost(f"{where}: login refused for now for {user}: {text}") from None
            raise AuthFailed(f"{where}: login refused for {user}: {text}") from None
        except OSError as e:
            raise ConnectionLost(f"{where}: connection lost during login: {e}") from None

    # -- reading -------------------------------------------------------------
    def _lost(self, e: BaseException) -> ConnectionLost:
        return ConnectionLost(f"{self.where}: connection lost: {_text(e) or type(e).__name__}")

    def uidl(self) -> dict[int, str] | None:
        """{message number: UIDL}, or None when the server refuses UIDL."""
        try:
            _, lines, _ = self._p.uidl()
        except poplib.error_proto as e:
            if _is_eof(e):
                raise self._lost(e) from None
            logger.info("event=pop3_uidl_refused %s reason=%r", self.where, _words(e))
            return None
        except OSError as e:
            raise self._lost(e) from None
        out: dict[int, str] = {}
        for line in lines:
            parts = line.split(None, 1)
            try:
                out[int(parts[0])] = parts[1].strip().decode("ascii", "replace")
            except (IndexError, ValueError):
                raise ProtocolError(f"{self.where}: malformed UIDL line {line[:80]!r}") from None
        if len(set(out.values())) != len(out):
            raise ProtocolError(f"{self.where}: the server gives the same UIDL to different messages, so "
                                f"UIDLs cannot tell them apart; set source.{FALLBACK_KEY}: {FALLBACK_VALUE} "
                                "to match by content instead")
        return out

    def list(self) -> dict[int, int]:
        """{message number: size}."""
        try:
            _, lines, _ = self._p.list()
        except poplib.error_proto as e:
            if _is_eof(e):
                raise self._lost(e) from None
            raise ProtocolError(f"{self.where}: LIST refused: {_words(e)}") from None
        except OSError as e:
            raise self._lost(e) from None
        out: dict[int, int] = {}
        for line in lines:
            try:
                n, size = line.split()[:2]
                out[int(n)] = int(size)
            except ValueError:
                raise ProtocolError(f"{self.where}: malformed LIST line {line[:80]!r}") from None
        return out

    def fetch_many(self, wanted: list[tuple[int, int]]) -> list[tuple[int, bytes | str]]:
        """Download each (number, announced size): [(number, raw message | the server's refusal)], in order.

        With "TOP n <all lines>" rather than RETR where the server allows: RETR marks a
        message \\Seen (Dovecot applies that even when the connection just drops, so a
        crash or kill mid-pass would change the source; only RSET before QUIT undoes it),
        TOP does not.  A TOP reply shorter than LIST said is checked against RETR;
        if they differ the server's TOP truncates, and RETR is used from then on.  A
        server refusing TOP gets RETR.

        Pipelined (a bounded window, so neither side can block the other) when the
        server offers PIPELINING.  Replies are read line by line with no line-length
        limit and de-dot-stuffed, keeping the line ends as sent.
        """
        window = _PIPELINE if "PIPELINING" in self.caps else 1
        got: dict[int, bytes | str] = {num: f"too large: LIST says {size} bytes, the limit is {self.cap}"
                                       for num, size in wanted if size > self.cap}
        order = wanted
        wanted = [(num, size) for num, size in wanted if num not in got]
        redo: list[tuple[int, int, bytes | None]] = []   # TOP refused (None) or of a surprising size
        sent: deque[tuple[int, int, bool]] = deque()
        i = 0
        try:
            while i < len(wanted) or sent:
                while i < len(wanted) and len(sent) < window:
                    num, size = wanted[i]
                    i += 1
                    self._p._putcmd(f"TOP {num} {_ALL_LINES}" if self.use_top else f"RETR {num}")
                    sent.append((num, size, self.use_top))
                num, size, top = sent.popleft()
                try:
                    self._p._getresp()
                except poplib.error_proto as e:
                    if _is_eof(e):
                        raise
                    if top:
                        if self.use_top:
                            logger.info("event=pop3_top_refused %s reason=%r: using RETR (then RSET)",
                                        self.where, _words(e))
                            self.use_top = False
                        redo.append((num, size, None))
                    else:
                        got[num] = _words(e) or "refused"
                    continue
                raw = self._read_body(size)
                if top and len(raw) < size:   # shorter than LIST said: maybe TOP truncated
                    redo.append((num, size, raw))
                else:
                    got[num] = raw
            for num, size, top_raw in redo:
                raw = self._retr(num, size)
                if top_raw is not None and isinstance(raw, bytes) and raw != top_raw and self.use_top:
                    logger.warning("event=pop3_top_truncates %s message=%d: using RETR (then RSET)",
                                   self.where, num)
                    self.use_top = False
                got[num] = raw
        except poplib.error_proto as e:
            raise self._lost(e) from None
        except OSError as e:
            raise self._lost(e) from None
        return [(num, got[num]) for num, _ in order]

    def headers(self, num: int, size: int) -> bytes | None:
        """The header section ("TOP n 0"), read within the cap; None where the server refuses TOP."""
        try:
            self._p._putcmd(f"TOP {num} 0")
            try:
                self._p._getresp()
            except poplib.error_proto as e:
                if _is_eof(e):
                    raise
                return None
            return self._read_body(size)
        except poplib.error_proto as e:
            raise self._lost(e) from None
        except OSError as e:
            raise self._lost(e) from None

    def _retr(self, num: int, size: int) -> bytes | str:
        self._p._putcmd(f"RETR {num}")
        try:
            self._p._getresp()
        except poplib.error_proto as e:
            if _is_eof(e):
                raise
            return _words(e) or "refused"
        return self._read_body(size)

    def _read_body(self, announced: int) -> bytes:
        f = self._p.file
        # a server sending far more than LIST said is broken (or hostile): never more than the cap
        limit = min(self.cap, 4 * announced + _CHUNK)
        parts: list[bytes] = []
        total = 0
        at_start = True
        while True:
            line = f.readline(_CHUNK)
            if not line:
                raise poplib.error_proto("-ERR EOF")
            if at_start:
                if line in (b".\r\n", b".\n"):
                    return b"".join(parts)
                if line[:1] == b".":
                    line = line[1:]
            parts.append(line)
            total += len(line)
            if total > limit:
                self._drop()   # do not read the rest
                raise ProtocolError(f"{self.where}: RETR sent more than {limit} bytes for a message "
                                    f"LIST said has {announced}")
            at_start = line.endswith(b"\n")

    # -- closing ---------------------------------------------------------------
    def close(self) -> None:
        """RSET (undo the \\Seen that Dovecot and others would store on QUIT), then QUIT."""
        try:
            self._p._shortcmd("RSET")
            self._p.quit()
        except Exception:  # noqa: BLE001 - closing must not mask the outcome
            pass
        self._drop()

    def _drop(self) -> None:
        _close_quietly(self._p)


def _close_quietly(p) -> None:
    if p is None:
        return
    try:
        p.close()
    except Exception:  # noqa: BLE001
        pass


__all__ = ["FALLBACK_KEY", "FALLBACK_VALUE", "Pop3Source"]
