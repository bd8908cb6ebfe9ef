"""The probe step's live check: an IMAP greeting and CAPABILITY over implicit TLS or STARTTLS.

Certificates are verified; nothing is ever sent but CAPABILITY, STARTTLS and LOGOUT -- never
credentials.  Every byte read is capped: the host answering may be anyone's.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Callable

import dns.resolver

from .dnsquery import _query
from .presets import SECURITIES

DEFAULT_PROBE_PORTS: tuple[tuple[int, str], ...] = ((993, "tls"), (143, "starttls"))
PROBE_PREFIXES: tuple[str, ...] = ("imap", "mail")

ProbeFunc = Callable[[str, int, str, float], "str | None"]


class ProbeError(Exception):
    """Why a probe found no usable IMAP server.  ``no_host``: the name does not resolve, so the
    other ports of that host need not be tried."""

    def __init__(self, message: str, *, no_host: bool = False) -> None:
        super().__init__(message)
        self.no_host = no_host


def _addresses(host: str, port: int, resolver: dns.resolver.Resolver | None, timeout: float) -> list[str]:
    if resolver is None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise ProbeError(f"cannot resolve: {e.strerror}", no_host=True) from None
        return list(dict.fromkeys(info[4][0] for info in infos))
    addrs: list[str] = []
    nx = False
    problems = []
    for rdtype in ("A", "AAAA"):
        res = _query(resolver, host, rdtype, timeout)
        nx = nx or res.nxdomain
        if res.error and not res.nxdomain:
            problems.append(f"{rdtype}: {res.error}")
        addrs += [r.address for r in res.records]
    if addrs:
        return addrs
    if nx:
        raise ProbeError("no such host (NXDOMAIN)", no_host=True)
    raise ProbeError("no A/AAAA record" + (f" ({'; '.join(problems)})" if problems else ""),
                     no_host=True)


class _Lines:
    """Line reader/writer on a socket, with a hard cap on line length."""

    MAX_LINE = 65536

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.tag = 0

    def readline(self) -> str:
        while b"\n" not in self.buf:
            if len(self.buf) > self.MAX_LINE:
                raise ProbeError("server sent an over-long line")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ProbeError("connection closed by the server"
                                 + (f" after {self.buf[:80]!r}" if self.buf else ""))
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def command(self, cmd: str) -> tuple[str, list[str]]:
        """Send ``cmd``; return (tagged status line, untagged lines)."""
        self.tag += 1
        tag = f"p{self.tag}"
        self.sock.sendall(f"{tag} {cmd}\r\n".encode("ascii"))
        untagged = []
        while True:
            line = self.readline()
            if line.startswith(tag + " "):
                return line[len(tag) + 1:], untagged
            untagged.append(line)


def _capability(conn: _Lines) -> str:
    status, untagged = conn.command("CAPABILITY")
    if not status.upper().startswith("OK"):
        raise ProbeError(f"CAPABILITY refused: {status[:120]}")
    for line in untagged:
        if line.upper().startswith("* CAPABILITY "):
            return line[len("* CAPABILITY "):].strip()
    m = re.search(r"\[CAPABILITY ([^\]]*)\]", status, re.I)
    if m:
        return m.group(1).strip()
    raise ProbeError("no CAPABILITY in the answer to CAPABILITY")


def _tls_wrap(ctx: ssl.SSLContext, sock: socket.socket, host: str) -> ssl.SSLSocket:
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as e:
        raise ProbeError(f"TLS certificate not accepted for {host}: {e.verify_message or e.reason}") from None
    except (ssl.SSLError, OSError) as e:
        raise ProbeError(f"TLS handshake failed: {e}") from None


def _imap_session(sock: socket.socket, host: str, security: str, ctx: ssl.SSLContext) -> str:
    if security == "tls":
        sock = _tls_wrap(ctx, sock, host)
    conn = _Lines(sock)
    greeting = conn.readline()
    if re.match(r"\* BYE\b", greeting, re.I):
        raise ProbeError(f"server refused the connection: {greeting[:120]}")
    if not re.match(r"\* (OK|PREAUTH)\b", greeting, re.I):
        raise ProbeError(f"not an IMAP server (greeting {greeting[:80]!r})")
    caps = _capability(conn)
    if security == "starttls":
        if "STARTTLS" not in caps.upper().split():
            raise ProbeError("IMAP without STARTTLS (cleartext only: not used)")
        status, _ = conn.command("STARTTLS")
        if not status.upper().startswith("OK"):
            raise ProbeError(f"STARTTLS refused: {status[:120]}")
        if conn.buf:  # RFC 3501 s. 6.2.1: nothing may follow the OK before the handshake
            raise ProbeError("server sent data after STARTTLS OK (possible injection): not used")
        conn = _Lines(_tls_wrap(ctx, conn.sock, host))
        conn.tag = 10
        caps = _capability(conn)  # the capabilities before TLS are not to be trusted
    try:
        conn.command("LOGOUT")
    except (OSError, ProbeError):
        pass
    return caps


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()  # system CAs, hostname check, TLS >= 1.2
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)  # in addition to the system's
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load CA file {ca_file}: {e}") from None
    return ctx


def imap_probe(host: str, port: int, security: str, timeout: float, *,
               resolver: dns.resolver.Resolver | None = None, ca_file: str | None = None,
               ssl_context: ssl.SSLContext | None = None) -> str:
    """Connect to an IMAP server and return its CAPABILITY (after TLS); raise :class:`ProbeError`.

    ``security``: ``"tls"`` (implicit TLS, e.g. 993) or ``"starttls"`` (e.g. 143: greeting,
    CAPABILITY, STARTTLS, then CAPABILITY again over TLS).  The certificate is verified against
    the system's CAs plus ``ca_file`` and must match ``host``.  Names are resolved with
    ``resolver`` when given (else the system resolver).  ``ssl_context`` replaces the context
    built from ``ca_file``.  Sends no credentials.
    """
    if security not in SECURITIES:
        raise ValueError(f"security must be one of {SECURITIES}, not {security!r}")
    ctx = ssl_context or _ssl_context(ca_file)
    errors = []
    for addr in _addresses(host, port, resolver, timeout):
        where = f"{addr}" if addr != host else host
        try:
            sock = socket.create_connection((addr, port), timeout=timeout)
        except ConnectionRefusedError:
            errors.append(f"{where}: connection refused")
            continue
        except TimeoutError:
            errors.append(f"{where}: no answer within {timeout:g}s")
            continue
        except OSError as e:
            errors.append(f"{where}: {e.strerror or e}")
            continue
        try:
            sock.settimeout(timeout)
            return _imap_session(sock, host, security, ctx)
        except TimeoutError:
            raise ProbeError(f"{where}: server went silent for {timeout:g}s") from None
        except ssl.SSLError as e:
            raise ProbeError(f"{where}: TLS error: {e}") from None
        except OSError as e:
            raise ProbeError(f"{where}: {e.strerror or e}") from None
        finally:
            sock.close()
    raise ProbeError("; ".join(errors) or "no address")


def make_probe(*, resolver: dns.resolver.Resolver | None = None, ca_file: str | None = None) -> ProbeFunc:
    """The default probe: :func:`imap_probe` with this resolver and CA file (ValueError at once
    when the CA file cannot be loaded)."""
    ctx = _ssl_context(ca_file)

    def probe(host: str, port: int, security: str, timeout: float) -> str:
        return imap_probe(host, port, security, timeout, resolver=resolver, ssl_context=ctx)
    return probe


