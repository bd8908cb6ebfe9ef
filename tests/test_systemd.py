"""systemd integration: sd_notify datagrams, the watchdog, socket activation, and the units."""

from __future__ import annotations

import errno
import fcntl
import imaplib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import pytest
from proxyenv import Daemon
from seed import Msg, make_message, seed
from syncenv import REPO
from twisted.internet import task

from mailsyncd import systemd as sd
from mailsyncd.testing import free_port

pytestmark = pytest.mark.timeout(120)

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
UNITS = os.path.join(REPO, "systemd")
CHECK_UNITS = os.path.join(REPO, "scripts", "check-units.sh")


@pytest.fixture
def short_dir(tmp_path):
    """A directory whose unix socket paths fit in sun_path (108 bytes)."""
    if len(str(tmp_path)) < 80:
        yield str(tmp_path)
        return
    d = tempfile.mkdtemp(prefix="sd-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _require_systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        if IN_CI:
            pytest.fail("CI=true but systemd-analyze is not installed (Debian package: systemd)", pytrace=False)
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")


@pytest.fixture
def receiver(short_dir, monkeypatch):
    """A bound datagram socket standing in for systemd's notify socket; NOTIFY_SOCKET points to it."""
    path = os.path.join(short_dir, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield s
    s.close()


def _nothing_more(s: socket.socket) -> None:
    s.settimeout(0.05)
    with pytest.raises(TimeoutError):
        print(s.recv(4096))
    s.settimeout(5)


# -- Notifier -------------------------------------------------------------------------------

def test_notifier_sends_exact_datagrams(receiver):
    n = sd.Notifier()
    assert n.enabled
    assert n.ready() is True
    assert receiver.recv(4096) == b"READY=1"
    n.ready("3 accounts syncing, 12 sessions")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=3 accounts syncing, 12 sessions"
    n.status("reload failed: domains: required")
    assert receiver.recv(4096) == b"STATUS=reload failed: domains: required"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    m = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", receiver.recv(4096))
    assert m and before <= int(m.group(1)) <= after
    n.stopping()
    assert receiver.recv(4096) == b"STOPPING=1"
    n.watchdog()
    assert receiver.recv(4096) == b"WATCHDOG=1"
    _nothing_more(receiver)


def test_status_is_utf8_on_one_line(receiver):
    n = sd.Notifier()
    n.status("syncing 已发送\nREADY=1")      # a newline must not smuggle in another assignment
    assert receiver.recv(4096) == "STATUS=syncing 已发送 READY=1".encode()


def test_abstract_socket(monkeypatch):
    name = f"mailsyncd-test-{os.getpid()}-{os.urandom(4).hex()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd.Notifier().ready("up") is True
        assert s.recv(4096) == b"READY=1\nSTATUS=up"


def test_noop_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = sd.Notifier()
    assert not n.enabled
    for call in (n.ready, n.stopping, n.watchdog, n.reloading, lambda: n.status("x"), lambda: n.ready("x")):
        assert call() is False


def test_survives_a_deleted_socket_and_reconnects(receiver, caplog):
    caplog.set_level("DEBUG", logger="mailsyncd.systemd")
    path = os.environ["NOTIFY_SOCKET"]
    n = sd.Notifier()
    assert n.ready()
    assert receiver.recv(4096) == b"READY=1"
    receiver.close()
    os.unlink(path)
    assert n.status("nobody listens") is False          # no exception
    assert n.watchdog() is False
    assert "event=sd_notify_failed" in caplog.text
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as again:   # e.g. systemd re-executed
        again.bind(path)
        again.settimeout(5)
        assert n.status("back") is True
        assert again.recv(4096) == b"STATUS=back"


# -- the watchdog ------------------------------------------------------------------------------

@pytest.mark.parametrize(("usec", "pid", "expected"), [
    ("30000000", None, 15.0),
    ("30000000", "self", 15.0),
    ("30000000", "other", None),
    ("1000", None, 0.0005),
    (None, None, None),
    ("", None, None),
    ("0", None, None),
    ("soon", None, None),
])
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for k, v in (("WATCHDOG_USEC", usec),
                 ("WATCHDOG_PID", {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid))):
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    assert sd.Notifier().watchdog_interval() == expected
    assert sd.watchdog_interval() == expected


def test_watchdog_pings_from_the_reactor(receiver, monkeypatch):
    clock = task.Clock()
    n = sd.Notifier()
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sd.start_watchdog(clock, n) is None
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    call = sd.start_watchdog(clock, n)
    assert call is not None and call.running and call.interval == 1.0
    assert receiver.recv(4096) == b"WATCHDOG=1"      # at once
    _nothing_more(receiver)
    clock.advance(1.0)
    assert receiver.recv(4096) == b"WATCHDOG=1"
    call.stop()
    clock.advance(5)
    _nothing_more(receiver)


# -- socket activation ---------------------------------------------------------------------------

def test_listen_fds_ignores_another_pids_fds_and_clears_the_environment(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_FDNAMES", "imap:imaps")
    assert sd.listen_fds() == {}
    assert not [k for k in os.environ if k.startswith("LISTEN_")]
    assert sd.listen_fds() == {}     # nothing passed at all


def test_adopt_refuses_what_is_not_a_listening_tcp_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(ValueError, match="not a TCP socket"):
            sd.adopt(None, udp.fileno(), None)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        with pytest.raises(OSError, match="not listening"):
            sd.adopt(None, tcp.fileno(), None)


# The child: puts the inherited sockets at fds 3.. (as systemd does, unless systemd-socket-activate
# already did), reports what listen_fds() found, adopts both into a reactor (imaps with TLS from the
# project's own tls.server_options) and greets each connection with "* OK <fd name>".
CHILD = r"""
import fcntl, json, os, sys
if "LISTEN_PID" not in os.environ:            # the test's own launcher
    for i, fd in enumerate(int(x) for x in sys.argv[3:]):
        os.dup2(fd, 3 + i)
        os.close(fd)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(sys.argv) - 3),
                      LISTEN_FDNAMES="imap:imaps")
# Importing twisted.internet.endpoints deletes LISTEN_PID and LISTEN_FDS (Twisted's ListenFDs).
order = os.environ.get("IMPORT_ORDER", "")
if order == "twisted-first":
    import twisted.internet.endpoints
from mailsyncd import systemd as sd
if order == "twisted-later":
    import twisted.internet.endpoints
fds = sd.listen_fds()
assert sd.listen_fds() == {}, "a second call must find nothing"
info = {"fds": fds,
        "cloexec": [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for v in fds.values() for fd in v],
        "env": sorted(k for k in os.environ if k.startswith("LISTEN_"))}
from twisted.internet import protocol, reactor
from mailsyncd.proxy.tls import server_options
served = []
class Greet(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"* OK " + self.factory.name.encode() + b"\r\n")
        self.transport.loseConnection()
        served.append(self.factory.name)
        if len(served) == 2:
            reactor.callLater(0.2, reactor.stop)
ports, closed = {}, []
for name, tls in (("imap", None), ("imaps", server_options(sys.argv[1], sys.argv[2]))):
    f = protocol.Factory.forProtocol(Greet)
    f.name = name
    port = sd.adopt(reactor, fds[name][0], f, tls_options=tls)
    closed.append(not os.path.exists(f"/proc/self/fd/{fds[name][0]}"))
    host = port.getHost()
    ports[name] = [type(host).__name__, host.host, host.port]
info["ports"] = ports
info["closed"] = closed
print(json.dumps(info), flush=True)
reactor.callLater(60, reactor.stop)
reactor.run()
"""


def _listener(family: int, host: str) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(16)
    return s


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _greeting(port: int, host: str = "127.0.0.1", ctx: ssl.SSLContext | None = None) -> bytes:
    with socket.create_connection((host, port), timeout=10) as raw:
        if ctx is None:
            return raw.makefile("rb").readline()
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.makefile("rb").readline()


@pytest.mark.parametrize("order", ["", "twisted-first", "twisted-later"])
def test_listen_fds_names_and_adopt_into_the_reactor(tmp_path, test_cert, order):
    imap = _listener(socket.AF_INET, "127.0.0.1")
    v6 = _ipv6_loopback()
    imaps = _listener(socket.AF_INET6, "::1") if v6 else _listener(socket.AF_INET, "127.0.0.1")
    # Far above 3 and 4, so placing them there in the child cannot clobber one with the other.
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 20) for s in (imap, imaps)]
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), *test_cert, *map(str, high)], pass_fds=high,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")},
                                 "IMPORT_ORDER": order})
    try:
        for fd in high:
            os.close(fd)
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode()
        info = json.loads(line)
        assert info["fds"] == {"imap": [3], "imaps": [4]}
        assert info["cloexec"] == [True, True]
        assert info["env"] == []                    # children of the daemon inherit no LISTEN_*
        assert info["closed"] == [True, True]       # Twisted listens on its own duplicates
        assert info["ports"]["imap"] == ["IPv4Address", "127.0.0.1", imap.getsockname()[1]]
        assert info["ports"]["imaps"][0] == ("IPv6Address" if v6 else "IPv4Address")
        imap.close()     # the child's copies keep listening
        imaps.close()
        assert _greeting(info["ports"]["imap"][2]) == b"* OK imap\r\n"
        ctx = ssl.create_default_context(cafile=test_cert[0])
        host = "::1" if v6 else "127.0.0.1"
        assert _greeting(info["ports"]["imaps"][2], host, ctx) == b"* OK imaps\r\n"
        assert proc.wait(20) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
