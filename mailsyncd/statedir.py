"""Secrets at rest: what mailsyncd and mailsyncctl write is for the service user only.

The state directory holds the vault key, the database with the sealed passwords and its WAL.
Outside systemd (``UMask=0077``) a 022 umask would make every new file 0644, so both programs
set ``umask 077`` first thing, and refuse a state directory that other users can enter or read.
"""

from __future__ import annotations

import os
import stat

PRIVATE_UMASK = 0o077
STATUS_FILE = "daemon.json"     # the running daemon's record (daemon.py writes it, mailsyncctl reads it)


class StateDirError(Exception):
    """The message names the path, its mode and the fix."""


def private_umask() -> None:
    os.umask(PRIVATE_UMASK)


def check(path: str) -> None:
    """Refuse an existing ``path`` with any group or other permission bit; a missing one is created 0700 later."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise StateDirError(f"state_dir {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"state_dir {path} is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise StateDirError(f"state_dir {path} has mode {mode:04o}: other users could read the stored "
                            f"passwords and the vault key; fix it with: chmod 700 {path}")
