"""sync.deletions against two real Dovecot servers, through the real `mailsyncctl sync`."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys

import yaml

from seed import Msg, connect, make_message, seed, snapshot
from syncenv import REPO, ctl, make_config, password_file

A = "alice@example.com"
N = 20


def _d(i: int) -> dt.datetime:
    return dt.datetime(2021, 3, 1, 9, 0, tzinfo=dt.timezone.utc) + dt.timedelta(hours=i)


def inbox(n: int = N, start: int = 0) -> list[Msg]:
    return [Msg(make_message(i), ("\\Seen",) if i % 2 else (), _d(i)) for i in range(start, start + n)]


def subjects(account, folder="INBOX") -> dict[str, tuple[int, set[str]]]:
    """{subject: (uid, flags)} of a folder, read-only."""
    with connect(*account) as c:
        c.select_folder(folder, readonly=True)
        data = c.fetch(c.search(["ALL"]), ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    return {d[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip().removeprefix("Subject: "):
            (uid, {f.decode() for f in d[b"FLAGS"]} - {"\\Recent"}) for uid, d in data.items()}


def expunge_at_source(pair, numbers, folder="INBOX"):
    with connect(*pair.source_account(A)) as c:
        c.select_folder(folder)
        subj = {d[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().strip(): uid for uid, d in
                c.fetch(c.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).items()}
        uids = [subj[f"Subject: Test message {i}"] for i in numbers]
        c.add_flags(uids, ["\\Deleted"])
        c.uid_expunge(uids)


def src(pair):
    return snapshot(*pair.source_account(A))


def dst(pair):
    return snapshot(*pair.target_master_account(A))


def multiset(folder_rows):
    return sorted(folder_rows)


class Env:
    def __init__(self, pair, tmp_path, sync=None):
        self.pair, self.tmp_path = pair, tmp_path
        self.cfg = make_config(tmp_path, pair, sync=sync)
        self.pwf = password_file(tmp_path, pair.users[A].old_password)
        self.db = os.path.join(tmp_path, "state", "mailsyncd.sqlite3")

    def set_sync(self, **keys):
        with open(self.cfg) as f:
            doc = yaml.safe_load(f)
        doc.setdefault("sync", {}).update(keys)
        with open(self.cfg, "w") as f:
            yaml.safe_dump(doc, f, allow_unicode=True)

    def sync(self, expect=0) -> str:
        r = ctl("--config", self.cfg, "sync", A, "--add", "--password-file", self.pwf, "--progress", "none")
        assert r.returncode == expect, r.stdout + r.stderr
        return r.stdout

    def report(self) -> str:
        r = ctl("--config", self.cfg, "report", A)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def sql(self, q, *args):
        with sqlite3.connect(self.db) as c:
            return c.execute(q, args).fetchall()


def test_default_keep_leaves_what_the_source_expunged(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": inbox()})
    env = Env(pair, tmp_path)
    env.sync()
    expunge_at_source(pair, [3, 7])
    out = env.sync()
    assert len(dst(pair)["INBOX"]) == N and len(src(pair)["INBOX"]) == N - 2
    assert "deleted" not in out and "deletions held back" not in out


def test_mirror_expunges_exactly_our_copies_by_uid(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": inbox(), "Sent": inbox(3, 100)})
    env = Env(pair, tmp_path, sync={"deletions": "mirror", "max_delete": 5})
    env.sync()
    # On the new server the user files a byte-identical copy of message 3 of their own, adds a
    # message, and marks one of their own messages \Deleted without expunging it.
    tgt = pair.target_master_account(A)
    with connect(*tgt) as c:
        c.append("INBOX", make_message(3), flags=["\\Seen"], msg_time=_d(3))
        c.append("INBOX", make_message(500), msg_time=_d(500))
        c.append("INBOX", make_message(501), flags=["\\Deleted"], msg_time=_d(501))
    expunge_at_source(pair, [3, 7])
    out = env.sync()
    assert "deleted 2: folder=INBOX" in out, out
    assert "deleted 2," in out
    after = dst(pair)
    users_own = [r for r in after["INBOX"] if r not in src(pair)["INBOX"]]
    assert len(after["INBOX"]) == N - 2 + 3
    assert multiset(r for r in after["INBOX"] if r not in users_own) == multiset(src(pair)["INBOX"])
    left = subjects(tgt)
    assert "Test message 7" not in left
    assert left["Test message 3"][1] == {"\\Seen"}       # the user's own copy, not ours
    assert left["Test message 501"][1] == {"\\Deleted"}  # no plain EXPUNGE
    assert "Test message 500" in left
    assert len(after["Sent"]) == 3
    assert env.sql("SELECT count(*) FROM messages WHERE path='INBOX'") == [(N - 2,)]
    assert env.sql("SELECT count(*) FROM deleting") == [(0,)]
    assert "deleted 2: folder=INBOX" in env.report()
    # nothing comes back, nothing else goes
    out = env.sync()
    assert "deleted" not in out
    assert dst(pair) == after


def test_mirror_keeps_a_copy_the_user_changed_on_the_target(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": inbox()})
    env = Env(pair, tmp_path, sync={"deletions": "mirror", "max_delete": 5})
    env.sync()
    tgt = pair.target_master_account(A)
    with connect(*tgt) as c:
        c.select_folder("INBOX")
        c.add_flags([subjects(tgt)["Test message 5"][0]], ["\\Flagged"])
    expunge_at_source(pair, [5, 6])
    out = env.sync()
    left = subjects(tgt)
    assert "Test message 6" not in left
    assert left["Test message 5"][1] == {"\\Seen", "\\Flagged"}
    assert "deleted 1: folder=INBOX" in out, out
    assert "deletions held back: folder=INBOX: kept 1 message the user changed on the target" in out


def test_above_the_limit_nothing_is_deleted_new_mail_still_comes_and_the_report_says_why(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": inbox()})
    env = Env(pair, tmp_path, sync={"deletions": "mirror"})   # default limit: 5% of 20 = 1
    env.sync()
    expunge_at_source(pair, [1, 2, 3])
    seed(*pair.source_account(A), {"INBOX": inbox(2, 200)})
    out = env.sync()
    held = "deletions held back: folder=INBOX: would delete 3 > limit 1"
    assert held in out, out
    left = subjects(pair.target_master_account(A))
    assert {"Test message 1", "Test message 2", "Test message 3", "Test message 200", "Test message 201"} <= set(left)
    assert len(left) == N + 2
    assert held in env.report()
    # a pass over an unchanged source still looks, and still says why
    assert held in env.sync()
    env.set_sync(max_delete="20%")
    out = env.sync()
    assert "deleted 3: folder=INBOX" in out and "held back" not in out, out
    assert multiset(dst(pair)["INBOX"]) == multiset(src(pair)["INBOX"])


def test_a_folder_deleted_at_the_source_stays_on_the_target(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": inbox(3), "Old": inbox(4, 300)})
    env = Env(pair, tmp_path, sync={"deletions": "mirror", "max_delete": "100%"})
    env.sync()
    before = dst(pair)["Old"]
    with connect(*pair.source_account(A)) as c:
        c.delete_folder("Old")
    env.sync()
    assert dst(pair)["Old"] == before and len(before) == 4


def test_no_deletion_on_a_target_without_uidplus(dovecot_pair, make_dovecot, tmp_path):
    pair = dovecot_pair
    pair.target.stop()
    pair.target = make_dovecot("plain", {A: "x"}, master=pair.master,
                               imap_capability="IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE "
                                               "NAMESPACE CHILDREN SPECIAL-USE")
    seed(*pair.source_account(A), {"INBOX": inbox()})
    env = Env(pair, tmp_path, sync={"deletions": "mirror", "max_delete": 5})
    env.sync()
    expunge_at_source(pair, [4])
    out = env.sync()
    assert len(dst(pair)["INBOX"]) == N
    assert "deletions held back: folder=INBOX: the target lacks UIDPLUS" in out, out
    assert "the target lacks UIDPLUS" in env.report()


# Dies by SIGKILL at a chosen point of the expunge: before UID EXPUNGE is sent (after the
# \Deleted STORE), or after the target expunged and before the store recorded it.
KILLER = """
import os, signal, sys
from imapclient import IMAPClient
from mailsyncd.store import Store
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "before_expunge":
    IMAPClient.uid_expunge = die
