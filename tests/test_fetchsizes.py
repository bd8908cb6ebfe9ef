"""A folder's listing of UIDs and sizes (the first step of every copy) costs little per message
(issue 16: memory that does not grow with the mailbox): UID -> RFC822.SIZE, no dict per message."""

from __future__ import annotations

import tracemalloc

import pytest

from mailsyncd.errors import ProtocolError
from mailsyncd.net.imap import parse_fetch_data, sizes_from_fetch_data


def general(data: list) -> dict[int, int]:
    """What the engine computed before: the general FETCH parser, then the size of each."""
    return {uid: int(d.get(b"RFC822.SIZE", 0)) for uid, d in parse_fetch_data(list(data)).items()}


def test_same_answer_as_the_general_parser():
    data = [b"1 (UID 10 RFC822.SIZE 2048)",
            b"2 (RFC822.SIZE 77 UID 11)",
            b"3 (uid 12 rfc822.size 5)",
            b"4 (UID 13 RFC822.SIZE 9 FLAGS (\\Seen))",     # more than asked: the general parser
            b"5 (FLAGS (\\Deleted))",                       # unsolicited, no UID: not ours
            (b"6 (UID 14 RFC822.SIZE 4 BODY[] {3}", b"xyz"), b")",   # a literal: the general parser
            b"7 (UID 16 RFC822.SIZE 3)"]
    want = general(data)
    assert sizes_from_fetch_data(list(data)) == want
    assert want[10] == 2048 and want[11] == 77 and want[12] == 5 and want[14] == 4 and want[16] == 3


def test_the_rest_of_a_response_with_a_literal_is_never_read_as_a_line_of_its_own():
    data = [(b"1 (UID 5 BODY[] {3}", b"abc"), b"2 (UID 6 RFC822.SIZE 1)"]
    with pytest.raises(ProtocolError):     # one malformed response, as the general parser says
        sizes_from_fetch_data(list(data))


def test_a_listing_holds_little_per_message():
    n = 20000
    data = [b"%d (UID %d RFC822.SIZE %d)" % (i, i + 1000, 4000 + i) for i in range(1, n + 1)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        got = sizes_from_fetch_data(data)
        held, peak = (x - before for x in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert len(got) == n and got[1001] == 4001
    assert held < 150 * n, f"{held / n:.0f} bytes a message held"
    assert peak < 200 * n, f"{peak / n:.0f} bytes a message at the peak"
