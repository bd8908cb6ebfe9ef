"""What a pass costs when little or nothing changed: it must not grow with the folder (issue 16).

Counted through FaultProxy relays in front of the real Dovecot pair: the commands each side gets and
the bytes each side sends.  A second folder size shows what grows with the messages.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from contextlib import closing

from faultproxy import FaultProxy
from mailsyncd.config import load_config
from mailsyncd.store import FolderState, MapRow, Store
from seed import Msg, connect, make_message, seed, snapshot
from syncenv import make_config, sync_once

A = "alice@example.com"
WHEN = dt.datetime(2021, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
READS = {b"UID FETCH", b"FETCH", b"UID SEARCH", b"SEARCH"}


def _msgs(start: int, n: int) -> list[Msg]:
    return [Msg(make_message(i), ("\\Seen",) if i % 2 else (), WHEN + dt.timedelta(minutes=i))
            for i in range(start, start + n)]


def _counted(pair, tmp_path, sync=None):
    """(pass, source proxy, target proxy) of one pass through counting relays."""
    with FaultProxy(pair.source.imap_port, "source") as sp, FaultProxy(pair.target.imap_port, "target") as tp:
        cfg = make_config(tmp_path, pair, source={"port": sp.port}, target={"port": tp.port},
                          sync={"connections": 1, **(sync or {})})
        res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.error is None and res.complete, res
    return res, sp, tp


class SqlSteps:
    """SQLite virtual-machine steps run by every store connection the pass opens (a deterministic work count)."""

    EVERY = 10

    def __init__(self, monkeypatch):
        self.ticks = 0
        real = sqlite3.connect

        def connect(*a, **kw):
            c = real(*a, **kw)
            c.set_progress_handler(self._tick, self.EVERY)
            return c
        monkeypatch.setattr("mailsyncd.store.base.sqlite3.connect", connect)

    def _tick(self):
        self.ticks += 1
        return 0

    def of(self, fn) -> int:
        before = self.ticks
        fn()
        return self.ticks - before


def test_a_no_op_pass_reads_no_message_and_costs_the_same_at_any_folder_size(dovecot_pair, tmp_path, monkeypatch):
    pair = dovecot_pair
    steps = SqlSteps(monkeypatch)
    seed(*pair.source_account(A), {"INBOX": _msgs(0, 10)})
    _counted(pair, tmp_path)
    small = {}
    small_steps = steps.of(lambda: small.update(zip("rst", _counted(pair, tmp_path))))
    assert small["r"].copied == 0
    seed(*pair.source_account(A), {"INBOX": _msgs(10, 400)})
    assert _counted(pair, tmp_path)[0].copied == 400
    big = {}
    big_steps = steps.of(lambda: big.update(zip("rst", _counted(pair, tmp_path))))
    assert big["r"].copied == 0
    for side, key in (("source", "s"), ("target", "t")):
        a, b = small[key], big[key]
        assert not READS & set(b.commands), (side, b.commands)
        assert a.commands == b.commands, (side, a.commands, b.commands)
        # the counts in the answers gain digits (10 -> 410): a few bytes, not a few per message
        assert b.server_bytes - a.server_bytes < 64, (side, a.server_bytes, b.server_bytes)
    # nothing changed: the target folder is not opened, the source folder not examined
    assert b"SELECT" not in big["t"].commands and b"EXAMINE" not in big["s"].commands
    # the store: at most one pass over the folder's UID map (the report's count), not one per figure
    cfg = make_config(tmp_path, pair)
    with closing(Store.open(load_config(cfg))) as store:
        uv = store.folder(A, "INBOX").uidvalidity
        one_scan = steps.of(lambda: store.count_mapped(A, "INBOX", uv))
    assert one_scan > 40, one_scan     # 410 rows: the measure sees a scan
    assert big_steps - small_steps < 1.5 * one_scan, (small_steps, big_steps, one_scan)


def test_new_mail_costs_what_it_brings_not_what_the_folder_holds(dovecot_pair, tmp_path):
    """+5 on a folder of 10 and +5 on a folder of 410: the same reads, a few bytes apart."""
    pair = dovecot_pair
    figures = []
    have = 0
    for size in (10, 400):
        seed(*pair.source_account(A), {"INBOX": _msgs(have, size)})
        have += size
        _counted(pair, tmp_path, {"deletions": "mirror"})
        seed(*pair.source_account(A), {"INBOX": _msgs(have, 5)})
        have += 5
        res, sp, tp = _counted(pair, tmp_path, {"deletions": "mirror"})
        assert res.copied == 5
        figures.append((sp, tp))
    (s_src, s_tgt), (b_src, b_tgt) = figures
    assert s_src.commands == b_src.commands
    assert b_src.server_bytes - s_src.server_bytes < 256, (s_src.server_bytes, b_src.server_bytes)
    assert b_tgt.server_bytes - s_tgt.server_bytes < 256, (s_tgt.server_bytes, b_tgt.server_bytes)
    assert snapshot(*pair.target_master_account(A)) == snapshot(*pair.source_account(A))


def test_after_the_shortcuts_an_expunge_and_a_flag_change_at_the_source_are_still_carried(dovecot_pair, tmp_path):
    """One expunged, one flagged and one new at once: MESSAGES unchanged, UIDNEXT and HIGHESTMODSEQ moved."""
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": _msgs(0, 30)})
    _counted(pair, tmp_path, {"deletions": "mirror"})
    with connect(*pair.source_account(A)) as c:
        c.select_folder("INBOX")
        uids = sorted(c.search(["ALL"]))
        c.add_flags([uids[3]], ["\\Flagged"])
        c.add_flags([uids[7]], ["\\Deleted"])
        c.uid_expunge([uids[7]])
    seed(*pair.source_account(A), {"INBOX": _msgs(30, 1)})
    res, _, _ = _counted(pair, tmp_path, {"deletions": "mirror"})
    assert res.copied == 1 and res.deleted == 1, res
    assert snapshot(*pair.target_master_account(A)) == snapshot(*pair.source_account(A))
    again, sp, _ = _counted(pair, tmp_path, {"deletions": "mirror"})
    assert again.copied == 0 and again.deleted == 0 and not READS & set(sp.commands), sp.commands


def test_known_counts_a_message_both_skipped_and_mapped_once(make_store):
    """A message refused once and copied by a later pass is in both tables: deletions' count takes it once."""
    s = make_store()
    s.save_folder(A, FolderState("INBOX", "INBOX", "INBOX", 7, 0, None, None, None, None))
    s.commit_batch(A, "INBOX", 7, [], [(2, 200, "target refused: try later")], None)
    s.commit_batch(A, "INBOX", 7, [MapRow(u, 70, u, 100, bytes([u]), ()) for u in (1, 2, 3)], [], 3)
    assert s.count_known(A, "INBOX", 7, 3) == 3 and s.count_known(A, "INBOX", 7, 1) == 1


def test_the_target_folder_opens_while_the_source_folder_is_examined(dovecot_pair, tmp_path):
    """On a large maildir each open after new mail rescans the folder (~0.3 s at 100,000): the two
    opens of a pass with new mail overlap.  The target's SELECT is held until the source's EXAMINE
    arrives: one after the other, the EXAMINE would never come and the hold would time out."""
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": _msgs(0, 5)})
    _counted(pair, tmp_path)
    seed(*pair.source_account(A), {"INBOX": _msgs(5, 1)})
    with FaultProxy(pair.source.imap_port, "source") as sp, FaultProxy(pair.target.imap_port, "target") as tp:
        examined = threading.Event()
        sp.on_command(b"EXAMINE", examined.set)
        tp.hold(b"SELECT", examined, 10)
        cfg = make_config(tmp_path, pair, source={"port": sp.port}, target={"port": tp.port},
                          sync={"connections": 1})
        res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.error is None and res.copied == 1, res
    assert tp.held == [True], (tp.held, sp.commands, tp.commands)
    assert snapshot(*pair.target_master_account(A)) == snapshot(*pair.source_account(A))
