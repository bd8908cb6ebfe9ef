"""What a one-off copy costs before it copies anything (issue 16: peak RSS of mailsyncctl sync).

mailsyncd.heap: the process's threads share two malloc arenas, and a freed message body goes back
to the system instead of staying in an arena; and reading a config and running
the engine load neither Twisted (the front door's) nor dnspython (detection's): about 18 MB of
RSS that mailsyncctl sync held for nothing."""

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
    assert heap.tune()
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


# Four threads fetch and free bodies of the corpus's largest sizes (1.1 to 2.7 MB) a batch at a
# time, while small blocks made meanwhile outlive them (as the store's and the parser's do); then the
# free bytes the arenas keep (mallinfo2's fordblks, summed over arenas) once every body is gone.
_KEPT = r"""
import ctypes, random, sys, threading
from mailsyncd import heap
assert heap.tune()
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
small = []
def connection(seed):
    rng, batch = random.Random(seed), []
    for _ in range(150):
        batch.append(bytes(rng.randrange(1_100_000, 2_700_000)))
        small.append(bytes(rng.randrange(100, 5000)))
        if len(batch) > 3:
            batch.pop(0)
threads = [threading.Thread(target=connection, args=(s,)) for s in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(libc.mallinfo2().fordblks)
"""


def test_freed_bodies_are_not_kept_by_the_allocator():
    """glibc raised its mmap threshold to the largest body freed, and the bodies after it came from the
    arenas, which kept them once freed (38 MiB here, beside 16 MiB of bodies in flight): the RSS of a
    first sync was the most it ever held, not what it holds."""
    try:
        ctypes.CDLL(None).mallinfo2
    except AttributeError:
        pytest.skip("not glibc >= 2.33: no mallinfo2, and heap.tune() changes nothing elsewhere")
    kept = int(subprocess.run([sys.executable, "-c", _KEPT], capture_output=True, text=True,
                              check=True).stdout)
    assert kept < 4 * 2**20, f"{kept / 2**20:.1f} MiB of freed memory kept in the arenas"


_IMPORTS = r"""
import sys
import mailsyncd.cli.ctl, mailsyncd.cli.account, mailsyncd.cli.render, mailsyncd.cli.synclease
import mailsyncd.config, mailsyncd.store, mailsyncd.vault
import mailsyncd.sync.account, mailsyncd.sync.folder, mailsyncd.sync.pop3, mailsyncd.sync.progress
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_the_copy_path_loads_neither_twisted_nor_dnspython():
    top = subprocess.run([sys.executable, "-c", _IMPORTS], capture_output=True, text=True,
                         check=True).stdout.split()
    assert "mailsyncd" in top and "imapclient" in top
    assert not {"twisted", "dns", "OpenSSL"} & set(top), top


def test_a_password_file_loads_no_vault(tmp_path):
    """The vault (cryptography, argon2: 6 MB) only where the password comes from it."""
    pwf = tmp_path / "pw"
    pwf.write_text("secret\n")
    code = ("import sys, argparse; from mailsyncd.cli.common import account_password; "
            f"pw = account_password(None, argparse.Namespace(password_file={str(pwf)!r}, address='a@b')); "
            "print(pw, 'cryptography' in sys.modules, 'argon2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["secret", "False", "False"], out


def test_detection_names_still_come_from_providers():
    from mailsyncd import providers
    from mailsyncd.providers import steps
    assert providers.detect is steps.detect and providers.DetectionFailed is steps.DetectionFailed
    with pytest.raises(AttributeError):
        providers.no_such_name
