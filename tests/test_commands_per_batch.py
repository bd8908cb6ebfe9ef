"""What a first copy sends per batch (issue 16: CPU per message), counted by a relay on each side.

Per batch: one UID FETCH at the source; one MULTIAPPEND at the target; no NOOP, CHECK or re-SELECT,
and no STATUS after the first batch (the journal's lower bound of UIDNEXT comes from the last
APPENDUID, appender.py): on Dovecot a STATUS of the selected folder also syncs it.  A command added per batch multiplies
by the batches of a mailbox (500 for the rig's 20,000 messages): this says so when it happens.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from faultproxy import FaultProxy
from seed import Msg, make_message, seed, snapshot
from syncenv import make_config, sync_once

A = "alice@example.com"
D = dt.datetime(2021, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)


def test_a_first_copy_sends_one_fetch_and_one_append_per_batch_and_no_status_per_batch(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i, size=3000), ("\\Seen",), D) for i in range(40)]})
    with FaultProxy(pair.source.imap_port, "source") as sp, FaultProxy(pair.target.imap_port, "target") as tp:
        cfg = make_config(tmp_path, pair, source={"port": sp.port}, target={"port": tp.port},
                          sync={"batch_messages": 5, "connections": 1, "recent_first": 0})
        res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete and res.copied == 40, res
    assert snapshot(*pair.target_master_account(A)) == snapshot(*pair.source_account(A))
    batches = 40 // 5
    src, tgt = (Counter(c.decode() for c in p.commands) for p in (sp, tp))
    print("source", dict(src), "target", dict(tgt))
    assert tgt["APPEND"] == batches, tgt
    assert tgt["STATUS"] <= 2, tgt        # the first batch's bound and the folder's report
    assert batches <= src["UID FETCH"] <= batches + 2, src      # + the folder's listing (UIDs, sizes)
    assert tgt["SELECT"] <= 2 and src["EXAMINE"] <= 2, (src, tgt)
    assert not {"NOOP", "CHECK", "IDLE"} & (set(src) | set(tgt)), (src, tgt)
