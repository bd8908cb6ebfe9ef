"""mailsyncd.heap: the process's threads share two malloc arenas (issue 16: flat memory)."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

# malloc_stats() prints one "Arena N:" block per arena to stderr (glibc)
_COUNT = r"""
import ctypes, sys, threading
if sys.argv[1] == "limit":
    from mailsyncd import heap
    assert heap.limit_arenas()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
held, ready, go = [], threading.Barrier(9), threading.Event()
def worker():
    held.append(libc.malloc(4096))   # a thread's first malloc picks (or makes) its arena
    ready.wait()
    go.wait()
threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads:
    t.start()
ready.wait()
libc.malloc_stats()
go.set()
"""


def _arenas(mode: str) -> int:
    cp = subprocess.run([sys.executable, "-c", _COUNT, mode], capture_output=True, text=True, check=True)
    return cp.stderr.count("Arena ")


def test_threads_share_two_arenas():
    try:
        ctypes.CDLL(None).malloc_stats
    except AttributeError:
        pytest.skip("not glibc: mallopt(M_ARENA_MAX) does not apply")
    assert _arenas("limit") <= 2
    assert _arenas("default") > 2       # the measure sees arenas at all: without the limit there are more
