"""The one check every outgoing command argument passes: no CR, LF or NUL outside a literal.

Outside a literal a CR or LF ends the command line, so an argument carrying one (a
flag or folder name a hostile source made up) would let the rest of it run as a
command of its own on the target.  The IMAP and POP3 clients in ``sync/`` and the
front door's target login (``targetlogin.py``) call this before a byte is written; a literal (``{n}`` and its octets) is exempt,
because its length, not its content, delimits it.
"""

from __future__ import annotations

from ..errors import UnsafeCommand

_FORBIDDEN = (b"\r", b"\n", b"\0")


def check_args(command: str | bytes, args) -> None:
    """Raise UnsafeCommand if the command word or an argument holds CR, LF or NUL."""
    for arg in (command, *args):
        if arg is None:
            continue
        raw = arg.encode("utf-8", "surrogateescape") if isinstance(arg, str) else bytes(arg)
        if any(c in raw for c in _FORBIDDEN):
            name = command.decode("ascii", "replace") if isinstance(command, bytes) else str(command)
            raise UnsafeCommand(f"refused to send {name.split()[0] if name.strip() else 'a command'}: "
                                f"an argument contains CR, LF or NUL ({_preview(raw)})")


def check_line(line: str | bytes) -> None:
    """For line protocols (POP3): the whole command line, before its CRLF is added."""
    raw = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else bytes(line)
    if any(c in raw for c in _FORBIDDEN):
        word = raw.split(b" ", 1)[0][:16].decode("ascii", "replace")
        raise UnsafeCommand(f"refused to send {word or 'a command'}: it contains CR, LF or NUL ({_preview(raw)})")


def _preview(raw: bytes) -> str:
    # Never the value itself in full: it may be a password (LOGIN, PASS).
    return f"{len(raw)} bytes"
