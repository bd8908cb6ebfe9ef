"""Which flags a source may hand us: RFC 3501 system flags and keyword atoms, nothing else.

A flag is later sent to the target unquoted inside ``( )``: anything but an atom
(a space, a parenthesis, a CR/LF from a literal) would change the command's meaning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# ATOM-CHAR: any CHAR (1-127) except atom-specials: ( ) { SP CTL % * " \ ]
_ATOM = r"[^\x00-\x20\x7f-\U0010ffff(){%*\"\\\]]+"
_FLAG = re.compile(rf"\\{_ATOM}|{_ATOM}")


def is_flag(flag: str | bytes) -> bool:
    """A system flag (``\\Seen``, ``\\Answered``...: backslash + atom) or a keyword (an atom)."""
    if isinstance(flag, bytes):
        try:
            flag = flag.decode("ascii")
        except UnicodeDecodeError:
            return False
    return isinstance(flag, str) and _FLAG.fullmatch(flag) is not None


def split_flags(flags: Iterable) -> tuple[tuple, tuple]:
    """(flags that are atoms, the rest), each in their original type and order."""
    kept, dropped = [], []
    for f in flags:
        (kept if is_flag(f) else dropped).append(f)
    return tuple(kept), tuple(dropped)
