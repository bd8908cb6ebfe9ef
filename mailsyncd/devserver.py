"""Throwaway Dovecot servers for tests and for ``mailsyncctl demo``.

A :class:`Dovecot` is one real, independent Dovecot instance (Debian's ``dovecot-imapd`` /
``dovecot-pop3d``) that lives in ``root/name``: its own config file (``dovecot -c FILE``; nothing
from ``/etc/dovecot`` is read), passwd-file, maildirs, state and log, listening on free ports on
127.0.0.1 only::

    with Dovecot(tmpdir, "target", {"alice@example.com": "pw"}, master=("master", "mpw")) as t:
        imapclient.IMAPClient("127.0.0.1", port=t.imap_port, ssl=False).login(...)

Layout of ``root/name``::

    dovecot.conf  users  [masters]  dovecot.log  dovecot.start.log  state/  home/<login>/Maildir
    run/          (base_dir; replaced by a short /tmp/dcv-XXXX/run when the path is too long
                   for Dovecot's unix sockets)

Cleanup guarantees -- an instance never outlives the Python process that started it:

* ``dovecot -c`` is run by a tiny supervisor process (``python -I -S -c`` with this module's
  process helpers, in its own session).  Its stdin is a pipe whose write end only this Python
  process holds.  EOF on it -- from :meth:`stop`, or because this process died in any way
  (SIGKILL, SIGTERM without handler, OOM kill, ...) -- makes it stop the instance and exit.
  It is also a child subreaper, so the daemonized master is its child and is reaped at once
  (otherwise the master is re-parented to PID 1, which in some containers reaps late: stale
  ``[dovecot] <defunct>`` entries).  A child created with a bare ``os.fork()`` inherits the
  write end, so then the instance lives until that child exits too.
* stopping = SIGTERM to the master (and to the imap/pop3/login processes, which otherwise
  outlive it for seconds when a client is connected), SIGKILL after 10 s, then SIGKILL to every
  Dovecot process left in the master's session (the master calls setsid(), so all its children
  share the session id ``master pid``; that pid stays reserved while any member lives, and only
  processes titled ``dovecot...`` are touched).  :meth:`stop` is idempotent and also re-checks
  this itself after the supervisor has exited.
* an ``atexit`` handler calls :meth:`stop` on normal interpreter exit, on an uncaught exception
  and on Ctrl-C.

Running as root (the usual case in containers) Dovecot needs existing unprivileged accounts:
``default_internal_user = dovecot`` and ``default_login_user = dovenull`` (created by Debian's
dovecot-core), and it refuses mail access as root, so the mail files belong to ``nobody:nogroup``
(``mail_uid``/``mail_gid``; the passwd-file uid/gid fields stay empty because passwd-file rejects
uid 0).  Those processes must be able to reach ``root/name``, so as root :meth:`start` adds the
search bit (``o+x``, never read) to any ancestor directory that lacks it -- e.g. pytest's
``/tmp/pytest-of-root`` (0700; pytest resets it to 0700 at its next session).  As non-root every
Dovecot process runs as the current user, without chroot.
"""

from __future__ import annotations

import atexit
import base64
import os
import pwd
import grp
import imaplib
import shutil
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["Dovecot", "DovecotError", "DoveadmError", "free_port", "make_test_cert", "dovecot_missing_reason"]

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_START_ATTEMPTS = 3
# Unix socket paths (sun_path) are limited to 108 bytes; Dovecot's longest socket name below
# base_dir is ~30 bytes ("token-login/imap-urlauth", "login/imap-hibernate", ...).
_MAX_BASE_DIR = 60
# processes serving a client connection (the rest -- anvil, auth, config, log, stats -- is
# stopped by the master in its own order)
_CLIENT_SERVICES = {"imap", "pop3", "imap-login", "pop3-login"}
# personal namespace: "slash" = separator "/", no prefix; "dot" = separator ".", prefix "INBOX."
# (like Courier and Cyrus); "shared" = "slash" plus a shared namespace (mail_shared_explicit_inbox)
_NAMESPACES = ("slash", "dot", "shared")
_UNSAFE_PATH_CHARS = set(' \t\n"#{}\\$%<')


class DovecotError(RuntimeError):
    """Dovecot failed to start (the message carries the tail of its logs)."""


