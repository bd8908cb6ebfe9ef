"""The copy engine against two real Dovecot servers."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from mailsyncd.store import Store
from seed import Msg, connect, make_message, seed, snapshot
from syncenv import ctl, make_config, password_file, sync_once

A = "alice@example.com"
TZ8 = dt.timezone(dt.timedelta(hours=8))


def _d(i: int) -> dt.datetime:
    return dt.datetime(2020, 1, 1, 8, 0, tzinfo=TZ8) + dt.timedelta(days=i, minutes=i)


def corpus() -> dict[str, list[Msg]]:
    return {
        "INBOX": [Msg(make_message(i), ("\\Seen",) if i % 2 else (), _d(i)) for i in range(12)]
        + [Msg(make_message(100, msgid=False), ("\\Flagged", "$Forwarded"), _d(100)),
           Msg(make_message(100, msgid=False), ("\\Flagged", "$Forwarded"), _d(100))],  # exact duplicates
        "Sent": [Msg(make_message(200 + i), ("\\Seen", "\\Answered"), _d(200 + i)) for i in range(3)],
        "Drafts": [Msg(make_message(300), ("\\Draft",), _d(300))],
        "客户/重要": [Msg(make_message(400 + i, subject="合同"), ("Work",), _d(400 + i)) for i in range(4)],
        "Café & Bar": [Msg(make_message(500), ("\\Seen", "$label1"), _d(500))],
        "Projects/mailsyncd/dev": [Msg(make_message(600, size=300_000), (), _d(600))],
        "Empty": [],
    }


def src(pair, user=A):
    return snapshot(*pair.source_account(user))


def dst(pair, user=A):
    return snapshot(*pair.target_master_account(user))


def same(a: dict, b: dict) -> bool:
    """Folder contents equal as multisets (UIDs differ between servers)."""
    return {k: sorted(v) for k, v in a.items()} == {k: sorted(v) for k, v in b.items()}


@pytest.fixture
def seeded(dovecot_pair):
    seed(*dovecot_pair.source_account(A), corpus())
    return dovecot_pair


def test_first_pass_copies_everything_and_leaves_the_source_untouched(seeded, tmp_path):
    pair = seeded
    before = src(pair)
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 5})
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.error is None and res.complete
    assert res.copied == sum(len(v) for v in corpus().values())
    after = src(pair)
    assert after == before, "the source changed (flags, contents or dates)"
    assert same(dst(pair), before)
    # the source's logs show no SELECT (read-write) and no STORE
    with open(pair.source.log_path, errors="replace") as f:
        assert "STORE" not in f.read()


def test_rerun_copies_nothing_and_new_mail_follows(seeded, tmp_path):
    pair = seeded
    cfg = make_config(tmp_path, pair)
    pw = pair.users[A].old_password
    assert sync_once(cfg, A, pw).copied > 0
    again = sync_once(cfg, A, pw)
    assert again.copied == 0 and again.complete
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(900 + i), (), _d(900)) for i in range(3)],
                                   "Sent": [Msg(make_message(950), ("\\Seen",), _d(950))]})
    third = sync_once(cfg, A, pw)
    assert third.copied == 4
    assert same(dst(pair), src(pair))


def test_flags_three_way_merge_keeps_the_users_changes(seeded, tmp_path):
    pair = seeded
    cfg = make_config(tmp_path, pair)
    pw = pair.users[A].old_password
    sync_once(cfg, A, pw)
    # on the target, the user flags message 2 and marks message 3 unread
    with connect(*pair.target_master_account(A)) as t:
        t.select_folder("INBOX")
        by_subject = {d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip(): uid for uid, d in
                      t.fetch(t.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()}
        t.add_flags([by_subject[b"Subject: Test message 2"]], ["\\Flagged"])
        t.remove_flags([by_subject[b"Subject: Test message 3"]], ["\\Seen"])
    # meanwhile at the source: message 1 loses \Seen, 2 gains $Work, 3 gains \Answered, 4 gains \Seen
    with connect(*pair.source_account(A)) as s:
        s.select_folder("INBOX")
        subj = {d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip(): uid for uid, d in
                s.fetch(s.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()}
        s.remove_flags([subj[b"Subject: Test message 1"]], ["\\Seen"])
        s.add_flags([subj[b"Subject: Test message 2"]], ["$Work"])
        s.add_flags([subj[b"Subject: Test message 3"]], ["\\Answered"])
        s.add_flags([subj[b"Subject: Test message 4"]], ["\\Seen"])
    res = sync_once(cfg, A, pw)
    assert res.complete
    with connect(*pair.target_master_account(A)) as t:
        t.select_folder("INBOX", readonly=True)
        flags = {d[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip().decode(): set(
            f.decode() for f in d[b"FLAGS"]) - {"\\Recent"}
            for d in t.fetch(t.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).values()}
    assert flags["Subject: Test message 1"] == set()                       # source change carried over
    assert flags["Subject: Test message 2"] == {"\\Flagged", "$Work"}      # user's flag kept + source's
    assert flags["Subject: Test message 3"] == {"\\Answered"}               # user's unread kept
    assert flags["Subject: Test message 4"] == {"\\Seen"}


# kill -9 mid copy, then a rerun: tests/test_writer.py, for both engines


def test_uidvalidity_change_remaps_instead_of_copying_again(seeded, tmp_path):
    pair = seeded
    cfg = make_config(tmp_path, pair)
    pw = pair.users[A].old_password
    sync_once(cfg, A, pw)
    # the old server is rebuilt: the folder is recreated with the same mail (new UIDVALIDITY) plus one
    old = corpus()["Sent"]
    with connect(*pair.source_account(A)) as s:
        v1 = s.folder_status("Sent", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        s.delete_folder("Sent")
        time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock
    seed(*pair.source_account(A), {"Sent": list(reversed(old)) + [Msg(make_message(777), (), _d(777))]})
    with connect(*pair.source_account(A)) as s:
        assert s.folder_status("Sent", ["UIDVALIDITY"])[b"UIDVALIDITY"] != v1
    res = sync_once(cfg, A, pw)
    sent = next(f for f in res.folders if f.path == "Sent")
    assert sent.copied == 1 and sent.present == 3
    assert same(dst(pair), src(pair))


def test_a_message_the_target_rejects_is_skipped_with_its_reason(quota_pair, tmp_path):
    pair = quota_pair
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(1), (), _d(1)),
                                             Msg(make_message(2, size=300_000), (), _d(2)),
                                             Msg(make_message(3), (), _d(3))]})
    cfg = make_config(tmp_path, pair)
    pwf = password_file(tmp_path, pair.users[A].old_password)
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", pwf)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "skipped message: folder=INBOX uid=2" in r.stdout
    assert "larger" in r.stdout.lower() or "limit" in r.stdout.lower(), r.stdout
    inbox = dst(pair)["INBOX"]
    assert len(inbox) == 2
    rep = ctl("--config", cfg, "report", A)
    assert "skipped message: folder=INBOX uid=2" in rep.stdout
    # a rerun does not try again and does not duplicate
    r2 = ctl("--config", cfg, "sync", A, "--add", "--password-file", pwf)
    assert r2.returncode == 3 and len(dst(pair)["INBOX"]) == 2


def test_malformed_messages_are_copied_byte_for_byte(dovecot_pair, tmp_path):
    pair = dovecot_pair
    weird = [
        b"Subject: bare LF\nFrom: a@b\n\nbody with bare LF\n",
        "Subject: 8-bit 头 ünïcode\r\nFrom: 王 <w@b>\r\n\r\nbody\r\n".encode(),
        b"Subject: no message-id\r\n\r\nx\r\n",
        b"Subject: trailing\r\n\r\nno final newline",
        b"Subject: long line\r\n\r\n" + b"x" * 20000 + b"\r\n",
    ]
    seed(*pair.source_account(A), {"INBOX": [Msg(m, (), _d(i)) for i, m in enumerate(weird)]})
    cfg = make_config(tmp_path, pair)
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete
    assert same(dst(pair), src(pair))


def test_big_empty_and_nul_byte_messages(dovecot_pair, tmp_path):
    pair = dovecot_pair
    big = make_message(1, size=30 * 1024 * 1024)
    seed(*pair.source_account(A), {"INBOX": [Msg(big, ("\\Seen",), _d(1))]})
    # a NUL byte cannot travel in a plain IMAP literal; write it straight into the source maildir
    md = pair.source.maildir(A)
    path = os.path.join(md, "cur", "1700000000.M1P1.nul:2,S")
    with open(path, "wb") as f:
        f.write(b"Subject: nul\r\n\r\nbefore\x00after\r\n")
    empty = os.path.join(md, "cur", "1700000001.M2P2.empty:2,")  # a 0-byte message
    open(empty, "wb").close()
    st = os.stat(os.path.join(md, "cur"))
    for p in (path, empty):
        os.chown(p, st.st_uid, st.st_gid)
    cfg = make_config(tmp_path, pair, sync={"batch_bytes": "1MiB"})
    res = sync_once(cfg, A, pair.users[A].old_password)
    inbox = next(f for f in res.folders if f.path == "INBOX")
    # every message is either on the target or skipped with a reason: never silently lost
    assert inbox.copied + inbox.skipped == 3
    if inbox.skipped:
        assert res.folders and not res.complete
    copied, source = dst(pair)["INBOX"], src(pair)["INBOX"]
    assert len(copied) == inbox.copied and all(m in source for m in copied)  # bytes, flags, date intact
    # Dovecot refuses to store the empty message: it is reported with the target's own words
    store = Store.in_state_dir(str(tmp_path / "state"))
    reasons = [r[3] for r in store.skipped(A)]
    store.close()
    assert len(reasons) == 1 and "zero byte" in reasons[0], reasons


def test_folder_layout_under_prefix_with_map_and_exclude(seeded, tmp_path):
    pair = seeded
    cfg = make_config(tmp_path, pair, folders={"layout": "under", "prefix": "Migrated",
                                               "map": {"Sent": "Old Sent"}, "exclude": ["Drafts", "Empty"]})
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete
    names = set(dst(pair))
    assert {"INBOX", "Migrated/INBOX", "Old Sent", "Migrated/客户/重要", "Migrated/Café & Bar"} <= names
    assert "Migrated/Drafts" not in names and "Drafts" not in names
    assert len(dst(pair)["Migrated/INBOX"]) == len(src(pair)["INBOX"])
    assert dst(pair)["INBOX"] == []


def test_chinese_special_folders_land_on_the_targets_special_use(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"已发送": [Msg(make_message(1), ("\\Seen",), _d(1))],
                                   "草稿箱": [Msg(make_message(2), ("\\Draft",), _d(2))],
                                   "已删除": [Msg(make_message(3), (), _d(3))],
                                   "垃圾邮件": [Msg(make_message(4), (), _d(4))]})
    with connect(*pair.target_master_account(A)) as t:
        for name in ("Sent", "Drafts", "Trash", "Junk"):
            t.create_folder(name)
    cfg = make_config(tmp_path, pair)
    assert sync_once(cfg, A, pair.users[A].old_password).complete
    d = dst(pair)
    assert len(d["Sent"]) == len(d["Drafts"]) == len(d["Trash"]) == len(d["Junk"]) == 1
    assert "已发送" not in d


def test_target_without_uidplus_or_multiappend(dovecot_pair, make_dovecot, tmp_path):
    pair = dovecot_pair
    pair.target.stop()
    pair.target = make_dovecot("plain", {A: "x"}, master=pair.master,
                               imap_capability="IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
                                               "NAMESPACE CHILDREN SPECIAL-USE")
    seed(*pair.source_account(A), corpus())
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 4})
    pw = pair.users[A].old_password
    assert sync_once(cfg, A, pw).complete
    with connect(*pair.source_account(A)) as s:
        s.select_folder("INBOX")
        s.add_flags(s.search(["ALL"])[:3], ["\\Flagged"])
    assert sync_once(cfg, A, pw).complete
    assert same(dst(pair), src(pair))


def test_source_without_condstore_rescans_flags(make_dovecot, tmp_path):
    from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
    source = make_dovecot("old", SOURCE_USERS, imap_capability="IMAP4rev1 LITERAL+ ID IDLE NAMESPACE CHILDREN")
    target = make_dovecot("new", TARGET_USERS, master=MASTER)
    pair = DovecotPair(source, target, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i), (), _d(i)) for i in range(5)]})
    cfg = make_config(tmp_path, pair, sync={"flag_rescan": 0.001})
    pw = pair.users[A].old_password
    assert sync_once(cfg, A, pw).complete
    with connect(*pair.source_account(A)) as s:
        s.select_folder("INBOX")
        s.add_flags(s.search(["ALL"])[:2], ["\\Seen"])
    assert sync_once(cfg, A, pw).complete
    assert same(dst(pair), src(pair))


def test_passes_do_not_leak_database_connections(dovecot_pair, tmp_path):
    """Each pass starts worker threads; their SQLite connections must close with them."""
    from mailsyncd.config import load_config
    from mailsyncd.sync.account import AccountSync
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(5)],
                                           "Work": [Msg(make_message(10 + i)) for i in range(5)]})
    cfg = load_config(make_config(tmp_path, dovecot_pair))
    store = Store.in_state_dir(cfg.state_dir)
    try:
        for _ in range(3):
            assert AccountSync(cfg.domain_for(A), A, dovecot_pair.users[A].old_password, store).run().complete
        assert len(store._all) <= 1     # this thread's own connection only
    finally:
        store.close()
