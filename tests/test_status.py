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
    doc = status.build(rows, config=cfg(tmp_path), live=live, now=2000.0)
    phases = {a["address"]: a["phase"] for a in doc["accounts"]}
    assert phases == {"tail@a.com": "tailing", "new@a.com": "waiting", "bad@a.com": "failed",
                      "run@b.com": "syncing", "gone@b.com": "cutover"}
    assert [a["address"] for a in doc["accounts"]][:2] == ["bad@a.com", "run@b.com"]   # failed first
    bad = next(a for a in doc["accounts"] if a["address"] == "bad@a.com")
    assert bad["reason"] == "source unreachable" and bad["behind"] == 60 and bad["percent"] == 40.0
    run = next(a for a in doc["accounts"] if a["address"] == "run@b.com")
    assert run["rate"] == 17.0 and run["eta_seconds"] == 4 and run["current_folders"] == ["INBOX"]
    assert run["percent"] == 32.0 and run["behind"] == 68
    tail = next(a for a in doc["accounts"] if a["address"] == "tail@a.com")
    assert tail["next_pass"] == 1300.0 and tail["reason"] is None
    a_com = next(d for d in doc["domains"] if d["name"] == "a.com")
    assert a_com["phases"] == {"failed": 1, "syncing": 0, "waiting": 1, "tailing": 1, "cutover": 0}
    assert (a_com["source_messages"], a_com["target_messages"], a_com["behind"]) == (200, 140, 60)
    assert doc["totals"]["accounts"] == 5 and doc["schema"] == 1


def test_filters(tmp_path):
    rows = [row("x@a.com"), row("y@b.com")]
    doc = status.build(rows, config=cfg(tmp_path), domain="b.com")
    assert [a["address"] for a in doc["accounts"]] == ["y@b.com"] and [d["name"] for d in doc["domains"]] == ["b.com"]
    doc = status.build(rows, config=cfg(tmp_path), user="x@a.com")
    assert [a["address"] for a in doc["accounts"]] == ["x@a.com"]


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
