"""Issue 14.4 in pure logic: the newest-first stage, the watch mode and the new-mail latency as the employee's
page, the dashboard's words and /metrics render them (the real daemon and Chromium: test_dashboard.py)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from mailsyncd.status import stage_of
from mailsyncd.watch.latency import LatencyHistogram
from mailsyncd.web import metrics
from mailsyncd.web.pages import dashboard
from mailsyncd.web.pages import selfservice as page

A = "alice@example.com"
DATA = {"account": {"phase": "new", "source_address": None}, "reports": [], "counts": (0, 0, 0),
        "last_pass": None, "folders": {}, "skipped": [], "skipped_total": 0}


def _live(stage):
    return SimpleNamespace(total=100, done=10, bytes=1000, current=set(), stage=stage)


@pytest.mark.parametrize("lang, stage, text", [
    ("en", "recent", "Copying your most recent mail first"),
    ("en", "rest", "Your recent mail is here; older mail is being copied"),
    ("zh", "recent", "正在优先复制您最近的邮件"),
])
def test_employee_page_shows_the_running_pass_newest_first_stage(lang, stage, text):
    html = page.progress(lang, A, DATA, _live(stage), "csrf", {"watching": "poll", "new_mail_latency": None})
    assert f'<dd id="stage">{text}</dd>' in html
    assert 'id="new-mail-latency"' not in html


def test_employee_page_without_a_stage_or_a_watch():
    html = page.progress("en", A, DATA, _live(None), "csrf")       # a pass with nothing recent to put first
    assert 'id="stage"' not in html
    assert '<dd id="watching">is copied at each sync run</dd>' in html
    html = page.progress("zh", A, DATA, None, "csrf", {"watching": "idle", "new_mail_latency": 12.25})
    assert '<dd id="watching">几秒内即可在此看到</dd>' in html and '<dd id="new-mail-latency">12.2 秒</dd>' in html


def test_stage_of():
    assert stage_of("syncing", "recent", True) == "recent"
    assert stage_of("tailing", None, False) == "done" and stage_of("cutover", None, False) == "done"
    assert stage_of("failed", None, False) is None and stage_of("syncing", None, True) is None


def test_dashboard_words():
    assert dashboard.stage_text("en", "recent") == "Recent mail" and dashboard.stage_text("en", None) == "—"
    assert dashboard.watch_text("zh", "poll") == "轮询"
    assert dashboard.latency_text("en", 0.44) == "0.4 s" and dashboard.latency_text("zh", 3.0) == "3.0秒"
    assert dashboard.latency_text("en", None) == "—"


def test_latency_histogram_is_cumulative_with_le_bounds():
    h = LatencyHistogram()
    for s in (0.3, 0.5, 0.7, 29.0, 1000.0):
        h.observe(s)
    got = dict(h.cumulative())
    assert got["0.5"] == 2 and got["1.0"] == 3 and got["30.0"] == 4 and got["300.0"] == 4 and got["+Inf"] == 5
    assert h.sum == pytest.approx(1030.5)


def test_metrics_watched_accounts_and_latency_histogram():
    h = LatencyHistogram()
    h.observe(0.8)
    h.observe(20.0)
    counters = {"logins_ok": 0, "logins_failed": 0, "source_checks": 0, "passes_ok": 0, "passes_failed": 0,
                "throttled": 0, "watch": {"watch_idle": 3, "watch_poll": 5, "watch_connections": 3},
                "latency": (h.cumulative(), h.sum)}
    text = metrics.render({"domains": [], "daemon": None}, counters, "n1").decode()
    assert 'mailsyncd_watched_accounts{mode="idle",node="n1"} 3.0' in text
    assert 'mailsyncd_watched_accounts{mode="poll",node="n1"} 5.0' in text
    assert 'mailsyncd_watch_connections{node="n1"} 3.0' in text
    assert 'mailsyncd_new_mail_latency_seconds_bucket{le="1.0",node="n1"} 1.0' in text
    assert 'mailsyncd_new_mail_latency_seconds_bucket{le="30.0",node="n1"} 2.0' in text
    assert re.search(r'^mailsyncd_new_mail_latency_seconds_sum\{node="n1"\} 20\.8$', text, re.M)
    assert "alice" not in text
