"""``python -I -S _supervise.py [--syslog SOCKET] LOG CMD ARGS...`` -- keeps a test server from
outliving its owner.

Started by :class:`mailsyncd.testing.private.PrivateServer` as the leader of a new session,
stdin = a pipe whose write end only the owner holds.  Runs CMD (stdout/stderr appended to LOG)
and waits for EOF on stdin -- the owner's ``stop()`` or the owner's death, whichever comes first
-- or for CMD to exit.  Then SIGTERMs every process of its session (the server and everything it
forked, daemonized or not, as long as it did not call setsid()), SIGKILLs what is left after
5 s, and exits.  With ``--syslog``, it also binds a datagram socket there and appends what
arrives (syslog messages: the server's ``/dev/log`` is bind-mounted to it) to LOG, and at the
end removes the socket and its directory.  It is a child subreaper, so orphaned server processes are reaped at once.
Stdlib only, no site import: ~10 ms to start.
"""

import os
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves this directory out
from _proc import kill, read_owner, reap, session_members, supervisor_setup  # noqa: E402


def _signal_all(sid: int, sig: int) -> None:
    for pid in session_members(sid):
        kill(pid, sig)


def _copy_syslog(sock, log: str) -> None:
    with open(log, "ab") as f:
        while True:
            try:
                msg = sock.recv(65536, 0x40)  # MSG_DONTWAIT
            except BlockingIOError:
                return
            f.write(msg.rstrip(b"\0\n") + b"\n")


def main(argv: list[str]) -> None:
    syslog = syslog_path = None
    if argv[0] == "--syslog":
        import socket

        syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        syslog_path = argv[1]
        syslog.bind(syslog_path)
        os.chmod(argv[1], 0o666)  # the server's unprivileged processes log too
        argv = argv[2:]
    log, cmd = argv[0], argv[1:]
    supervisor_setup()
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    child = os.posix_spawn(cmd[0], cmd, os.environ, file_actions=[
        (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)])
    os.close(null)
    os.close(out)
    me = os.getpid()
    watch = [0] + ([syslog] if syslog else [])
    while True:
        ready, _, _ = select.select(watch, [], [], 0.2)
        if syslog in ready:
            _copy_syslog(syslog, log)
            ready.remove(syslog)
        try:
            pid, _ = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pid = child
        if pid == child:
            break
        reap()
        if ready and not read_owner():
            break
    _signal_all(me, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while session_members(me) and time.monotonic() < deadline:
        reap()
        time.sleep(0.005)
    _signal_all(me, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while session_members(me) and time.monotonic() < deadline:
        reap()
        time.sleep(0.005)
    reap()
    if syslog_path:  # its directory was made for it alone (the owner may be dead)
        try:
            os.unlink(syslog_path)
            os.rmdir(os.path.dirname(syslog_path))
        except OSError:
            pass


main(sys.argv[1:])
