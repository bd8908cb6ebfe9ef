"""Defect 8's rest, in Chromium: the employee page shows times in the viewer's time zone (UTC without
JavaScript), and the dashboard says a pass is running instead of "never" for the next pass."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from faultproxy import FaultProxy
from proxyenv import Daemon
from seed import Msg, make_message, seed
from test_dashboard import browser, front_door_login  # noqa: F401 - the fixture
from test_selfservice import web_daemon

from mailsyncd.testing import free_port

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(300)]

A = "alice@example.com"


def test_employee_page_times_in_the_viewers_zone(tmp_path, dovecot_pair, browser):  # noqa: F811
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(3)]})
    with web_daemon(tmp_path, dovecot_pair) as d:
        base = f"http://127.0.0.1:{d.http_port}"
        for zone, js in (("Asia/Shanghai", True), ("America/St_Johns", True), ("Asia/Shanghai", False)):
            ctx = browser.new_context(timezone_id=zone, java_script_enabled=js, locale="en-US")
            page = ctx.new_page()
            page.goto(base + "/")
            page.fill("#address", A)
            page.fill("#password", dovecot_pair.users[A].old_password)
            page.locator("button[type=submit]").first.click()
            page.wait_for_url(base + "/progress*")
            d.wait_log(f"event=pass_done account={A}", timeout=120)
            page.goto(base + "/progress")
            t = page.locator("time[data-local]")
            utc = dt.datetime.strptime(t.get_attribute("datetime"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
            if not js:
                assert t.inner_text() == utc.strftime("%Y-%m-%d %H:%M UTC")
            elif zone == "Asia/Shanghai":
                assert t.inner_text() == (utc + dt.timedelta(hours=8)).strftime("%Y-%m-%d %H:%M UTC+08")
                assert t.get_attribute("title") == utc.strftime("%Y-%m-%d %H:%M UTC")
            else:           # -03:30 in November (no daylight saving)
                assert t.inner_text() == (utc - dt.timedelta(hours=3, minutes=30)).strftime("%Y-%m-%d %H:%M UTC-03:30")
            ctx.close()
        assert "Traceback" not in d.log()


def test_next_pass_while_a_pass_runs_is_not_never(tmp_path, dovecot_pair, browser):  # noqa: F811
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(5)]})
    release = threading.Event()
    with FaultProxy(dovecot_pair.target.imap_port, "target") as tp:
        tp.at_append(1, lambda: release.wait(120))     # the pass stops at its first APPEND until released
        d = Daemon(tmp_path, dovecot_pair, target={"port": tp.port}, scheduler={"pass_interval": 3600})
        d.http_port = free_port()
        d.doc["listen"]["http"] = f"127.0.0.1:{d.http_port}"
        d.save()
        with d:
            try:
                front_door_login(d, dovecot_pair, A)
                d.wait_log(f"event=pass_start account={A}", timeout=60)
                for js in (True, False):
                    ctx = browser.new_context(java_script_enabled=js, locale="en-US")
                    page = ctx.new_page()
                    page.goto(f"http://127.0.0.1:{d.http_port}/admin/accounts/{A}")
                    nxt = page.locator("dt:has-text('Next pass') + dd")
                    assert nxt.inner_text() == "running now"
                    if js:      # and after the script's update from /admin/status.json
                        page.wait_for_function("document.getElementById('live') && !document.getElementById('live').hidden", timeout=90_000)
                        assert nxt.inner_text() == "running now"
                    ctx.close()
            finally:
                release.set()
            d.wait_log(f"event=pass_done account={A} ok=True", timeout=120)
            ctx = browser.new_context(locale="en-US")
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{d.http_port}/admin/accounts/{A}")
            page.wait_for_function("document.getElementById('live') && !document.getElementById('live').hidden", timeout=90_000)
            assert page.locator("dt:has-text('Next pass') + dd").inner_text() not in ("running now", "never", "—")
            ctx.close()
