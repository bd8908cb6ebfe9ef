"""systemd integration: sd_notify(3), the watchdog, socket activation (sd_listen_fds(3)).

Everything here is a no-op outside systemd, so the daemon calls it unconditionally.

* :class:`Notifier` sends ``READY=1``, ``STATUS=``, ``RELOADING=1``, ``STOPPING=1`` and
  ``WATCHDOG=1`` through the ``sdnotify`` package.
* :func:`start_watchdog` pings from a reactor ``LoopingCall``, so a ping proves the reactor runs.
* :func:`listen_fds` takes the sockets systemd passed in (named by ``FileDescriptorName=``) and
  :func:`adopt` turns one into a Twisted listening port (TLS-wrapped for imaps).

Twisted is imported inside the functions that need it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import sys
import time

import sdnotify

logger = logging.getLogger("mailsyncd.systemd")

SD_LISTEN_FDS_START = 3
_SEND_TIMEOUT = 5.0  # seconds; a datagram to PID 1 never waits this long unless systemd is wedged


class Notifier:
    """sd_notify(3) messages to ``$NOTIFY_SOCKET``; does nothing when it is unset.

    ``sdnotify.SystemdNotifier`` connects once, when it is created, and handles abstract
    addresses (``@name``).  Two things it lacks are handled here:

    * it encodes states as Latin-1 (a ``STATUS=`` naming a folder such as 已发送 would raise),
      while systemd reads UTF-8: we hand it a string whose Latin-1 encoding is the UTF-8 bytes;
    * after the socket went away it stays broken (or, with debug=False, silently drops every
      message): on a send error we reconnect once and resend, then give up and log at debug.

    No method ever raises.
    """

    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET") or None
        self._sd: sdnotify.SystemdNotifier | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    # -- the messages ------------------------------------------------------
    def ready(self, status: str | None = None) -> bool:
        lines = ["READY=1"]
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        return self.notify("\n".join(lines))

    def status(self, text: str) -> bool:
        return self.notify("STATUS=" + _one_line(text))

    def reloading(self) -> bool:
        # One datagram: systemd >= 253 ties the reload to MONOTONIC_USEC; 252 ignores the field.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def failed(self, text: str, errno_: int | None = None) -> bool:
        """Start-up failed: the reason for ``systemctl status``, and the errno if there is one."""
        lines = ["STATUS=" + _one_line(text)]
        if errno_ is not None:
            lines.append(f"ERRNO={errno_}")
        return self.notify("\n".join(lines))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``WATCHDOG_USEC``), or None if the watchdog is off."""
        return watchdog_interval()

    # -- plumbing ------------------------------------------------------------
    def notify(self, state: str) -> bool:
        """Send one datagram; True if it was sent.  Never raises."""
        if self.address is None:
            return False
        payload = state.encode("utf-8").decode("latin-1")  # sdnotify re-encodes as Latin-1
        for attempt in (1, 2):
            try:
                if self._sd is None or attempt == 2:
                    self._connect()
                self._sd.notify(payload)
                return True
            except Exception as e:  # noqa: BLE001 - a notification must never take the daemon down
                err = e
        logger.debug("event=sd_notify_failed socket=%s state=%s error=%r",
                     self.address, state.split("\n", 1)[0], str(err))
        return False

    def _connect(self) -> None:
        self.close()
        sd = sdnotify.SystemdNotifier(debug=True)  # debug: raise, so failures can be logged and retried
        sd.socket.settimeout(_SEND_TIMEOUT)
        self._sd = sd

    def close(self) -> None:
        sd, self._sd = self._sd, None
        if sd is not None and getattr(sd, "socket", None) is not None:
            try:
                sd.socket.close()
            except OSError:
                pass


def _one_line(text: str) -> str:
    # A newline would start another assignment (STATUS=x\nREADY=1 ...).
    return " ".join(str(text).splitlines())


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, if the watchdog is meant for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 2 / 1_000_000


