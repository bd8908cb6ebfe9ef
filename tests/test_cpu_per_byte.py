"""What the engine does to every byte it copies costs little CPU (issue 16: machine-wide CPU per message).

Each message is fingerprinted when it is read (the journal and the UID map need it), its header
block is found after it lands (the 8-bit read-back) and a message sent alone is checked for bare
line ends before APPEND.  Each function is compared with the definition it replaced: the same
answer on every input (and, for the fingerprint, one copy of the message at most).  Their CPU per GB is
measured in bench/ (bench/README.md, "Memory and CPU per message"), not asserted here: tests check
correctness, never time.
"""

from __future__ import annotations

import hashlib
import random
import re
import tracemalloc

from mailsyncd.net.imapguard import crlf_only
from mailsyncd.sync import popdate
from mailsyncd.sync.logic import fingerprint
from mailsyncd.sync.popdate import header_block


def old_fingerprint(raw: bytes) -> bytes:
    """The definition (stored fingerprints, journals and remaps depend on it)."""
    return hashlib.sha256(raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").rstrip()).digest()[:16]


def old_header_block(raw: bytes) -> bytes:
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    head = raw[:popdate._HEADER_LIMIT]
    m = re.search(rb"\r?\n\r?\n", head)
    return head[:m.start()] if m else head


def old_crlf_only(b: bytes) -> bool:
    n = b.count(b"\n")
    return b.count(b"\r\n") == n and b.count(b"\r") == n


def _mail(rng: random.Random, lines: int) -> bytes:
    head = b"".join(b"X-Field-%d: %s\r\n" % (i, rng.randbytes(24).hex().encode()) for i in range(25))
    return head + b"\r\n" + b"".join(rng.randbytes(36).hex().encode() + b"\r\n" for _ in range(lines))



def _fuzz(rng: random.Random, n: int, alphabet: bytes, longest: int = 40):
    table = bytes(alphabet[i % len(alphabet)] for i in range(256))
    for _ in range(n):
        yield rng.randbytes(rng.randrange(0, longest)).translate(table)


def test_fingerprint_same_digest_for_any_line_ends():
    rng = random.Random(16)
    cases = [b"", b"\r", b"\n", b"\r\n", b"a\r", b"a\rb", b"a\r\r\nb", b"a\n\rb \r\n", b" \r\n \t"]
    cases += list(_fuzz(rng, 50000, b"ab \r\n\t"))
    cases += [_mail(rng, 50), _mail(rng, 50) + b"\r\n\r\n", _mail(rng, 50).replace(b"\r\n", b"\n")]
    for raw in cases:
        assert fingerprint(raw) == old_fingerprint(raw), raw


def test_fingerprint_of_a_crlf_message_copies_it_once():
    rng = random.Random(1)
    msgs = [_mail(rng, 600)]        # ~45 KB, CRLF line ends like every IMAP server's
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fingerprint(msgs[0])
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # the definition makes two copies at once: CRLF mapped to LF, then that without its trailing CRLF
    assert peak < 1.2 * len(msgs[0]), f"fingerprint of {len(msgs[0])} bytes allocated {peak} at its peak"


def test_header_block_same_answer_as_the_regular_expression():
    rng = random.Random(5)
    limit = popdate._HEADER_LIMIT
    try:
        for popdate._HEADER_LIMIT in (limit, 16, 5):
            for raw in _fuzz(rng, 50000, b"a\r\n :"):
                assert header_block(raw) == old_header_block(raw), (popdate._HEADER_LIMIT, raw)
    finally:
        popdate._HEADER_LIMIT = limit
    msgs = [_mail(rng, 600) for _ in range(40)]
    assert all(header_block(m) == old_header_block(m) for m in msgs)


def test_crlf_only_same_answer_as_three_counts():
    rng = random.Random(3)
    for raw in _fuzz(rng, 100000, b"a\r\n", 30):
        assert crlf_only(raw) == old_crlf_only(raw), raw
    msgs = [_mail(rng, 600) for _ in range(40)]
    assert all(crlf_only(m) for m in msgs)
