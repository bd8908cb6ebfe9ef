"""Pure logic of the copy engine: fingerprints, batching, flag merges, FETCH parsing, APPENDUID."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from mailsyncd.imap.fetchparse import parse_fetch
from mailsyncd.net.imap import expand_uidset, parse_appenduid, uid_ranges
from mailsyncd.sync.logic import batches, fingerprint, match_fingerprints, merge_flags, source_flags, storable


def test_fingerprint_ignores_line_end_style_but_not_content():
    assert fingerprint(b"a\r\nb\r\n") == fingerprint(b"a\nb\n")
    assert fingerprint(b"a\r\nb") != fingerprint(b"a\r\nc")
    assert len(fingerprint(b"")) == 16


@pytest.mark.parametrize("base,src,tgt,want", [
    ((), ("\\Seen",), (), {"\\Seen"}),                                   # source change carried
    (("\\Seen",), (), ("\\Seen",), set()),                               # source removal carried
    (("\\Seen",), ("\\Seen",), (), set()),                               # user removed: kept
    ((), (), ("\\Flagged",), {"\\Flagged"}),                             # user added: kept
    ((), ("\\Flagged",), ("\\Flagged",), {"\\Flagged"}),                 # both agree
    (("\\Seen",), ("\\Seen", "$Work"), ("\\Seen", "\\Flagged"), {"\\Seen", "$Work", "\\Flagged"}),
    (("\\Seen",), (), (), set()),                                        # both removed
])
def test_merge_flags(base, src, tgt, want):
    assert merge_flags(base, src, tgt) == want


@given(st.sets(st.sampled_from(["\\Seen", "\\Flagged", "$A", "$B"])),
       st.sets(st.sampled_from(["\\Seen", "\\Flagged", "$A", "$B"])))
def test_merge_without_user_change_takes_the_source(base, src):
    assert merge_flags(base, src, base) == set(src)


def test_source_flags_normalise_and_drop_recent():
    assert source_flags([b"\\SEEN", b"\\Recent", b"$label1", b"\\flagged"]) == ("$label1", "\\Flagged", "\\Seen")


def test_storable_honours_permanentflags():
    perm = frozenset({"\\Seen", "\\Flagged"})
    assert storable(("\\Seen", "$Work"), perm) == (("\\Seen",), ("$Work",))
    assert storable(("\\Seen", "$Work"), perm | {"\\*"}) == (("\\Seen", "$Work"), ())
    assert storable(("$Work",), None) == (("$Work",), ())


def test_batches_bound_count_and_bytes():
    sizes = [(i, 100) for i in range(1, 11)]
    assert [len(b) for b in batches(sizes, 4, 10_000)] == [4, 4, 2]
    assert [len(b) for b in batches(sizes, 100, 250)] == [2, 2, 2, 2, 2]
    # a message bigger than the byte bound travels alone, never dropped
    assert list(batches([(1, 10), (2, 10**9), (3, 10)], 100, 1000)) == [[(1, 10)], [(2, 10**9)], [(3, 10)]]


def test_match_fingerprints_is_a_multiset_match():
    got = match_fingerprints([("a", b"x"), ("b", b"x"), ("c", b"y"), ("d", b"z")], [(7, b"x"), (5, b"x"), (9, b"y")])
    assert got == {"a": 5, "b": 7, "c": 9}


@pytest.mark.parametrize("uids,text", [([1, 2, 3, 7, 9, 10], "1:3,7,9:10"), ([5], "5"), ([], "")])
def test_uid_ranges(uids, text):
    assert uid_ranges(uids) == text
    if uids:
        assert expand_uidset(text) == uids


def test_parse_appenduid():
    assert parse_appenduid(b"[APPENDUID 38505 3955:3957,3960] APPEND completed") == (38505, [3955, 3956, 3957, 3960])
    assert parse_appenduid("OK Append completed.") is None


FETCH = [
    (b'1 (UID 45 FLAGS (\\Seen $Forwarded) INTERNALDATE "25-Mar-2023 21:44:57 +0800" BODY[] {11}', b"Subject: x\n"),
    b")",
    (b"2 (BODY[] {3}", b"abc"),
    b' UID 46 FLAGS () INTERNALDATE "01-Jan-2020 00:00:00 -0500" RFC822.SIZE 3 MODSEQ (12))',
    b"3 (UID 47 RFC822.SIZE 1234)",
    b"4 (FLAGS (\\Seen))",  # unsolicited, no UID
]


def test_fast_fetch_parser_agrees_with_imapclient():
    ours = parse_fetch(FETCH, lambda rec: pytest.fail(f"fell back on {rec!r}"))
    ref = parse_fetch_response(FETCH, normalise_times=False, uid_is_key=True)
    for uid, items in ours.items():
        for k, v in items.items():
            if k not in (b"SEQ", b"UID"):
                assert ref[uid][k] == v, (uid, k)
    assert set(ours) == {45, 46, 47}
    assert ours[45][b"INTERNALDATE"] == dt.datetime(2023, 3, 25, 13, 44, 57, tzinfo=dt.timezone.utc)


def test_fast_fetch_parser_falls_back_on_the_unusual():
    data = [(b'1 (UID 5 BODY[HEADER.FIELDS (SUBJECT)] {4}', b"x\r\n\r"), b")"]
    seen = []
    out = parse_fetch(data, lambda rec: seen.append(rec) or {5: {b"X": 1}})
    assert seen and out == {5: {b"X": 1}}


@given(st.binary(max_size=200))
def test_fast_fetch_parser_never_crashes_on_garbage(blob):
    parse_fetch([blob, (blob + b" {1}", b"x"), b")"], lambda rec: {})
