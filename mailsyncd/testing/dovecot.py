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

* ``dovecot -c`` is run by a tiny supervisor process (``_dovecot_supervise.py``, in its own
  session; see :class:`.common.Supervisor`).  Its stdin is a pipe whose write end only this Python
  process holds.  EOF on it -- from :meth:`stop`, or because this process died in any way
  (SIGKILL, SIGTERM without handler, OOM kill, ...) -- makes it stop the instance and exit.
  It is also a child subreaper, so the daemonized master is its child and is reaped at once
  (otherwise the master is re-parented to PID 1, which in some containers reaps late: stale
  ``[dovecot] <defunct>`` entries).
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
import grp
import os
import pwd
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from ._proc import STOP_TIMEOUT, alive, is_dovecot_master, terminate_dovecot
from .common import LoginRefused, Server, Supervisor, free_ports, greeting_ok, login_works, make_traversable, tail

__all__ = ["Dovecot", "DovecotError", "DoveadmError", "dovecot_missing_reason"]

START_TIMEOUT = 15.0
_START_ATTEMPTS = 3
_SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_dovecot_supervise.py")
# Unix socket paths (sun_path) are limited to 108 bytes; Dovecot's longest socket name below
# base_dir is ~30 bytes ("token-login/imap-urlauth", "login/imap-hibernate", ...).
_MAX_BASE_DIR = 60
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


def _check_conf_path(p: str) -> str:
    if any(c in _UNSAFE_PATH_CHARS for c in p):
        raise ValueError(f"path not usable in a Dovecot config (whitespace or special characters): {p!r}")
    return p



def _login_service(protocol: str, port: int, tls_port: int) -> str:
    """A login service listening on 127.0.0.1 only (port 0: that listener is off)."""
    listeners = "".join(f"  inet_listener {name} {{\n    address = 127.0.0.1\n    port = {p}\n  }}\n"
                        for name, p in ((protocol, port), (protocol + "s", tls_port)))
    return f"service {protocol}-login {{\n{listeners}}}"


class Dovecot(Server):
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
        self.users, self.master, self.pop3, self.ssl = dict(users), master, pop3, ssl
        self.extra_conf, self.imap_capability, self.fsync = extra_conf, imap_capability, fsync
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
        self._supervisor: Supervisor | None = None
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- public API

    def __repr__(self) -> str:
        state = f"pid {self.pid}, imap {self.imap_port}" if self.pid else "stopped"
        return f"<Dovecot {self.name!r} {self.dir} ({state})>"

    @property
    def running(self) -> bool:
        return self.pid is not None and alive(self.pid)

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
            if self.pid is not None and alive(self.pid):
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
                terminate_dovecot(pid)  # safety net; a no-op when the supervisor did it
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
            make_traversable(self.dir)
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
        if stale is not None and not is_dovecot_master(stale):
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

    def _pick_ports(self) -> None:
        imap, pop3, imaps = free_ports(3)
        self.imap_port = imap
        self.pop3_port = pop3 if self.pop3 else None
        self.imaps_port = imaps if self.ssl else None

    def _conf_text(self) -> str:
        d = self.dir
        lines = [
            f"# generated by mailsyncd.testing.dovecot for instance {self.name!r} -- throwaway test server",
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
        special = "".join(f"  mailbox {box} {{\n    special_use = \\{box}\n    auto = no\n  }}\n"
                          for box in ("Drafts", "Sent", "Trash", "Junk"))
        lines.append(f"namespace inbox {{\n  inbox = yes\n  separator = {sep}\n  prefix = {prefix}\n{special}}}")
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
}}""")
        lines.append(_login_service("imap", self.imap_port, self.imaps_port or 0))
        if self.pop3:
            lines.append(_login_service("pop3", self.pop3_port, 0))  # pop3s stays off
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
                f"--- {self.start_log_path} (tail):\n{tail(self.start_log_path, 10)}\n"
                f"--- {self.log_path} (tail):\n{tail(self.log_path)}")

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
            if "Address already in use" in new_log + tail(self.start_log_path, 5):
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
            if pid is not None and not alive(pid):
                self.pid = None
                raise DovecotError(self._failure(f"master process {pid} died during startup"))
            if self._ready():
                if pid is None:
                    pid = self._read_pid()
                    if pid is not None:
                        self.pid = pid
                        self._announce(pid)
                if pid is not None:
                    return
            if time.monotonic() > deadline:
                if pid is not None:
                    terminate_dovecot(pid)
                self.pid = None
                raise DovecotError(self._failure(f"no '* OK' greeting on 127.0.0.1:{self.imap_port} "
                                                 f"within {START_TIMEOUT:.0f} s"))
            time.sleep(0.005)

    def _ready(self) -> bool:
        try:
            return greeting_ok(self.host, self.imap_port) and login_works(self.host, self.imap_port, self.users)
        except LoginRefused as e:
            raise DovecotError(self._failure(str(e))) from None

    def _spawn_supervised(self) -> int:
        """Start the supervisor, which runs ``dovecot -c``; its status."""
        if not sys.executable:  # embedded interpreter: no supervisor, atexit only
            with open(self.start_log_path, "ab") as out:
                return subprocess.call([_dovecot_bin(), "-c", self.conf_path], stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT)
        out_r, out_w = os.pipe()
        try:
            with open(self.start_log_path, "ab") as err:
                self._supervisor = Supervisor(
                    _SUPERVISOR, [_dovecot_bin(), self.conf_path, self.start_log_path, self._short_tmp or ""],
                    stdout=out_w, stderr=err)
        except BaseException:
            os.close(out_r)
            raise
        finally:
            os.close(out_w)
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
        if self._supervisor is not None:
            self._supervisor.tell(f"pid {pid}")

    def _stop_supervisor(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop(STOP_TIMEOUT + 10)  # EOF: the supervisor stops the instance and exits
            self._supervisor = None


class _AddrInUse(Exception):
    pass

