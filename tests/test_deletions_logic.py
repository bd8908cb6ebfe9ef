"""Pure logic of sync.deletions: mirror: the decision table, the limit, and the config keys."""

from __future__ import annotations

import pytest

from mailsyncd.config import ConfigError, DeleteLimit, parse_config
from mailsyncd.store import MapRow
from mailsyncd.sync.deletions import (
    CHANGED, NO_TARGET_UID, NOT_OURS, OTHER_UIDVALIDITY, OnTarget, decide, gone_at_source, gone_by_count, unchanged,
)

TV = 777                      # the target folder's UIDVALIDITY
PERM = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\*"})


def fp(n: int) -> bytes:
    return bytes([n]) * 16


def row(uid: int, flags=("\\Seen",), tv=TV, tuid="same") -> MapRow:
    return MapRow(uid, tv, uid + 100 if tuid == "same" else tuid, 10, fp(uid), tuple(flags))


def on(uid: int, flags=("\\Seen",), content=None) -> OnTarget:
    return OnTarget(tuple(flags), fp(uid if content is None else content))


# name, map rows, on the target (by source uid), pending (source uids), limit -> expunge, forget, kept, held
CASES = [
    ("untouched copy goes", [row(1)], {1: on(1)}, (), 10, [1], [], {}, None),
    ("\\Recent on the target is session state, not a change", [row(1)], {1: on(1, ("\\Seen", "\\Recent"))},
     (), 10, [1], [], {}, None),
    ("flagged by the user stays", [row(1)], {1: on(1, ("\\Seen", "\\Flagged"))}, (), 10, [], [], {1: CHANGED}, None),
    ("marked unread by the user stays", [row(1)], {1: on(1, ())}, (), 10, [], [], {1: CHANGED}, None),
    ("user's \\Deleted without our intent stays", [row(1)], {1: on(1, ("\\Seen", "\\Deleted"))}, (), 10,
     [], [], {1: CHANGED}, None),
    ("our \\Deleted from a crashed pass is finished", [row(1)], {1: on(1, ("\\Seen", "\\Deleted"))}, (1,), 10,
     [1], [], {}, None),
    ("gone from the target already: forget the row", [row(1)], {}, (), 10, [], [1], {}, None),
    ("another message at the mapped UID stays", [row(1)], {1: on(1, content=9)}, (), 10, [], [], {1: NOT_OURS}, None),
    ("no target UID recorded", [row(1, tuid=None)], {}, (), 10, [], [], {1: NO_TARGET_UID}, None),
    ("copied under another target UIDVALIDITY", [row(1, tv=5)], {1: on(1)}, (), 10, [], [],
     {1: OTHER_UIDVALIDITY}, None),
    ("keyword the target cannot hold is not a change", [row(1, ("\\Seen", "$Junk"))], {1: on(1)}, (), 10,
     [1], [], {}, None),
    ("at the limit: all go", [row(1), row(2), row(3)], {1: on(1), 2: on(2), 3: on(3)}, (), 3, [1, 2, 3], [], {}, None),
    ("above the limit: none go", [row(1), row(2), row(3)], {1: on(1), 2: on(2), 3: on(3)}, (), 2, [], [], {},
     "would delete 3 > limit 2"),
    ("above the limit: a crashed pass's intents still finish", [row(1), row(2), row(3)],
     {1: on(1), 2: on(2), 3: on(3, ("\\Seen", "\\Deleted"))}, (3,), 1, [3], [], {}, "would delete 2 > limit 1"),
    ("limit 0: nothing new", [row(1)], {1: on(1)}, (), 0, [], [], {}, "would delete 1 > limit 0"),
    ("changed and forgotten ones do not count against the limit", [row(1), row(2), row(3)],
     {1: on(1), 2: on(2, ("\\Flagged",))}, (), 1, [1], [3], {2: CHANGED}, None),
]


@pytest.mark.parametrize("name,rows,target,pending,limit,expunge,forget,kept,held", CASES, ids=[c[0] for c in CASES])
def test_decide(name, rows, target, pending, limit, expunge, forget, kept, held):
    by_uid = {r.uid: r for r in rows}
    tgt = {by_uid[u].target_uid: t for u, t in target.items()}
    perm = PERM - {"\\*"} if "keyword" in name else PERM
    plan = decide(by_uid, list(by_uid), TV, tgt, {u: by_uid[u].target_uid for u in pending}, limit, perm)
    assert plan.expunge == {u: by_uid[u].target_uid for u in expunge}
    assert list(plan.forget) == forget
    assert plan.kept == kept
    assert plan.held == held