def test_socket_activation_by_systemds_own_tool(tmp_path, test_cert):
    """systemd-socket-activate sets LISTEN_* and FileDescriptorName-style names exactly as PID 1 does."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    p1, p2 = free_port(), free_port()
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{p1}", "-l", f"127.0.0.1:{p2}",
                             "--fdname=imap:imaps", sys.executable, str(script), *test_cert],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        deadline = time.monotonic() + 10
        while True:      # it binds first, then starts the child on the first connection
            try:
                first = socket.create_connection(("127.0.0.1", p1), timeout=10)
                break
            except ConnectionRefusedError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
                time.sleep(0.05)
        with first:
            assert first.makefile("rb").readline() == b"* OK imap\r\n"
        info = json.loads(proc.stdout.readline())
        assert info["fds"] == {"imap": [3], "imaps": [4]}
        assert info["env"] == [] and info["cloexec"] == [True, True]
        ctx = ssl.create_default_context(cafile=test_cert[0])
        assert _greeting(p2, ctx=ctx) == b"* OK imaps\r\n"
        assert proc.wait(20) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# -- the units ------------------------------------------------------------------------------------

def _unit(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(os.path.join(UNITS, name)) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", ";", "[")):
                k, _, v = line.partition("=")
                out.setdefault(k, []).append(v)
    return out


def test_units_fit_together():
    svc = _unit("mailsyncd.service")
    assert svc["Type"] == ["notify"] and svc["NotifyAccess"] == ["main"]
    assert svc["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert svc["WatchdogSec"] == ["30"]
    assert "Sockets" not in svc      # the socket units' Service= is the link: disabling one drops it
    assert svc["StateDirectory"] == ["mailsyncd"] and svc["DynamicUser"] == ["yes"]
    for name, port in (("imap", "143"), ("imaps", "993")):
        sock = _unit(f"mailsyncd-{name}.socket")
        assert sock["ListenStream"] == [port]
        assert sock["FileDescriptorName"] == [name]     # the names the daemon looks for
        assert sock["Service"] == ["mailsyncd.service"]


def test_check_units_passes():
    _require_systemd_analyze()
    r = subprocess.run(["bash", CHECK_UNITS], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify OK" in r.stdout
    m = re.search(r"exposure (\d+\.\d) <= 2\.0", r.stdout)
    assert m and float(m.group(1)) <= 2.0, r.stdout


@pytest.mark.parametrize("breakage", ["unknown key", "weaker sandbox"])
def test_check_units_fails_on_a_bad_unit(tmp_path, breakage):
    _require_systemd_analyze()
    shutil.copytree(UNITS, tmp_path / "systemd")
    (tmp_path / "scripts").mkdir()
    shutil.copy(CHECK_UNITS, tmp_path / "scripts")
    if breakage == "unknown key":
        p = tmp_path / "systemd" / "mailsyncd-imaps.socket"
        p.write_text(p.read_text().replace("[Socket]\n", "[Socket]\nListenStreem=994\n"))
    else:
        p = tmp_path / "systemd" / "mailsyncd.service"
        p.write_text("".join(line for line in p.read_text().splitlines(True)
                             if not line.startswith(("SystemCallFilter", "ProtectKernel", "PrivateUsers"))))
    r = subprocess.run(["bash", str(tmp_path / "scripts" / "check-units.sh")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "check-units: FAIL:" in r.stderr
    assert ("ListenStreem" in r.stderr) if breakage == "unknown key" else ("above 2.0" in r.stderr)


# -- the daemon inside the unit's seccomp sandbox ----------------------------------------------
# SystemCallFilter=, SystemCallErrorNumber=, RestrictAddressFamilies= and MemoryDenyWriteExecute=
# are seccomp filters: they can be reproduced without systemd (libseccomp's Python binding, from
# Debian's python3-seccomp, for the system python), to show the real daemon still works.

SANDBOX = r"""
import errno, json, os, sys
import seccomp
spec = json.loads(os.environ.pop("SANDBOX_SPEC"))
filters = []
if spec["allow"] is not None:
    f = seccomp.SyscallFilter(seccomp.ERRNO(spec["errno"]))
    for name in spec["allow"]:
        try:
            f.add_rule(seccomp.ALLOW, name)
        except Exception:
            pass                      # not a system call on this architecture
    filters.append(f)