def start_watchdog(reactor, notifier: Notifier):
    """Ping ``WATCHDOG=1`` from the reactor every ``watchdog_interval()`` seconds.

    Returns the running ``LoopingCall`` (stop it on shutdown), or None when there is no watchdog.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return None
    from twisted.internet.task import LoopingCall

    call = LoopingCall(notifier.watchdog)
    call.clock = reactor
    d = call.start(interval, now=True)
    d.addErrback(lambda f: logger.error("event=watchdog_stopped error=%r", f.getErrorMessage()))
    logger.debug("event=watchdog interval=%.3f", interval)
    return call


# -- socket activation -------------------------------------------------------------

_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def _listen_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in _LISTEN_VARS}


# Importing twisted.internet.endpoints (which mailsyncd.daemon does, through the proxy) runs
# Twisted's own ListenFDs.fromEnvironment() in a class body: it deletes LISTEN_PID and LISTEN_FDS
# (not LISTEN_FDNAMES) from os.environ.  So the variables are also read when this module is
# imported, and, failing that, taken back from Twisted (see _from_twisted).
_AT_IMPORT: tuple[int, dict[str, str | None]] | None = (os.getpid(), _listen_env())


def listen_fds() -> dict[str, list[int]]:
    """The sockets systemd passed to this process, by ``FileDescriptorName=`` (sd_listen_fds(3)).

    Only if ``$LISTEN_PID`` is our pid: fds 3 .. 3+``$LISTEN_FDS``-1, named by the colon-separated
    ``$LISTEN_FDNAMES`` (a missing name is "unknown").  Each fd gets FD_CLOEXEC.  The LISTEN_*
    variables are removed from the environment in every case, so no child inherits them, and a
    second call returns {}.
    """
    global _AT_IMPORT
    env = _listen_env()
    for k in _LISTEN_VARS:
        os.environ.pop(k, None)
    snapshot, _AT_IMPORT = _AT_IMPORT, None
    count = _count_for_us(env)
    if count is None and snapshot is not None and snapshot[0] == os.getpid():
        # The first call in this process: what Twisted may have removed since our import.
        env = snapshot[1]
        count = _count_for_us(env)
        if count is None:
            count = _from_twisted()
    if not count:
        return {}
    names = env["LISTEN_FDNAMES"].split(":") if env["LISTEN_FDNAMES"] is not None else []
    if names and len(names) != count:
        logger.warning("event=listen_fds_names_mismatch fds=%d names=%d", count, len(names))
    result: dict[str, list[int]] = {}
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        name = names[i] if i < len(names) and names[i] else "unknown"
        result.setdefault(name, []).append(fd)
    return result


def _count_for_us(env: dict[str, str | None]) -> int | None:
    try:
        pid = int(env["LISTEN_PID"] or "")
        count = int(env["LISTEN_FDS"] or "")
    except ValueError:
        return None
    return count if pid == os.getpid() and count > 0 else None


def _from_twisted() -> int | None:
    """How many fds Twisted's endpoints module took from the environment, if it did."""
    endpoints = sys.modules.get("twisted.internet.endpoints")
    found = getattr(getattr(endpoints, "_SystemdParser", None), "_sddaemon", None)
    try:
        fds = found.inheritedDescriptors() if found is not None else []
    except Exception:  # noqa: BLE001 - a private attribute of another project; never fatal
        return None
    if fds != list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + len(fds))):
        return None
    return len(fds) or None


def adopt(reactor, fd: int, factory, *, tls_options=None):
    """Listen on the inherited listening TCP socket ``fd`` with ``factory``; returns the port.

    With ``tls_options`` (CertificateOptions, or anything Twisted's ``TLSMemoryBIOFactory`` accepts) every
    connection starts with a TLS handshake, as ``listenSSL`` does.  Twisted works on its own
    duplicate of the socket, so ``fd`` is closed here once the port is listening.
    """
    family = _listening_stream_family(fd)
    os.set_blocking(fd, False)
    if tls_options is not None:
        from .proxy.tlsrelay import BulkTLSFactory

        factory = BulkTLSFactory(tls_options, False, factory)
    port = reactor.adoptStreamPort(fd, family, factory)
    os.close(fd)
    return port


def _listening_stream_family(fd: int) -> socket.AddressFamily:
    # A dup, so closing the socket object leaves fd alone.
    s = socket.socket(fileno=os.dup(fd))
    try:
        family, kind = s.family, s.type
        listening = s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        s.close()
    if family not in (socket.AF_INET, socket.AF_INET6) or kind != socket.SOCK_STREAM:
        raise ValueError(f"fd {fd} is not a TCP socket ({family!r}, {kind!r}); "
                         "use ListenStream=[ADDRESS:]PORT in the socket unit")
    if not listening:
        raise OSError(errno.EINVAL, f"fd {fd} is a TCP socket that is not listening")
    return family
