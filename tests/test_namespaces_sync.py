"""Namespaces, special-use and recorded mappings through real servers and the real CLI (issue 11).

* a Courier source (INBOX. + ".", no SPECIAL-USE) lands on a fresh stock Dovecot with Sent,
  Drafts, Trash, Junk and 客户/重要 at the top level;
* a source with both Sent (\\Sent) and 已发送 gives the same target folders on every pass and
  the report's totals match the source;
* reports count the UID map, not the target folder: a merged folder and a pre-filled one show
  "already there" apart; a changed mapping is kept, reported, and applied by `remap` only.
"""
from __future__ import annotations

import csv
import io

import yaml

from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
from seed import Msg, connect, make_message, seed, snapshot
from syncenv import ctl, make_config, password_file

USER = "alice@example.com"


def _pair(source, target):
    return DovecotPair(source, target, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})


def _sync(cfg, tmp_path):
    cp = ctl("-c", cfg, "sync", USER, "--add", "--password-file", password_file(tmp_path, SOURCE_USERS[USER]),
             "--progress", "none")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return cp


def _report(cfg):
    cp = ctl("-c", cfg, "report", USER, "--csv")
    assert cp.returncode == 0, cp.stderr
    return {r["folder"]: r for r in csv.DictReader(io.StringIO(cp.stdout))}


def _target_folders(pair):
    with connect(*pair.target_master_account(USER)) as c:
        return {name: tuple(f.decode() for f in flags) for flags, _, name in c.list_folders()}


def _msgs(start, n, **kw):
    return [Msg(make_message(i, **kw), ("\\Seen",)) for i in range(start, start + n)]


