"""Values carried in a server's CAPABILITY list (pure)."""

from __future__ import annotations


def appendlimit(caps) -> int | None:
    """RFC 7889's server-wide ``APPENDLIMIT=N``, or None (absent, or without a number: a per-mailbox limit)."""
    for c in caps:
        c = c.decode("ascii", "replace") if isinstance(c, bytes) else str(c)
        if c.upper().startswith("APPENDLIMIT=") and c[12:].isdigit():
            return int(c[12:])
    return None