if spec["families"] is not None:
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    for fam in range(1, 46):
        if fam not in spec["families"]:
            f.add_rule_exactly(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, fam))
    filters.append(f)
if spec["mdwe"]:                      # as systemd 252 implements MemoryDenyWriteExecute=
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    W, X = 0x2, 0x4
    f.add_rule_exactly(seccomp.ERRNO(errno.EPERM), "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, W | X, W | X))
    for name in ("mprotect", "pkey_mprotect"):
        f.add_rule_exactly(seccomp.ERRNO(errno.EPERM), name, seccomp.Arg(2, seccomp.MASKED_EQ, X, X))
    f.add_rule_exactly(seccomp.ERRNO(errno.EPERM), "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, 0o100000, 0o100000))
    filters.append(f)
for f in reversed(filters):           # the allow list last: it does not allow seccomp() itself
    f.load()
os.execv(sys.argv[1], sys.argv[1:])
"""


def _syscall_group(name: str, seen: set[str] | None = None) -> set[str]:
    if not name.startswith("@"):
        return {name}
    seen = set() if seen is None else seen
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                         check=True).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#") or word in seen:
            continue
        seen.add(word)
        calls |= _syscall_group(word, seen)
    return calls


def _sandbox_spec() -> dict:
    """The service's seccomp settings, as written in systemd/mailsyncd.service."""
    svc = _unit("mailsyncd.service")
    allow: set[str] | None = None
    for value in svc.get("SystemCallFilter", []):
        deny = value.startswith("~")
        names = set().union(*(_syscall_group(w) for w in value.lstrip("~").split()))
        if allow is None:
            assert not deny, "the emulation handles an allow list first, then denials"
            allow = names
        else:
            allow = allow - names if deny else allow | names
    families = None
    if svc.get("RestrictAddressFamilies"):
        families = [int(getattr(socket, w)) for w in svc["RestrictAddressFamilies"][-1].split()]
    err = svc.get("SystemCallErrorNumber", ["EPERM"])[-1]
    return {"allow": sorted(allow) if allow is not None else None, "families": families,
            "errno": getattr(errno, err), "mdwe": svc.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes"}


class SandboxedDaemon(Daemon):
    """The real daemon as the unit runs it: socket-activated (systemd-socket-activate passes the
    config's two ports as fds named imap and imaps), with $NOTIFY_SOCKET and $WATCHDOG_USEC, inside
    the unit's seccomp filters."""

    def __init__(self, *args, sandbox: str, notify_socket: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.sandbox = sandbox
        self.notify_socket = notify_socket

    def start(self, timeout: float = 30) -> SandboxedDaemon:
        # systemd-socket-activate passes on only the variables named with -E.
        env = {"PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "SANDBOX_SPEC": json.dumps(_sandbox_spec()), "NOTIFY_SOCKET": self.notify_socket,
               "WATCHDOG_USEC": "1000000", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", f"127.0.0.1:{self.imap_port}", "-l", f"127.0.0.1:{self.imaps_port}",
             "--fdname=imap:imaps", *(f"--setenv={k}={v}" for k, v in env.items()),
             "/usr/bin/python3", "-I", self.sandbox,
             sys.executable, "-m", "mailsyncd.cli.daemon", "--config", self.config_path, "--log-level", "debug"],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while True:      # the first connection starts the daemon, which then answers it
            try:
                first = socket.create_connection(("127.0.0.1", self.imap_port), timeout=timeout)
                break
            except ConnectionRefusedError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"systemd-socket-activate did not listen:\n{self.log()}") from None
                time.sleep(0.05)
        with first:
            assert first.makefile("rb").readline().startswith(b"* OK"), self.log()
        self.wait_log("event=ready", timeout)
        return self


def _seccomp_missing() -> str | None:
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze is not installed"
    try:
        subprocess.run(["/usr/bin/python3", "-I", "-c", "import seccomp"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "needs /usr/bin/python3 with libseccomp's binding (Debian package python3-seccomp)"
    return None


def _datagrams(s: socket.socket) -> list[bytes]:
    out = []
    s.setblocking(False)
    try:
        while True:
            out.append(s.recv(4096))
    except BlockingIOError:
        pass
    s.setblocking(True)
    return out


@pytest.mark.dovecot
@pytest.mark.skipif(_seccomp_missing() is not None, reason=str(_seccomp_missing()))
def test_daemon_under_the_units_seccomp_filter_socket_activated(make_dovecot, tmp_path, test_cert, short_dir):
    from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
    user = "alice@example.com"
    src = make_dovecot("source", SOURCE_USERS)
    tgt = make_dovecot("target", TARGET_USERS, master=MASTER, ssl=test_cert)
    pair = DovecotPair(src, tgt, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
    seed("127.0.0.1", src.imap_port, user, SOURCE_USERS[user],
         {"INBOX": [Msg(make_message(i)) for i in range(3)], "已发送": [Msg(make_message(9))]})
    sandbox = tmp_path / "sandbox.py"
    sandbox.write_text(SANDBOX)
    notify_path = os.path.join(short_dir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    # TLS everywhere: the front door serves it (STARTTLS, and 993 on an adopted fd) and uses it to
    # the new server (Twisted + pyOpenSSL); the sync engine reaches the new server with ssl.
    target = {"security": "tls", "port": tgt.imaps_port, "ca_file": test_cert[0]}
    d = SandboxedDaemon(tmp_path, pair, test_cert, target=target, sandbox=str(sandbox), notify_socket=notify_path)
    try:
        d.start()
        log = d.log()
        assert "event=listen name=imap from=systemd fds=[3]" in log
        assert "event=listen name=imaps from=systemd fds=[4]" in log
        ctx = ssl.create_default_context(cafile=test_cert[0])
        c = imaplib.IMAP4_SSL("127.0.0.1", d.imaps_port, ssl_context=ctx)
        assert c.login(user, SOURCE_USERS[user])[0] == "OK"      # source check, argon2, vault, target login
        assert c.select("INBOX")[0] == "OK"
        c.logout()
        c = imaplib.IMAP4("127.0.0.1", d.imap_port)
        c.starttls(ssl_context=ctx)
        assert c.login(user, SOURCE_USERS[user])[0] == "OK"      # this time from the verifier
        c.logout()
        d.wait_log(f"event=pass_done account={user} ok=True", timeout=60)
        d.proc.send_signal(signal.SIGHUP)
        d.wait_log("event=reloaded", timeout=20)
        time.sleep(1.2)                                           # one more watchdog ping
        assert d.alive()
        assert d.stop() == 0
        got = _datagrams(notify)
    finally:
        d.stop()
        notify.close()
    assert got[0].startswith(b"READY=1\nSTATUS=accounts: "), got
    assert got.count(b"WATCHDOG=1") >= 2, got
    i = next(i for i, g in enumerate(got) if g.startswith(b"RELOADING=1\nMONOTONIC_USEC="))
    assert any(g.startswith(b"READY=1") for g in got[i + 1:]), got
    assert got[-1] == b"STOPPING=1" or b"STOPPING=1" in got, got