def test_courier_source_onto_fresh_stock_dovecot(courier_server, make_dovecot, tmp_path):
    target = make_dovecot("target", TARGET_USERS, master=MASTER)
    pair = _pair(courier_server, target)
    src = ("127.0.0.1", courier_server.imap_port, USER, SOURCE_USERS[USER])
    seed(*src, {"INBOX": _msgs(1, 2), "INBOX.Sent": _msgs(10, 3), "INBOX.Drafts": _msgs(20, 1),
                "INBOX.Trash": _msgs(30, 1), "INBOX.Junk": _msgs(40, 1), "INBOX.客户": _msgs(50, 1),
                "INBOX.客户.重要": _msgs(60, 2)})
    cfg = make_config(tmp_path, pair)
    _sync(cfg, tmp_path)
    folders = _target_folders(pair)
    assert {n for n in folders if n.upper().startswith("INBOX/")} == set()
    for name, use in (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk")):
        assert use in folders[name], (name, folders[name])   # the client's own folder, not a twin
    assert "客户/重要" in folders
    s, t = snapshot(*src), snapshot(*pair.target_master_account(USER))
    for sname, tname in (("INBOX", "INBOX"), ("INBOX.Sent", "Sent"), ("INBOX.Drafts", "Drafts"),
                         ("INBOX.Trash", "Trash"), ("INBOX.Junk", "Junk"), ("INBOX.客户.重要", "客户/重要")):
        assert sorted(s[sname]) == sorted(t[tname]), sname
    rep = _report(cfg)
    assert {k: (int(v["source_count"]), int(v["target_count"])) for k, v in rep.items()} == {
        "INBOX": (2, 2), "INBOX/Sent": (3, 3), "INBOX/Drafts": (1, 1), "INBOX/Trash": (1, 1),
        "INBOX/Junk": (1, 1), "INBOX/客户": (1, 1), "INBOX/客户/重要": (2, 2)}


def test_sent_and_chinese_sent_stay_apart_on_every_pass(dovecot_pair, tmp_path):
    pair = dovecot_pair
    src = pair.source_account(USER)
    seed(*src, {"Sent": _msgs(1, 3), "已发送": _msgs(10, 2)})
    with connect(*src) as c:   # the source's Dovecot marks Sent \Sent
        assert b"\\Sent" in next(f for f, _, n in c.list_folders() if n == "Sent")
    cfg = make_config(tmp_path, pair)
    _sync(cfg, tmp_path)
    first = set(_target_folders(pair))
    seed(*src, {"Sent": _msgs(4, 1), "已发送": _msgs(12, 1)})
    for _ in range(2):
        cp = _sync(cfg, tmp_path)
        assert "target_changed" not in cp.stderr and "folders_merged" not in cp.stderr
        assert set(_target_folders(pair)) == first
    s, t = snapshot(*src), snapshot(*pair.target_master_account(USER))
    assert sorted(t["Sent"]) == sorted(s["Sent"]) and len(t["Sent"]) == 4
    assert sorted(t["已发送"]) == sorted(s["已发送"]) and len(t["已发送"]) == 3
    rep = _report(cfg)
    assert {k: (v["target"], int(v["source_count"]), int(v["target_count"])) for k, v in rep.items()} == {
        "INBOX": ("INBOX", 0, 0), "Sent": ("Sent", 4, 4), "已发送": ("已发送", 3, 3)}


def test_report_counts_only_what_came_from_the_folder(dovecot_pair, tmp_path):
    """A merged folder (two source folders into one) on a target folder that held a message before."""
    pair = dovecot_pair
    src = pair.source_account(USER)
    seed(*src, {"A": _msgs(1, 3), "B": _msgs(10, 2)})
    seed(*pair.target_master_account(USER), {"C": [Msg(make_message(99))]})
    cfg = make_config(tmp_path, pair, folders={"layout": "mirror", "map": {"A": "C", "B": "C"}})
    _sync(cfg, tmp_path)
    rep = _report(cfg)
    assert {k: (int(v["source_count"]), int(v["target_count"]), int(v["already_there"]))
            for k, v in rep.items() if k != "INBOX"} == {"A": (3, 3, 1), "B": (2, 2, 1)}
    out = ctl("-c", cfg, "report", USER).stdout
    total = next(line for line in out.splitlines() if line.startswith("TOTAL")).split()
    assert total[1:4] == ["5", "5", "1"]    # source, on target, already there (counted once)


def test_changed_mapping_is_kept_reported_and_applied_by_remap(dovecot_pair, tmp_path):
    pair = dovecot_pair
    src = pair.source_account(USER)
    seed(*src, {"Work": _msgs(1, 3)})
    cfg = make_config(tmp_path, pair)
    _sync(cfg, tmp_path)
    doc = yaml.safe_load(open(cfg))
    doc["domains"]["example.com"]["folders"]["map"] = {"Work": "Job"}
    open(cfg, "w").write(yaml.safe_dump(doc, allow_unicode=True))
    seed(*src, {"Work": _msgs(4, 1)})
    cp = _sync(cfg, tmp_path)
    assert "event=mapping_changed" in cp.stderr and "kept='Work' would_be='Job'" in cp.stderr
    assert "Job" not in _target_folders(pair)
    t = snapshot(*pair.target_master_account(USER))
    assert len(t["Work"]) == 4                      # the folder is not split
    out = ctl("-c", cfg, "report", USER).stdout
    assert "mapping_changed: folder=Work kept=Work would_be=Job" in out

    cp = ctl("-c", cfg, "remap", USER, "--folder", "Work")
    assert cp.returncode == 0, cp.stderr
    assert "remapped: folder=Work Work -> Job: moved 4" in cp.stdout
    t = snapshot(*pair.target_master_account(USER))
    assert t["Work"] == [] and sorted(t["Job"]) == sorted(snapshot(*src)["Work"])
    seed(*src, {"Work": _msgs(5, 1)})
    cp = _sync(cfg, tmp_path)
    assert "mapping_changed" not in cp.stderr
    t = snapshot(*pair.target_master_account(USER))
    assert t["Work"] == [] and sorted(t["Job"]) == sorted(snapshot(*src)["Work"])
    rep = _report(cfg)["Work"]
    assert (rep["target"], rep["source_count"], rep["target_count"], rep["already_there"]) == ("Job", "5", "5", "0")
    assert ctl("-c", cfg, "remap", USER).returncode == 1    # nothing pending: said, not silent
