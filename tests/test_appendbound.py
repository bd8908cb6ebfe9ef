"""The journal's UIDNEXT bound without a STATUS per batch (sync/appender.py), against a real Dovecot.

After its first batch the writer takes the target's UIDNEXT bound from the last APPENDUID instead
of asking (tests/test_commands_per_batch.py counts the commands).  A folder renumbered between two
batches must still have its messages recorded under the UIDVALIDITY and UIDs they really have.
"""

from __future__ import annotations

from imapclient import IMAPClient

from mailsyncd.config import load_config
from mailsyncd.net.imap import fetch, folder_status
from mailsyncd.net.imapguard import GuardedIMAPClient
from mailsyncd.store import Store
from mailsyncd.sync.appender import Appender, Outgoing
from mailsyncd.sync.logic import fingerprint
from seed import make_message
from syncenv import make_config

A = "alice@example.com"


def _out(i: int) -> Outgoing:
    raw = make_message(i, size=1500)
    return Outgoing(i, raw, ("\\Seen",), None, fingerprint(raw))


def _login(pair) -> IMAPClient:
    host, port, user, password = pair.target_master_account(A)
    c = GuardedIMAPClient(host, port, ssl=False)
    c.login(user, password)
    return c


def _on_target(c: IMAPClient, folder: str) -> dict[bytes, int]:
    """fingerprint -> UID of each message in the folder."""
    c.select_folder(folder, readonly=True)
    return {fingerprint(d[b"BODY[]"]): uid for uid, d in fetch(c, "1:*", [b"BODY.PEEK[]"]).items()}


def test_a_folder_renumbered_between_batches_is_recorded_under_its_new_uidvalidity(dovecot_pair, tmp_path):
    pair = dovecot_pair
    store = Store.open(load_config(make_config(tmp_path, pair)))
    tgt, other = _login(pair), _login(pair)
    try:
        tgt.create_folder("Work")
        w = Appender(tgt, "Work", store, A, "Work", "test", multiappend=True)
        first = w.write([_out(0), _out(1)])
        v1 = folder_status(other, "Work").uidvalidity
        assert [tv for _m, tv, _tu in first.landed] == [v1, v1]

        # another session deletes and re-creates the folder: a new UIDVALIDITY, UIDs from 1 again
        other.delete_folder("Work")
        other.create_folder("Work")
        v2 = folder_status(other, "Work").uidvalidity
        assert v2 != v1

        batch = [_out(2), _out(3), _out(4)]
        second = w.write(batch)
        third = w.write([_out(5)])          # and the bound is right again after it
        where = _on_target(other, "Work")
        assert [(m.key, tv, tu) for m, tv, tu in second.landed + third.landed] == [
            (m.key, v2, where[m.fp]) for m in batch + [_out(5)]]
        assert store.inflight(A, "Work").target_uidvalidity == v2     # the third batch's journal
    finally:
        for c in (tgt, other):
            c.logout()
        store.close()