class DoveadmError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        err = (self.stderr or "").strip() or (self.stdout or "").strip()
        return f"{super().__str__()}\n{err}"


def dovecot_missing_reason() -> str | None:
    """None when Dovecot can be used here, else a human-readable reason."""
    if shutil.which("dovecot") is None and not os.path.exists("/usr/sbin/dovecot"):
        return ("dovecot is not installed (Debian/Ubuntu: apt-get install dovecot-imapd dovecot-pop3d); "
                "tests that start a real Dovecot server are skipped")
    return None


def _dovecot_bin() -> str:
    return shutil.which("dovecot") or "/usr/sbin/dovecot"


def _doveadm_bin() -> str:
    return shutil.which("doveadm") or "/usr/bin/doveadm"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_test_cert(dirpath: str, cn: str = "localhost") -> tuple[str, str]:
    """Write a self-signed certificate + key for ``cn``, localhost and 127.0.0.1 (SAN).

    Returns ``(certfile, keyfile)`` (PEM, key unencrypted, 0600).  The certificate doubles as
    its own CA: ``ssl.create_default_context(cafile=certfile)`` verifies the server.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    dns = [cn] if cn == "localhost" else [cn, "localhost"]
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        # CA:TRUE + keyCertSign so that it is a valid trust anchor even under
        # VERIFY_X509_STRICT (Python >= 3.13 default), and serverAuth for the TLS handshake.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = d / f"{cn}.crt", d / f"{cn}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return str(certfile), str(keyfile)


# --------------------------------------------------------------------------------------------
# process helpers (Linux /proc); shared with the supervisor, so stdlib only


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of pid, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid pgrp session ..." -- comm may contain spaces/parens
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[3])


def _alive(pid: int) -> bool:
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")  # a zombie has released everything


def _is_dovecot_process(pid: int) -> bool:
    """Title "/usr/sbin/dovecot ..." (master) or "dovecot[-INSTANCE]/SERVICE" (children)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            first = f.read().split(b"\0")[0].split(b" ")[0]
    except OSError:
        return False
    return first.startswith(b"dovecot") or os.path.basename(first) == b"dovecot"


def _session_members(sid: int) -> list[int]:
    """Live Dovecot processes of session ``sid`` (never anything else, should the pid of a
    long-dead master have been reused)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if (st is not None and st[1] == sid and st[0] not in ("Z", "X")
                    and _is_dovecot_process(int(entry))):
                pids.append(int(entry))
    return pids


def _is_dovecot_master(pid: int) -> bool:
    st = _proc_stat(pid)
    if st is None or st[1] != pid:  # the master is a session leader (setsid)
        return False
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "dovecot"
    except OSError:
        return False


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _role(pid: int) -> str:
    """Dovecot service of a child process, from its title ("dovecot-NAME/imap" -> "imap")."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().split(b"\0")[0].decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return title.split(" ")[0].rpartition("/")[2]


def _is_log_process(pid: int) -> bool:
    return _role(pid) == "log"


