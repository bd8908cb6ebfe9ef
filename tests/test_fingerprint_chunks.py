"""The content fingerprint of a large message is computed a piece at a time: the same digest as
the whole-message definition (stored fingerprints, journals and remaps depend on it), without
copies of the message (issue 16: memory flat in the mailbox and message sizes)."""

from __future__ import annotations

import hashlib
import random
import tracemalloc

from mailsyncd.sync import logic
from mailsyncd.sync.logic import fingerprint

MIB = 1024**2


def reference(raw: bytes) -> bytes:
    """The definition, as it was written before the pieces."""
    norm = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").rstrip()
    return hashlib.sha256(norm).digest()[:16]


def test_same_digest_as_the_definition_across_piece_boundaries():
    chunk = logic._FP_CHUNK
    rng = random.Random(16)
    cases = [b"", b"\r\n", b" \t\r\n", b"x", b"a\r\nb\rc\nd\r\n\r\n  \t"]
    for edge in (chunk - 2, chunk - 1, chunk, chunk + 1, 2 * chunk - 1, 2 * chunk):
        for mid in (b"\r\n", b"\r", b"\n", b"\r\r\n", b"\n\r", b" \r\n"):
            body = b"y" * (edge - 1) + mid + b"z" * 100
            cases += [body, body + b"\r\n \r\n\t", body[:edge + 1] + b" " * 5000 + b"\r\n" * 3000]
    cases.append(b"w" + b"\r\n" * (chunk + 10))            # whitespace tail longer than the first look
    cases.append(b" \r\n" * (chunk // 2))                   # nothing but whitespace
    alphabet = bytes(b"ab \r\n\t"[i % 6] for i in range(256))
    for _ in range(20):
        cases.append(rng.randbytes(rng.randrange(chunk - 50, 3 * chunk)).translate(alphabet))
    for raw in cases:
        assert fingerprint(raw) == reference(raw), (len(raw), raw[:20], raw[-20:])


def test_a_large_message_is_hashed_without_copies_of_it():
    raw = (b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n") * (8 * MIB // 72)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        got = fingerprint(raw)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert got == reference(raw)
    assert peak < 2 * MIB, f"fingerprint of an 8 MiB message allocated {peak} bytes at its peak"
