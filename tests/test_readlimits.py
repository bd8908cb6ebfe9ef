"""Bounds on what a server may send in answer to one command (mailsyncd/imap/readlimits.py)."""

from __future__ import annotations

import pytest

from mailsyncd.errors import MessageTooLarge, ProtocolError
from mailsyncd.imap.readlimits import LINE_BUDGET, ReadLimits, slack

MiB = 1024**2


def test_a_literal_near_its_announced_size_is_read():
    r = ReadLimits(64 * MiB)
    r.start({7: 1000, 8: 5000})
    r.literal(1000 + slack(1000), b"* 1 FETCH (UID 7 BODY[] {...}")
    r.literal(5000, b"* 2 FETCH (UID 8 BODY[] {...}")


def test_far_more_than_announced_is_refused_naming_uid_and_sizes():
    r = ReadLimits(64 * MiB)
    r.start({7: 86, 8: 5000})
    with pytest.raises(MessageTooLarge) as e:
        r.literal(314572800, b"* 1 FETCH (UID 7 FLAGS () BODY[] {314572800}")
    assert (e.value.uid, e.value.announced, e.value.actual) == (7, 86, 314572800)
    assert "86" in str(e.value) and "314572800" in str(e.value)


def test_the_cap_bounds_even_honestly_announced_messages():
    r = ReadLimits(10 * MiB)
    r.start({1: 50 * MiB})
    with pytest.raises(MessageTooLarge):
        r.literal(50 * MiB, b"* 1 FETCH (UID 1 BODY[] {52428800}")


def test_unknown_uid_is_bounded_by_the_largest_expected_and_not_blamed():
    r = ReadLimits(64 * MiB)
    r.start({1: 100, 2: 200})
    with pytest.raises(MessageTooLarge) as e:
        r.literal(10 * MiB, b"* 9 FETCH (UID 99 BODY[] {10485760}")
    assert e.value.uid is None


def test_many_small_literals_cannot_add_up_beyond_the_batch():
    r = ReadLimits(64 * MiB)
    r.start({1: 100 * 1024})
    with pytest.raises(MessageTooLarge):
        for _ in range(100):
            r.literal(100 * 1024, b"* 1 FETCH (UID 1 BODY[] {102400}")


def test_without_sizes_the_cap_applies_and_each_command_starts_afresh():
    r = ReadLimits(1 * MiB)
    r.start()
    r.literal(MiB, b"")
    with pytest.raises(MessageTooLarge):
        r.literal(MiB + 1, b"")
    r.line(LINE_BUDGET)
    r.start()
    r.line(LINE_BUDGET)
    with pytest.raises(ProtocolError):
        r.line(1)