else:
    real = Store.commit_deletions
    def commit(self, account, path, uidvalidity, gone):
        gone = list(gone)
        if gone:
            die()
        real(self, account, path, uidvalidity, gone)
    Store.commit_deletions = commit
from mailsyncd.cli.ctl import main
sys.exit(main(sys.argv[2:]))
"""


def _killed_pass(env, where):
    e = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", KILLER, where, "--config", env.cfg, "sync", A, "--add",
                        "--password-file", env.pwf, "--progress", "none"],
                       capture_output=True, text=True, timeout=300, env=e, cwd=REPO)
    assert r.returncode == -9, r.stdout + r.stderr


def test_kill_9_in_the_middle_of_an_expunge_then_the_next_pass_finishes_it(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": inbox()})
    env = Env(pair, tmp_path, sync={"deletions": "mirror", "max_delete": 5})
    env.sync()
    tgt = pair.target_master_account(A)

    # 1. killed between UID STORE +FLAGS (\Deleted) and UID EXPUNGE
    expunge_at_source(pair, [2, 9])
    _killed_pass(env, "before_expunge")
    left = subjects(tgt)
    assert left["Test message 2"][1] == {"\\Deleted"} and "\\Deleted" in left["Test message 9"][1]
    assert len(env.sql("SELECT uid FROM deleting")) == 2
    out = env.sync()
    assert "deleted 2: folder=INBOX" in out, out
    left = subjects(tgt)
    assert "Test message 2" not in left and "Test message 9" not in left
    assert not any("\\Deleted" in f for _, f in left.values())
    assert multiset(dst(pair)["INBOX"]) == multiset(src(pair)["INBOX"])
    assert env.sql("SELECT count(*) FROM deleting") == [(0,)]

    # 2. killed after the target expunged, before the store recorded it
    expunge_at_source(pair, [4])
    _killed_pass(env, "before_commit")
    assert "Test message 4" not in subjects(tgt)
    assert len(env.sql("SELECT uid FROM deleting")) == 1
    out = env.sync()
    assert "deleted 1: folder=INBOX" in out, out
    assert env.sql("SELECT count(*) FROM deleting") == [(0,)]
    assert env.sql("SELECT count(*) FROM messages WHERE path='INBOX'") == [(N - 3,)]
    # no resurrection: the expunged messages are not copied again, nothing else moves
    out = env.sync()
    assert "copied 0," in out and "deleted" not in out
    assert multiset(dst(pair)["INBOX"]) == multiset(src(pair)["INBOX"])
