"""Process helpers (Linux /proc) for the test-server supervisors and their owners.

Stdlib only and no package imports: the supervisors load this file by path (``python -I -S``,
~10 ms to start) as well as :mod:`mailsyncd.testing.dovecot` importing it.
"""

from __future__ import annotations

import os
import signal
import time

STOP_TIMEOUT = 10.0
# Dovecot processes serving a client connection (the rest -- anvil, auth, config, log, stats --
# is stopped by the master in its own order)
_CLIENT_SERVICES = {"imap", "pop3", "imap-login", "pop3-login"}


def _fields(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after "(comm)": state, ppid, pgrp, session, ..."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()  # comm may contain spaces/parens


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def alive(pid: int) -> bool:
    st = _fields(pid)
    return st is not None and st[0] not in (b"Z", b"X")  # a zombie has released everything


def session_members(sid: int, only=None) -> list[int]:
    """Live processes of session ``sid`` (other than ``sid`` itself when ``only`` is None), or
    those for which ``only(pid)`` is true."""
    out = []
    for pid in _pids():
        st = _fields(pid)
        if st is None or int(st[3]) != sid or st[0] in (b"Z", b"X"):
            continue
        if (pid != sid) if only is None else only(pid):
            out.append(pid)
    return out


def children(ppid: int) -> list[int]:
    return [pid for pid in _pids() if (st := _fields(pid)) is not None and int(st[1]) == ppid]


def kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def supervisor_setup() -> None:
    """Ignore Ctrl-C (the owner says when to stop) and become a child subreaper: orphaned
    (daemonized) descendants become our children and are reaped at once, instead of lingering
    as zombies of PID 1, which in some containers reaps late."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def read_owner() -> bytes:
    """What the owner wrote on our stdin; b"" once it closed it (stop) or died."""
    try:
        return os.read(0, 4096)
    except OSError:
        return b""


# ---------------------------------------------------------------- Dovecot's processes


def _title(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].strip()
    except OSError:
        return b""


def is_dovecot_process(pid: int) -> bool:
    """Title "/usr/sbin/dovecot ..." (master) or "dovecot[-INSTANCE]/SERVICE" (children)."""
    first = _title(pid).split(b" ")[0]
    return first.startswith(b"dovecot") or os.path.basename(first) == b"dovecot"


def dovecot_members(sid: int) -> list[int]:
    """Live Dovecot processes of session ``sid`` (never anything else, should the pid of a
    long-dead master have been reused)."""
    return session_members(sid, only=is_dovecot_process)


def is_dovecot_master(pid: int) -> bool:
    st = _fields(pid)
    if st is None or int(st[3]) != pid:  # the master is a session leader (setsid)
        return False
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "dovecot"
    except OSError:
        return False


def _role(pid: int) -> str:
    """Dovecot service of a child process, from its title ("dovecot-NAME/imap" -> "imap")."""
    return _title(pid).decode("utf-8", "replace").split(" ")[0].rpartition("/")[2]


def terminate_dovecot(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the master ``pid``, SIGKILL after ``timeout``, then SIGKILL its whole session.

    Speed-up: after SIGTERM the master stops its children at once but then sits in a fixed
    ~1 s drain wait (MAX_DIE_WAIT_MSECS) with only its log process left.  Once every other
    child has exited cleanly, the log process gets SIGTERM (it flushes and exits) and the
    master -- which has nothing left to do -- SIGKILL.  A stop takes ~10 ms instead of ~1.1 s.
    """
    if is_dovecot_master(pid):
        kill(pid, signal.SIGTERM)
        # The master does not reliably stop imap/pop3 processes that still serve a client
        # (they outlive it for seconds): SIGTERM them too -- they say BYE and exit cleanly.
        for p in dovecot_members(pid):
            if p != pid and _role(p) in _CLIENT_SERVICES:
                kill(p, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        log_termed = False
        while alive(pid) and time.monotonic() < deadline:
            others = [p for p in dovecot_members(pid) if p != pid]
            logs = [p for p in others if _role(p) == "log"]
            if len(logs) == len(others):  # only the master (and its log process) remain
                if logs and not log_termed:
                    for p in logs:
                        kill(p, signal.SIGTERM)
                    log_termed = True
                elif not logs:
                    kill(pid, signal.SIGKILL)
                    break
            time.sleep(0.003)
        if alive(pid):
            kill(pid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 5.0
        while alive(pid) and time.monotonic() < kill_deadline:
            time.sleep(0.002)
    # orphans: children the master did not take down (or all of them after SIGKILL)
    deadline = time.monotonic() + 5.0
    while True:
        members = dovecot_members(pid)
        if not members:
            break
        for p in members:
            kill(p, signal.SIGKILL)
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