def test_only_rows_gone_at_the_source_are_candidates():
    assert gone_at_source([1, 2, 3, 5], [2, 3, 4, 9]) == [1, 5]
    # a message the user added on the target has no map row: it can never be a candidate
    rows = {1: row(1)}
    plan = decide(rows, gone_at_source(rows, []), TV, {101: on(1), 555: on(55)}, {}, 10, PERM)
    assert plan.expunge == {1: 101}


def test_counts_settle_deletions_only_when_every_known_message_at_or_below_the_mark_is_there():
    # 100 known at or below the mark, 2 listed above it: 102 held means none below is gone
    assert gone_by_count(102, 100, [201, 202], [201, 202]) == []
    # above the mark each mapped UID is looked up: 203 was copied and is gone
    assert gone_by_count(102, 100, [201, 202], [201, 202, 203]) == [203]
    # one gone below the mark (101 held with one above), or one arrived unseen (103 held): list the folder
    assert gone_by_count(100, 100, [201], [201]) is None
    assert gone_by_count(103, 100, [201, 202], []) is None
    # one expunged below the mark and one arrived between EXAMINE (100) and the SEARCH: it does not balance
    assert gone_by_count(100, 100, [201, 202], [201]) is None


def test_unchanged_compares_with_what_the_target_can_hold():
    r = row(1, ("\\Seen", "$Work"))
    assert unchanged(r, (b"\\Seen", b"$Work"), PERM, False)
    assert unchanged(r, ("\\Seen",), PERM - {"\\*"}, False)
    assert not unchanged(r, ("\\Seen",), PERM, False)
    assert unchanged(r, ("\\Seen", "$Work", "\\Deleted"), PERM, True)
    assert not unchanged(r, ("\\Seen", "$Work", "\\Deleted"), PERM, False)


@pytest.mark.parametrize("limit,copied,expected", [
    (DeleteLimit(5.0, 500), 0, 0),
    (DeleteLimit(5.0, 500), 19, 0),
    (DeleteLimit(5.0, 500), 20, 1),
    (DeleteLimit(5.0, 500), 9_999, 499),
    (DeleteLimit(5.0, 500), 12_240, 500),      # 5% would be 612: the 500 cap applies
    (DeleteLimit(None, 3), 1, 3),
    (DeleteLimit(50.0, None), 7, 3),
])
def test_delete_limit(limit, copied, expected):
    assert limit.of(copied) == expected


def _cfg(tmp_path, sync):
    (tmp_path / "m.secret").write_text("pw\n")
    data = {"sync": sync, "domains": {"example.com": {
        "source": {"host": "127.0.0.1", "port": 10143, "security": "none", "protocol": "imap"},
        "target": {"host": "127.0.0.1", "port": 11143, "security": "none", "auth": "master",
                   "master_user": "master", "master_password_file": "./m.secret"}}}}
    return parse_config(data, path=str(tmp_path / "mailsyncd.yaml"))


def test_config_defaults_and_values(tmp_path):
    s = _cfg(tmp_path, {}).sync
    assert s.deletions == "keep" and s.max_delete == DeleteLimit(5.0, 500)
    s = _cfg(tmp_path, {"deletions": "mirror", "max_delete": "2.5%"}).sync
    assert s.deletions == "mirror" and s.max_delete == DeleteLimit(2.5, None)
    assert _cfg(tmp_path, {"max_delete": 40}).sync.max_delete == DeleteLimit(None, 40)
    per_domain = _cfg(tmp_path, {"deletions": "mirror"})
    assert per_domain.domains["example.com"].sync.deletions == "mirror"


@pytest.mark.parametrize("sync,path,fragment", [
    ({"deletions": "delete"}, "sync.deletions", "'keep', 'mirror'"),
    ({"deletions": True}, "sync.deletions", "'keep', 'mirror'"),
    ({"max_delete": "0%"}, "sync.max_delete", "percent"),
    ({"max_delete": "150%"}, "sync.max_delete", "percent"),
    ({"max_delete": -1}, "sync.max_delete", "count"),
    ({"max_delete": "lots"}, "sync.max_delete", "like '5%'"),
    ({"max_delete": True}, "sync.max_delete", "count"),
])
def test_config_errors_name_the_key(tmp_path, sync, path, fragment):
    with pytest.raises(ConfigError) as ei:
        _cfg(tmp_path, sync)
    assert any(e.startswith(path + ": ") and fragment in e for e in ei.value.errors), ei.value.errors
