"""``python -I -S _supervise.py LOG CMD ARGS...`` -- keeps a test server from outliving its owner.

Started by :class:`mailsyncd.testing.private.PrivateServer` as the leader of a new session,
stdin = a pipe whose write end only the owner holds.  Runs CMD (stdout/stderr appended to LOG)
and waits for EOF on stdin -- the owner's ``stop()`` or the owner's death, whichever comes first
-- or for CMD to exit.  Then SIGTERMs every process of its session (the server and everything it
forked, daemonized or not, as long as it did not call setsid()), SIGKILLs what is left after
5 s, and exits.  It is a child subreaper, so orphaned server processes are reaped at once.
Stdlib only, no site import: ~10 ms to start.
"""

import os
import select
import signal
import sys
import time


def _session_members(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == sid:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()  # comm may contain spaces/parens
        if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            pids.append(int(entry))
    return pids


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _signal_all(sid: int, sig: int) -> None:
    for pid in _session_members(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main(argv: list[str]) -> None:
    log, cmd = argv[0], argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    child = os.posix_spawn(cmd[0], cmd, os.environ, file_actions=[
        (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)])
    os.close(null)
    os.close(out)
    me = os.getpid()
    while True:
        ready, _, _ = select.select([0], [], [], 0.2)
        try:
            pid, _ = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pid = child
        if pid == child:
            break
        _reap()
        if ready:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                break
    _signal_all(me, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while _session_members(me) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.005)
    _signal_all(me, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _session_members(me) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.005)
    _reap()


main(sys.argv[1:])
