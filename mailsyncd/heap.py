"""The C allocator's settings for a process that copies mail on several threads.

glibc gives each new thread its own malloc arena (up to 8 per core) and keeps what an arena
once held: message bodies allocated on the fetch and write threads of four connections left
a high-water mark per arena, so the process's RSS grew with the pass (issue 16).  Two arenas
are enough here: the threads take turns at the GIL anyway.

Message bodies are the large blocks.  glibc maps a block of at least M_MMAP_THRESHOLD bytes
on its own and unmaps it when freed, but by default it raises that threshold to the size of
each mapped block freed (up to 32 MiB): after the first large body, every body up to 2 MiB came
from the arenas, and the freed ones stayed there, scattered among small live blocks that keep
the arena from shrinking.  A fixed threshold turns that off: a body goes back to the system when
the batch holding it is done, so RSS follows the bytes in flight, not the largest it ever was.

Elsewhere than glibc: no change.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8
ARENAS = 2
# Bodies larger than this are mapped apart.  A mapped body costs page faults (about 0.3 s of kernel
# CPU per GB); below it (most messages, the fingerprint's 256 KiB pieces) blocks are reused from the
# arenas.  At 20,000 messages 1 MiB kept as much off the peak as 512 KiB, at less CPU (bench/README.md).
MMAP_THRESHOLD = 1024 * 1024

_done = False


def tune(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Cap malloc arenas at ``arenas`` for threads started from now on, and map blocks of at least
    ``mmap_threshold`` bytes apart; False where mallopt is missing (not glibc)."""
    global _done
    if _done:
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    _done = bool(mallopt(M_ARENA_MAX, arenas)) & bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    return _done
