"""Common part of the Courier and Cyrus test servers: the private prefix and the supervision.

``scripts/setup-servers.sh`` unpacks the Debian packages of Courier-IMAP and Cyrus IMAP (they
conflict with dovecot-imapd, so they are never installed) into ``.servers/root`` of the
checkout, or into ``$MAILSYNCD_SERVERS_ROOT`` when set.  Those binaries have their paths compiled
in (``/usr/lib/courier-authlib``, ``/etc/courier/authdaemonrc``, ``/run/courier/authdaemon``...),
so a server runs in a private mount namespace (``unshare -m``, root only) where

* ``/usr`` is an overlay of the private ``usr/`` over the real one,
* ``/etc`` is an overlay of the instance's ``etc/`` over the real one,
* ``/run`` is an empty tmpfs,
* ``/dev`` is an overlay of the real one with ``/dev/log`` bind-mounted to a socket of the
  supervisor, which appends the server's syslog messages to ``server.log`` (Cyrus logs only
  to syslog),

all of which is visible to that server's processes only; nothing outside changes.

A :class:`PrivateServer` runs a shell script (``start.sh`` in the instance directory) in that
namespace under ``_supervise.py`` (see there): the server never outlives the Python process
that started it, and :meth:`PrivateServer.stop` stops everything it forked.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .common import LoginRefused, Server, Supervisor, free_port, greeting_ok, login_works, make_traversable, tail

__all__ = ["PrivateServer", "ServerError", "private_root", "missing_reason"]

START_TIMEOUT = 15.0
_SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_supervise.py")


class ServerError(RuntimeError):
    """A test server failed to start (the message carries the tail of its log)."""


def private_root() -> str:
    env = os.environ.get("MAILSYNCD_SERVERS_ROOT")
    if env:
        return os.path.abspath(env)
    return str(Path(__file__).resolve().parents[2] / ".servers" / "root")


def missing_reason(*relpaths: str) -> str | None:
    """None when these files of the private prefix exist and we can run them, else why not."""
    root = private_root()
    if os.geteuid() != 0:
        return "the Courier/Cyrus test servers need root (private mount namespace with unshare -m)"
    missing = [p for p in relpaths if not os.path.exists(os.path.join(root, p))]
    if missing:
        return (f"{', '.join(missing)} not found under {root}: run scripts/setup-servers.sh "
                "(unpacks Courier-IMAP and Cyrus IMAP there without installing them)")
    return None


class PrivateServer(Server):
    """One server instance in ``root/name``, run from the private prefix; subclasses write
    their configuration in :meth:`_prepare` and return the body of ``start.sh``."""

    kind = "server"

    def __init__(self, root: str, name: str, users: dict[str, str]) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad instance name {name!r}")
        for login in users:
            if not login or any(c in login for c in ":/|\t\n\r\0 ") or login.startswith("."):
                raise ValueError(f"login not usable here: {login!r}")
        self.root = os.path.abspath(root)
        self.name = name
        self.dir = os.path.join(self.root, name)
        self.users = dict(users)
        self.host = "127.0.0.1"
        self.imap_port = 0
        self.log_path = os.path.join(self.dir, "server.log")
        self.start_seconds: float | None = None
        self._supervisor: Supervisor | None = None
        self._short_tmp: str | None = None  # holds the syslog socket; removed by stop()

    def __repr__(self) -> str:
        state = f"imap {self.imap_port}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.name!r} {self.dir} ({state})>"

    @property
    def running(self) -> bool:
        return self._supervisor is not None and self._supervisor.running()

    def start(self) -> None:
        """Write the configuration and start; returns once a test login works."""
        if self.running:
            return
        t0 = time.monotonic()
        if not self.imap_port:
            self.imap_port = free_port()
        os.makedirs(self.dir, exist_ok=True)
        make_traversable(self.dir)
        try:
            body = self._prepare()
            script = os.path.join(self.dir, "start.sh")
            etc = os.path.join(self.dir, "etc")
            os.makedirs(etc, exist_ok=True)
            dev = os.path.join(self.dir, "dev")
            os.makedirs(dev, exist_ok=True)
            open(os.path.join(dev, "log"), "w").close()  # mount point for the syslog socket
            if self._short_tmp is None:  # sun_path has 108 bytes: a short dir for the socket
                self._short_tmp = tempfile.mkdtemp(prefix="msd-syslog-", dir="/tmp")
                os.chmod(self._short_tmp, 0o755)
            syslog = os.path.join(self._short_tmp, "log")
            if os.path.exists(syslog):
                os.unlink(syslog)
            for p in (private_root(), etc, dev):
                if any(c in p for c in ":,\n"):  # overlay option syntax
                    raise ValueError(f"path not usable as an overlay lowerdir: {p!r}")
            q = shlex.quote
            with open(script, "w") as f:
                f.write("set -e\n"
                        f"mount -t overlay {self.kind}-usr -o lowerdir={q(private_root())}/usr:/usr /usr\n"
                        f"mount -t overlay {self.kind}-etc -o lowerdir={q(etc)}:/etc /etc\n"
                        f"mount -t overlay {self.kind}-dev -o lowerdir={q(dev)}:/dev /dev\n"
                        f"mount --bind {q(syslog)} /dev/log\n"
                        f"mount -t tmpfs {self.kind}-shm /dev/shm\n"
                        f"mount -t tmpfs {self.kind}-run /run\n"
                        + body)
            self._spawn(["/usr/bin/unshare", "-m", "--propagation", "private", "/bin/sh", script],
                        syslog=syslog)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Stop the instance and everything it forked; idempotent."""
        atexit.unregister(self.stop)
        if self._supervisor is not None:
            self._supervisor.stop(15)  # EOF: the supervisor stops the server and exits
            self._supervisor = None
        if self._short_tmp is not None:
            shutil.rmtree(self._short_tmp, ignore_errors=True)
            self._short_tmp = None

    # ---------------------------------------------------------------- subclass hooks

    def _prepare(self) -> str:
        raise NotImplementedError

    # ---------------------------------------------------------------- internals

    def _failure(self, what: str) -> str:
        return f"{self.kind} instance {self.name!r} ({self.dir}): {what}\n--- {self.log_path} (tail):\n{tail(self.log_path)}"

    def _spawn(self, cmd: list[str], syslog: str) -> None:
        self._supervisor = Supervisor(_SUPERVISOR, ["--syslog", syslog, self.log_path, *cmd],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.running:
                raise ServerError(self._failure("exited during startup"))
            try:
                if greeting_ok(self.host, self.imap_port) and login_works(self.host, self.imap_port, self.users):
                    return
            except LoginRefused as e:
                raise ServerError(self._failure(str(e))) from None
            if time.monotonic() > deadline:
                raise ServerError(self._failure(f"no working login on 127.0.0.1:{self.imap_port} "
                                                f"within {START_TIMEOUT:.0f} s"))
            time.sleep(0.01)
