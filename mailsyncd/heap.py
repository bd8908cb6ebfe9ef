"""The C allocator's settings for a process that copies mail on several threads.

glibc gives each new thread its own malloc arena (up to 8 per core) and keeps what an arena
once held: message bodies allocated on the fetch and write threads of four connections left
a high-water mark per arena, so the process's RSS grew with the pass (issue 16).  Two arenas
are enough here: the threads take turns at the GIL anyway.  Elsewhere than glibc: no change.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8    # glibc's mallopt parameter numbers (malloc.h)
ARENAS = 2

_done = False


def limit_arenas(n: int = ARENAS) -> bool:
    """Cap malloc arenas at ``n`` for threads started from now on; False where mallopt is missing."""
    global _done
    if _done:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    _done = bool(mallopt(M_ARENA_MAX, n))
    return _done
