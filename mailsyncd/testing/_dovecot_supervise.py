"""``python -I -S _dovecot_supervise.py DOVECOT CONF START_LOG [DIR_TO_REMOVE]`` -- keeps a test
Dovecot from outliving its owner.

Started by :meth:`mailsyncd.testing.dovecot.Dovecot.start` in its own session, stdin = a pipe
only the owner holds.  Becomes a child subreaper (so the daemonized master is *our* child and
gets reaped at once, instead of lingering as a zombie of PID 1), runs ``dovecot -c CONF`` and
reports its exit status on stdout.  Then waits for EOF on stdin -- the owner's stop() or the
owner's death, whichever comes first -- and stops the instance.  Lines ``pid N`` on stdin name
the master (needed only where prctl is unavailable).  Stdlib only, no site import: ~10 ms to start.
"""

import os
import select
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves this directory out
from _proc import children, is_dovecot_master, read_owner, reap, supervisor_setup, terminate_dovecot  # noqa: E402


def main(argv: list[str]) -> None:
    dovecot, conf, start_log = argv[:3]
    cleanup = argv[3] if len(argv) > 3 else ""
    parent = os.getppid()
    supervisor_setup()
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
        reap()
        if ready:
            data = read_owner()
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.startswith(b"pid "):
                    announced.add(int(line[4:]))
    me = os.getpid()
    for pid in announced | {p for p in children(me) if is_dovecot_master(p)}:
        terminate_dovecot(pid)
    deadline = time.monotonic() + 5.0
    while True:
        reap()
        if not children(me) or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    if cleanup and os.getppid() != parent:  # parent gone: nobody else will remove it
        import shutil

        shutil.rmtree(cleanup, ignore_errors=True)


main(sys.argv[1:])
