"""The progress model (mailsyncd/status.py): pure, from store rows and the daemon's live view."""

from mailsyncd import status
from mailsyncd.config import parse_config


def cfg(tmp_path):
    doc = {"domains": {d: {"source": {"host": "127.0.0.1", "security": "none"},
                           "target": {"host": "127.0.0.1", "security": "none"}} for d in ("a.com", "b.com")},
           "scheduler": {"pass_interval": 300}}
    return parse_config(doc, path=str(tmp_path / "c.yaml"))


def row(address, **kw):
    base = {"address": address, "domain": address.split("@")[1], "phase": "synced", "last_error": None,
            "plan": "login", "source_address": None, "has_password": True, "source_messages": 100,
            "target_messages": 100, "bytes": 1000, "skipped": 0, "last_pass_finished": 1000.0,
            "last_pass_ok": True}
    base.update(kw)
    return base


def test_phases_totals_and_order(tmp_path):
    rows = [row("tail@a.com"),
            row("new@a.com", phase="new", has_password=False, source_messages=0, target_messages=0,
                last_pass_finished=None, last_pass_ok=None),
            row("bad@a.com", phase="failed", last_error="source unreachable", target_messages=40),
            row("run@b.com", phase="syncing", target_messages=30, skipped=2),
            row("gone@b.com", phase="cutover")]
    live = {"run@b.com": {"done": 30, "total": 98, "bytes": 3000, "rate": 17.0, "current": ["INBOX"]}}
    accounts = sorted((status.account_view(r, live.get(r["address"]), 300.0, 2000.0) for r in rows),
                      key=status.sort_key)
    phases = {a["address"]: a["phase"] for a in accounts}
    assert phases == {"tail@a.com": "tailing", "new@a.com": "waiting", "bad@a.com": "failed",
                      "run@b.com": "syncing", "gone@b.com": "cutover"}
    assert [a["address"] for a in accounts][:2] == ["bad@a.com", "run@b.com"]   # failed first
    bad = next(a for a in accounts if a["address"] == "bad@a.com")
    assert bad["reason"] == "source unreachable" and bad["behind"] == 60 and bad["percent"] == 40.0
    run = next(a for a in accounts if a["address"] == "run@b.com")
    assert run["rate"] == 17.0 and run["eta_seconds"] == 4 and run["current_folders"] == ["INBOX"]
    assert run["percent"] == 32.0 and run["behind"] == 68
    tail = next(a for a in accounts if a["address"] == "tail@a.com")
    assert tail["next_pass"] == 1300.0 and tail["reason"] is None
    a_com = status._totals([a for a in accounts if a["domain"] == "a.com"])
    assert a_com["phases"] == {"failed": 1, "syncing": 0, "waiting": 1, "tailing": 1, "cutover": 0}
    assert (a_com["source_messages"], a_com["target_messages"], a_com["behind"]) == (200, 140, 60)
    assert status._totals(accounts)["accounts"] == 5


def test_the_document_of_a_page(tmp_path):
    """build_page: the page's accounts as they come (address order), the totals from the database's sums."""
    rows = [row("x@a.com"), row("y@b.com", phase="failed", last_error="no")]
    groups = [{"domain": "a.com", "stored": "synced", "has_password": 1, "running": 0, "accounts": 7,
               "source_messages": 700, "target_messages": 690, "skipped": 1, "bytes": 5, "source_bytes": None,
               "behind": 9, "source_known": 7},
              {"domain": "b.com", "stored": "new", "has_password": 1, "running": 1, "accounts": 2,
               "source_messages": 0, "target_messages": 0, "skipped": 0, "bytes": 0, "source_bytes": 10,
               "behind": 0, "source_known": 1}]
    doc = status.build_page(rows, groups, config=cfg(tmp_path), live={"z@b.com": {"rate": 2.25}},
                            running_domains={"z@b.com": "b.com"}, next_cursor="C", now=5.0)
    assert [a["address"] for a in doc["accounts"]] == ["x@a.com", "y@b.com"] and doc["next"] == "C"
    assert doc["totals"]["phases"] == {"failed": 0, "syncing": 2, "waiting": 0, "tailing": 7, "cutover": 0}
    assert doc["totals"]["rate"] == 2.2 and doc["totals"]["eta_seconds"] == 4 and doc["totals"]["source_bytes"] == 10
    assert doc["totals"]["source_known"] is False and doc["schema"] == 1
    a_com, b_com = doc["domains"]
    assert (a_com["accounts"], a_com["percent"], a_com["source_known"], a_com["rate"]) == (7, 98.7, True, 0.0)
    assert (b_com["accounts"], b_com["source_bytes"], b_com["rate"]) == (2, 10, 2.2)


def test_one_size_format_in_binary_units_everywhere():
    from mailsyncd.cli.render import human_bytes
    from mailsyncd.web.pages import format as dashboard, selfservice
    n = 5_600_000                                   # the CLI said 5.6 MB, the dashboard 5.3 MB
    assert status.size_text(n) == "5.3 MiB"
    assert human_bytes(n) == dashboard.byte_size(n) == selfservice._size(n) == "5.3 MiB"
    assert [status.size_text(v) for v in (0, 1023, 1024, 1536, 1024**3, 5 * 1024**4)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "1.0 GiB", "5.0 TiB"]
    assert status.size_text(None) == "?" and dashboard.byte_size(None) == ""


def test_one_label_per_phase_on_every_page():
    from mailsyncd.web import i18n
    for lang in i18n.LANGS:
        for phase in status.PHASES:
            assert i18n.w(lang, "phase_" + phase) == i18n.t(lang, "phase_" + phase) != ""
    # the store's own words never reach a page
    assert not any(k in i18n.MESSAGES[lang] for lang in i18n.LANGS for k in ("phase_new", "phase_synced"))


def test_the_alert_at_login_comes_from_the_status_model():
    from mailsyncd.proxy import frontdoor
    from mailsyncd.sync.progress import Progress
    assert frontdoor.alert_text is status.alert_text
    p = Progress()
    assert "counting" in status.alert_text(p)
    p.total, p.done = 2000, 500
    assert status.alert_text(p) == ("Mailbox migration in progress: 500 of 2,000 messages (25%); "
                                    "older mail is still arriving.")
    assert status.alert_text(None) is None