def _terminate_instance(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the master ``pid``, SIGKILL after ``timeout``, then SIGKILL its whole session.

    Speed-up: after SIGTERM the master stops its children at once but then sits in a fixed
    ~1 s drain wait (MAX_DIE_WAIT_MSECS) with only its log process left.  Once every other
    child has exited cleanly, the log process gets SIGTERM (it flushes and exits) and the
    master -- which has nothing left to do -- SIGKILL.  A stop takes ~10 ms instead of ~1.1 s.
    """
    if _is_dovecot_master(pid):
        _kill(pid, signal.SIGTERM)
        # The master does not reliably stop imap/pop3 processes that still serve a client
        # (they outlive it for seconds): SIGTERM them too -- they say BYE and exit cleanly.
        for p in _session_members(pid):
            if p != pid and _role(p) in _CLIENT_SERVICES:
                _kill(p, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        log_termed = False
        while _alive(pid) and time.monotonic() < deadline:
            others = [p for p in _session_members(pid) if p != pid]
            logs = [p for p in others if _is_log_process(p)]
            if len(logs) == len(others):  # only the master (and its log process) remain
                if logs and not log_termed:
                    for p in logs:
                        _kill(p, signal.SIGTERM)
                    log_termed = True
                elif not logs:
                    _kill(pid, signal.SIGKILL)
                    break
            time.sleep(0.003)
        if _alive(pid):
            _kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 5.0
        while _alive(pid) and time.monotonic() < kill_deadline:
            time.sleep(0.002)
    # orphans: children the master did not take down (or all of them after SIGKILL)
    deadline = time.monotonic() + 5.0
    while True:
        members = _session_members(pid)
        if not members:
            break
        for p in members:
            _kill(p, signal.SIGKILL)
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)


def _children(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if int(data[data.rindex(b")") + 2:].split()[1]) == ppid:
                out.append(int(entry))
    return out


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _supervisor_main(argv: list[str]) -> None:
    """``python -c SUPERVISOR_SOURCE DOVECOT CONF START_LOG [DIR_TO_REMOVE]``

    Started by :meth:`Dovecot.start` in its own session, stdin = a pipe only the parent holds.
    Becomes a child subreaper (so the daemonized master is *our* child and gets reaped at once,
    instead of lingering as a zombie of PID 1), runs ``dovecot -c CONF`` and reports its exit
    status on stdout.  Then waits for EOF on stdin -- the parent's stop() or the parent's
    death, whichever comes first -- and stops the instance.  Lines ``pid N`` on stdin name the
    master (needed only where prctl is unavailable).
    """
    dovecot, conf, start_log = argv[:3]
    cleanup = argv[3] if len(argv) > 3 else ""
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass
    log_fd = os.open(start_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    # the daemon keeps its stdio open forever: never give it a pipe of ours
    child = os.posix_spawn(dovecot, [dovecot, "-c", conf], os.environ, file_actions=[
        (os.POSIX_SPAWN_DUP2, null_fd, 0), (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2)])
    rc = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    os.close(log_fd)
    os.close(null_fd)
    os.write(1, f"{rc}\n".encode())
    os.close(1)

    announced: set[int] = set()
    buf = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.2)
        _reap()
        if ready:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.startswith(b"pid "):
                    announced.add(int(line[4:]))
    me = os.getpid()
    for pid in announced | {p for p in _children(me) if _is_dovecot_master(p)}:
        _terminate_instance(pid)
    deadline = time.monotonic() + 5.0
    while True:
        _reap()
        if not _children(me) or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    if cleanup and os.getppid() != parent:  # parent gone: nobody else will remove it
        import shutil

        shutil.rmtree(cleanup, ignore_errors=True)


_SUPERVISOR_FUNCS = ("_proc_stat", "_alive", "_is_dovecot_process", "_session_members",
                     "_is_dovecot_master", "_kill", "_role", "_is_log_process",
                     "_terminate_instance", "_children", "_reap", "_supervisor_main")
_supervisor_src: str | None = None


def _supervisor_source() -> str:
    """Stand-alone source of the supervisor, for ``python -I -S -c``: the functions above
    (stdlib only) without this module's imports -- ~10 ms to start instead of ~40 ms."""
    global _supervisor_src
    if _supervisor_src is None:
        import inspect

        g = globals()
        _supervisor_src = "\n".join([
            "# mailsyncd.devserver supervisor: runs `dovecot -c`, stops it on EOF on stdin",
            "from __future__ import annotations",
            "import os, select, signal, sys, time",
            f"STOP_TIMEOUT = {STOP_TIMEOUT!r}",
            f"_CLIENT_SERVICES = {_CLIENT_SERVICES!r}",
            *(inspect.getsource(g[name]) for name in _SUPERVISOR_FUNCS),
            "_supervisor_main(sys.argv[1:])",
        ])
    return _supervisor_src


# --------------------------------------------------------------------------------------------


def _check_conf_path(p: str) -> str:
    if any(c in _UNSAFE_PATH_CHARS for c in p):
        raise ValueError(f"path not usable in a Dovecot config (whitespace or special characters): {p!r}")
    return p


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Dovecot:
    """One throwaway Dovecot instance in ``root/name`` (see the module docstring)."""

    def __init__(self, root: str, name: str, users: dict[str, str], *,
                 master: tuple[str, str] | None = None, pop3: bool = True,
                 ssl: tuple[str, str] | None = None, extra_conf: str = "",
                 imap_capability: str | None = None, fsync: str = "never",
                 namespace: str = "slash") -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad instance name {name!r}")
        for login in list(users) + ([master[0]] if master else []):
            if not login or any(c in login for c in ":/\n\r\0*") or login.startswith("."):
                raise ValueError(f"login not usable in a passwd-file/home path: {login!r}")
            if login != login.lower():
                # Dovecot's default auth_username_format = %Lu lowercases the login before lookup
                raise ValueError(f"logins must be lowercase (Dovecot lowercases them): {login!r}")
        if namespace not in _NAMESPACES:
            raise ValueError(f"namespace must be one of {', '.join(_NAMESPACES)}, not {namespace!r}")
        if fsync not in ("optimized", "always", "never"):
            raise ValueError(f"fsync must be optimized|always|never, not {fsync!r}")
        self.root = os.path.abspath(root)
        self.name = name
        self.dir = os.path.join(self.root, name)
        _check_conf_path(self.dir)
        self.users = dict(users)
        self.master = master
        self.pop3 = pop3
        self.ssl = ssl
        self.extra_conf = extra_conf
        self.imap_capability = imap_capability
        self.fsync = fsync
        self.namespace = namespace
        self.conf_path = os.path.join(self.dir, "dovecot.conf")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.start_log_path = os.path.join(self.dir, "dovecot.start.log")
        self.host = "127.0.0.1"
        self.imap_port: int = 0
        self.pop3_port: int | None = None
        self.imaps_port: int | None = None
        self.pid: int | None = None
        self.start_seconds: float | None = None  # wall time of the last successful start()
        self._base_dir: str | None = None
        self._short_tmp: str | None = None  # short /tmp dir holding base_dir, removed by stop()
        self._supervisor: subprocess.Popen | None = None
        self._supervisor_w: int | None = None  # write end of its stdin; closing it = stop
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- public API

    def __repr__(self) -> str:
        state = f"pid {self.pid}, imap {self.imap_port}" if self.pid else "stopped"
        return f"<Dovecot {self.name!r} {self.dir} ({state})>"

    def __enter__(self) -> "Dovecot":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.pid is not None and _alive(self.pid)

    def maildir(self, user: str) -> str:
        return os.path.join(self.dir, "home", user, "Maildir")

    def home(self, user: str) -> str:
        return os.path.join(self.dir, "home", user)

    def start(self) -> None:
        """Write the config and start Dovecot; returns once IMAP answers ``* OK``.

        The first start picks free ports; a later start (after :meth:`stop`) keeps them, so
        clients can reconnect to the same address.
        """
        with self._lock:
            if self.pid is not None and _alive(self.pid):
                return
            t0 = time.monotonic()
            try:
                self._prepare_dirs()
                keep_ports = self.imap_port != 0
                for attempt in range(1, _START_ATTEMPTS + 1):
                    if not keep_ports:
                        self._pick_ports()
                    self._write_conf()
                    try:
                        self._spawn_and_wait()
                    except _AddrInUse:
                        if attempt == _START_ATTEMPTS:
                            raise DovecotError(self._failure(
                                f"port still in use after {_START_ATTEMPTS} attempts")) from None
                        if keep_ports:  # our own old listener may linger for a moment
                            time.sleep(0.2 * attempt)
                        continue
                    break
            except BaseException:
                self.stop()  # leave nothing behind (also removes the short base_dir)
                if self.start_seconds is None:  # never started: pick new ports next time
                    self.imap_port, self.pop3_port, self.imaps_port = 0, None, None
                raise
            atexit.register(self.stop)
            self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Stop the instance (SIGTERM, SIGKILL after 10 s, then kill orphans); idempotent."""
        with self._lock:
            atexit.unregister(self.stop)
            pid = self.pid or self._read_pid()
            self._stop_supervisor()
            if pid is not None:
                _terminate_instance(pid)  # safety net; a no-op when the supervisor did it
                if self._base_dir is not None and self._read_pid() == pid:
                    # a SIGKILLed master leaves its pid file behind
                    try:
                        os.unlink(os.path.join(self._base_dir, "master.pid"))
                    except OSError:
                        pass
            self.pid = None
            if self._short_tmp is not None:
                shutil.rmtree(self._short_tmp, ignore_errors=True)
                self._short_tmp = None
                self._base_dir = None

    def restart(self) -> None:
        """Stop and start again on the same ports (mail and indexes are kept)."""
        self.stop()
        self.start()

    def doveadm(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``doveadm -c CONF ARGS...``; text output captured; raise DoveadmError on failure
        unless ``check=False``."""
        cmd = [_doveadm_bin(), "-c", self.conf_path, *map(str, args)]
        cp = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60)
        if check and cp.returncode != 0:
            raise DoveadmError(cp.returncode, cmd, cp.stdout, cp.stderr)
        return cp

    # ---------------------------------------------------------------- internals

    def _mail_ids(self) -> tuple[int, int] | None:
        """(uid, gid) for mail files when running as root, else None (= current user)."""
        if os.geteuid() != 0:
            return None
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid

    def set_password(self, user: str, password: str) -> None:
        """Change a user's password while running (Dovecot re-reads a passwd-file that changed)."""
        self.users[user] = password
        self._prepare_dirs()

    def _prepare_dirs(self) -> None:
        ids = self._mail_ids()
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "state"), exist_ok=True)
        home_root = os.path.join(self.dir, "home")
        os.makedirs(home_root, exist_ok=True)
        if ids is not None:
            self._make_traversable(self.dir)
            os.chmod(self.dir, 0o755)
            os.chmod(home_root, 0o755)
        if self.namespace == "shared":  # written by the users' imap processes
            os.makedirs(os.path.join(self.dir, "acl"), exist_ok=True)
            if ids is not None:
                os.chown(os.path.join(self.dir, "acl"), *ids)
        for login in self.users:
            h = self.home(login)
            os.makedirs(h, exist_ok=True)
            if ids is not None:
                os.chown(h, *ids)
                os.chmod(h, 0o700)

        def pwline(login: str, password: str, home: str = "") -> str:
            b64 = base64.b64encode(password.encode()).decode()
            # user:password:uid:gid:gecos:home:shell:extra -- uid/gid empty (mail_uid applies)
            # extra field "nodelay": answer failures at once where Dovecot keeps the passdb
            # fields (e.g. master password right, target user unknown).  A plain wrong password
            # still waits for the auth process's 0.5 s failure-flush timer (fields rolled back).
            return f"{login}:{{PLAIN.b64}}{b64}::::{home}::nodelay\n"

        self._write_private("users", "".join(pwline(u, p, self.home(u)) for u, p in self.users.items()))
        if self.master:
            self._write_private("masters", pwline(*self.master))
        if self._base_dir is None:
            base = os.path.join(self.dir, "run")
            if len(base) > _MAX_BASE_DIR:
                self._short_tmp = tempfile.mkdtemp(prefix="dcv-", dir="/tmp")
                os.chmod(self._short_tmp, 0o755)
                base = os.path.join(self._short_tmp, "run")
            self._base_dir = base
        stale = self._read_pid()
        if stale is not None and not _is_dovecot_master(stale):
            # left by a SIGKILLed master; Dovecot would refuse to start if the pid was reused
            os.unlink(os.path.join(self._base_dir, "master.pid"))

    def _write_private(self, fname: str, text: str) -> None:
        path = os.path.join(self.dir, fname)
        with open(path, "w") as f:
            f.write(text)
        if os.geteuid() == 0:
            # passwords in clear: readable by root and Dovecot's internal user only
            os.chown(path, 0, grp.getgrnam("dovecot").gr_gid)
            os.chmod(path, 0o640)
        else:
            os.chmod(path, 0o600)

    @staticmethod
    def _make_traversable(path: str) -> None:
        p = Path(path)
        for d in [p, *p.parents]:
            st = d.stat()
            if not st.st_mode & 0o001:
                os.chmod(d, (st.st_mode & 0o7777) | 0o001)

    def _pick_ports(self) -> None:
        self.imap_port = free_port()
        self.pop3_port = free_port() if self.pop3 else None
        self.imaps_port = free_port() if self.ssl else None

    def _conf_text(self) -> str:
        d = self.dir
        lines = [
            f"# generated by mailsyncd.devserver for instance {self.name!r} -- throwaway test server",
            f"instance_name = mailsyncd-{self.name}",
            f"base_dir = {_check_conf_path(self._base_dir)}",
            f"state_dir = {d}/state",
            "listen = 127.0.0.1",
            f"protocols = imap{' pop3' if self.pop3 else ''}",
            f"log_path = {d}/dovecot.log",
            "auth_verbose = yes",
            "imap_id_log = *",
            "auth_mechanisms = plain login",
            "disable_plaintext_auth = no",
            "auth_failure_delay = 0",
            "login_trusted_networks = 127.0.0.1",
            "mail_location = maildir:~/Maildir",
            f"mail_fsync = {self.fsync}",
            "mail_max_userip_connections = 50",
            "first_valid_uid = 0",
            "first_valid_gid = 0",
        ]
        if self.ssl:
            cert, key = (_check_conf_path(os.path.abspath(x)) for x in self.ssl)
            lines += ["ssl = yes", f"ssl_cert = <{cert}", f"ssl_key = <{key}"]
        else:
            lines.append("ssl = no")
        ids = self._mail_ids()
        if ids is not None:
            lines += ["default_internal_user = dovecot", "default_login_user = dovenull",
                      f"mail_uid = {ids[0]}", f"mail_gid = {ids[1]}"]
        else:
            me = pwd.getpwuid(os.geteuid()).pw_name
            my_group = grp.getgrgid(os.getegid()).gr_name
            lines += [f"default_internal_user = {me}", f"default_login_user = {me}",
                      f"default_internal_group = {my_group}"]
        if self.imap_capability is not None:
            lines.append(f"imap_capability = {self.imap_capability}")
        sep, prefix = ("/", "") if self.namespace != "dot" else (".", "INBOX.")
        lines.append(f"""\
namespace inbox {{
  inbox = yes
  separator = {sep}
  prefix = {prefix}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = no
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = no
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = no
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = no
  }}
}}""")
        if self.namespace == "shared":
            # other users' folders under "shared/<login>/", INBOX included by name
            # ("shared/bob@example.com/INBOX"); what is shared is set with SETACL (imap_acl)
            lines.append(f"""\
mail_shared_explicit_inbox = yes
mail_plugins = $mail_plugins acl
protocol imap {{
  mail_plugins = $mail_plugins imap_acl
}}
plugin {{
  acl = vfile
  acl_shared_dict = file:{d}/acl/shared-mailboxes.db
}}
namespace shared {{
  type = shared
  separator = /
  prefix = shared/%%u/
  location = maildir:%%h/Maildir:INDEXPVT=~/Maildir/shared/%%u
  subscriptions = no
  list = children
}}
# the imap process (mail_uid, no uid in the userdb reply) looks up the other user's home
service auth {{
  unix_listener auth-userdb {{
    mode = 0777
  }}
}}""")
        if self.master:
            lines.append(f"""\
auth_master_user_separator = *
passdb {{
  driver = passwd-file
  args = {d}/masters
  master = yes
  # the target user must also exist in the normal passdb
  pass = yes
}}""")
        lines.append(f"""\
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
# no auth penalty (per-IP failure delays of 2..15 s tracked by anvil): tests fail logins on
# purpose, and login_trusted_networks does not exempt 127.0.0.1 from it
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port or 0}
  }}
}}""")
        if self.pop3:
            lines.append(f"""\
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}""")
        if ids is None:  # unprivileged: chroot needs root
            lines.append("service imap-login {\n  chroot =\n}\nservice pop3-login {\n  chroot =\n}\n"
                         "service anvil {\n  chroot =\n}\nservice auth-worker {\n  user = $default_internal_user\n}")
        if self.extra_conf:
            lines += ["# ---- extra_conf (later settings override earlier ones)", self.extra_conf]
        return "\n".join(lines) + "\n"

    def _write_conf(self) -> None:
        with open(self.conf_path, "w") as f:
            f.write(self._conf_text())

    def _read_pid(self) -> int | None:
        if self._base_dir is None:
            return None
        try:
            with open(os.path.join(self._base_dir, "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def _failure(self, what: str) -> str:
        return (f"Dovecot instance {self.name!r} ({self.conf_path}): {what}\n"
                f"--- {self.start_log_path} (tail):\n{_tail(self.start_log_path, 10)}\n"
                f"--- {self.log_path} (tail):\n{_tail(self.log_path)}")

    def _spawn_and_wait(self) -> None:
        log_size = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        rc = self._spawn_supervised()
        if rc != 0:
            self._stop_supervisor()
            new_log = ""
            try:
                with open(self.log_path, "rb") as f:
                    f.seek(log_size)
                    new_log = f.read().decode("utf-8", "replace")
            except OSError:
                pass
            if "Address already in use" in new_log + _tail(self.start_log_path, 5):
                raise _AddrInUse()
            raise DovecotError(self._failure(f"`dovecot -c` exited with status {rc}"))
        deadline = time.monotonic() + START_TIMEOUT
        pid = None
        while True:
            if pid is None:
                pid = self._read_pid()
                if pid is not None:
                    self.pid = pid
                    self._announce(pid)
            if pid is not None and not _alive(pid):
                self.pid = None
                raise DovecotError(self._failure(f"master process {pid} died during startup"))
            if self._greeting_ok() and self._auth_ready():
                if pid is None:
                    pid = self._read_pid()
                    if pid is not None:
                        self.pid = pid
                        self._announce(pid)
                if pid is not None:
                    return
            if time.monotonic() > deadline:
                if pid is not None:
                    _terminate_instance(pid)
                self.pid = None
                raise DovecotError(self._failure(f"no '* OK' greeting on 127.0.0.1:{self.imap_port} "
                                                 f"within {START_TIMEOUT:.0f} s"))
            time.sleep(0.005)

    def _greeting_ok(self) -> bool:
        try:
            with socket.create_connection((self.host, self.imap_port), timeout=2) as s:
                buf = b""
                while not buf.endswith(b"\n") and len(buf) < 4096:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                return buf.startswith(b"* OK")
        except OSError:
            return False

    def _auth_ready(self) -> bool:
        """The auth service can lag the listener: right after start a login may get
        "[UNAVAILABLE] Temporary authentication failure".  Wait until a login works."""
        if not self.users:
            return True
        user, password = next(iter(self.users.items()))
        try:
            c = imaplib.IMAP4(self.host, self.imap_port, timeout=5)
            try:
                c.login(user, password)
            finally:
                c.shutdown()
            return True
        except (imaplib.IMAP4.error, OSError) as e:
            if "UNAVAILABLE" in str(e) or isinstance(e, OSError):
                return False
            raise DovecotError(self._failure(f"test login for {user} refused: {e}")) from None

    def _spawn_supervised(self) -> int:
        """Start the supervisor (see _supervisor_main), which runs ``dovecot -c``; its status."""
        if not sys.executable:  # embedded interpreter: no supervisor, atexit only
            with open(self.start_log_path, "ab") as out:
                return subprocess.call([_dovecot_bin(), "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT)
        r, w = os.pipe()  # non-inheritable (PEP 446): only this process holds w
        out_r, out_w = os.pipe()
        try:
            with open(self.start_log_path, "ab") as err:
                self._supervisor = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _supervisor_source(),
                     _dovecot_bin(), self.conf_path, self.start_log_path, self._short_tmp or ""],
                    stdin=r, stdout=out_w, stderr=err, start_new_session=True, close_fds=True)
        except BaseException:
            os.close(w)
            os.close(out_r)
            raise
        finally:
            os.close(r)
            os.close(out_w)
        self._supervisor_w = w
        try:
            line = b""
            deadline = time.monotonic() + START_TIMEOUT
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([out_r], [], [], left)[0]:
                    raise DovecotError(self._failure("`dovecot -c` did not return"))
                chunk = os.read(out_r, 64)
                if not chunk:
                    raise DovecotError(self._failure("supervisor process died"))
                line += chunk
        finally:
            os.close(out_r)
        return int(line)

    def _announce(self, pid: int) -> None:
        if self._supervisor_w is not None:
            try:
                os.write(self._supervisor_w, f"pid {pid}\n".encode())
            except OSError:
                pass

    def _stop_supervisor(self) -> None:
        if self._supervisor_w is not None:
            os.close(self._supervisor_w)  # EOF: the supervisor stops the instance and exits
            self._supervisor_w = None
        if self._supervisor is not None:
            try:
                self._supervisor.wait(timeout=STOP_TIMEOUT + 10)
            except subprocess.TimeoutExpired:
                self._supervisor.kill()
                self._supervisor.wait()
            self._supervisor = None


class _AddrInUse(Exception):
    pass

