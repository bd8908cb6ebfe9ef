"""What a one-off copy costs before it copies anything (issue 16: peak RSS of mailsyncctl sync).

mailsyncd.heap: the process's threads share two malloc arenas; and reading a config and running
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
