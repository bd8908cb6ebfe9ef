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
    except PermissionError:
        check_access(path)      # says what to do instead
        raise
    except OSError as e:
        raise StateDirError(f"state_dir {path}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"state_dir {path} is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise StateDirError(f"state_dir {path} has mode {mode:04o}: other users could read the stored "
                            f"passwords and the vault key; fix it with: chmod 700 {path}")


# systemd's DynamicUser= names the user after the unit; a transient unit with the same User= shares its uid
AS_SERVICE_USER = ("systemd-run --pipe --wait -p DynamicUser=yes -p User=mailsyncd -p StateDirectory=mailsyncd "
                   "-p ConfigurationDirectory=mailsyncd mailsyncctl ...")


def check_access(path: str) -> None:
    """Refuse, with what to do instead, a state directory this user cannot use: the service's, as seen
    by an admin who is not root (with DynamicUser= it belongs to a user that exists while it runs)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        if os.access(parent, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            return
    except PermissionError:
        pass
    else:
        if os.access(path, os.R_OK | os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            return
    raise StateDirError(f"cannot use the state in {path}: permission denied. It belongs to the mailsyncd "
                        f"service: run this as root (sudo mailsyncctl ...) or as the service's user "
                        f"({AS_SERVICE_USER})")
