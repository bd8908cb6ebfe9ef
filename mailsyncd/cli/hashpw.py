"""``mailsyncctl hash-password``: the argon2 hash of the dashboard's password, for ``admin.password_hash``.

It needs no config file and no daemon: the password is read from the terminal (twice) or one line of a
pipe, hashed here, and only the hash is printed; the daemon checks passwords in web/access.py.
"""

from __future__ import annotations

import getpass
import sys

from argon2 import PasswordHasher


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` for ``admin.password_hash`` (argon2-cffi's defaults)."""
    if not password:
        raise ValueError("empty password")
    return PasswordHasher().hash(password)


def cmd_hash_password(args) -> int:
    """``mailsyncctl hash-password``: the password twice from the terminal (once from stdin when it is
    not one); prints the hash for ``admin.password_hash``."""
    stdin = getattr(args, "stdin", None) or sys.stdin
    if stdin.isatty():
        try:
            first = getpass.getpass("Dashboard password: ")
            again = getpass.getpass("Same password again: ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 1
        if first != again:
            print("mailsyncctl: the passwords differ; nothing changed", file=sys.stderr)
            return 1
    else:
        first = stdin.readline().rstrip("\r\n")
    if not first:
        print("mailsyncctl: empty password", file=sys.stderr)
        return 1
    if len(first) < 12:
        print("mailsyncctl: warning: a password shorter than 12 characters is easy to guess", file=sys.stderr)
    hashed = hash_password(first)
    del first
    print(hashed)
    print(f'put it in the config, then reload:\n  admin:\n    password_hash: "{hashed}"', file=sys.stderr)
    return 0

