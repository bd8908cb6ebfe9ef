"""The customer's migration report: `mailsyncctl report` (CSV that matches the store, standalone HTML)
and the dashboard's /admin/report in Chromium; the servers' words escaped everywhere."""

from __future__ import annotations

import csv
import io

import pytest
from seed import Msg, make_message, seed
from syncenv import ctl, make_config, on_backend, sync_once
from test_dashboard import browser, dash_daemon, front_door_login  # noqa: F401 - the fixture

from mailsyncd.config import load_config
from mailsyncd.store import Store

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(300)]

A = "alice@example.com"
HOSTILE = '=HYPERLINK("http://x")<b>bold</b>\x1b[31m'


def _seed(pair):
    seed(*pair.source_account(A), {
        "INBOX": [Msg(make_message(i, size=3000)) for i in range(4)] + [Msg(make_message(9, size=70 * 1024))],
        "Work": [Msg(make_message(100 + i)) for i in range(2)],
    })


def _words_of_a_hostile_server(store) -> None:
    """A reason as a hostile server could word it, on one message (as the writer records one)."""
    st = store.folder(A, "Work")
    store.record_altered(A, "Work", st.uidvalidity, [(1, 321, HOSTILE)])


def test_report_csv_matches_the_store_and_defuses_words(tmp_path, dovecot_pair, make_store, store_backend, request):
    """On both backends: the report's queries (totals, skipped, altered) are the store's."""
    _seed(dovecot_pair)
    cfg = on_backend(make_config(tmp_path, dovecot_pair, sync={"max_message_size": "64KiB"}), request, store_backend)
    res = sync_once(cfg, A, "alice-old-pw")
    assert not res.complete                               # one message over the limit
    store = make_store(load_config(cfg).state_dir)
    _words_of_a_hostile_server(store)
    r = ctl("report", "--csv", "-c", cfg)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    reports = {x.path: x for x in store.reports(A)}
    sizes = store.folder_totals(A)
    skipped = store.skipped(A)
    folders = {x["folder"]: x for x in rows if x["record"] == "folder"}
    assert set(folders) == set(reports) == {"INBOX", "Work"}
    for path, x in folders.items():
        rep = reports[path]
        assert (int(x["source_messages"]), int(x["target_messages"]), int(x["skipped"])) == \
            (rep.source_count, rep.target_count, rep.skipped), (path, x, rep)
        assert int(x["target_bytes"]) == sizes[path][2] and int(x["copied"]) == sizes[path][1]
    assert (folders["INBOX"]["source_messages"], folders["INBOX"]["target_messages"]) == ("5", "4")
    assert int(folders["INBOX"]["source_bytes"]) >= int(folders["INBOX"]["target_bytes"]) + 70 * 1024
    sk = [x for x in rows if x["record"] == "skipped_message"]
    assert [(x["folder"], int(x["uid"]), int(x["size"]), x["detail"]) for x in sk] == \
        [(p, u, s, why) for p, u, s, why in skipped] and "too large" in sk[0]["detail"]
    alt = [x for x in rows if x["record"] == "altered_message"]
    assert alt[0]["detail"].startswith("'=HYPERLINK") and "\x1b" not in r.stdout and "\\x1b" in alt[0]["detail"]
    total = next(x for x in rows if x["record"] == "total")
    assert (int(total["source_messages"]), int(total["target_messages"]), int(total["skipped"])) == (7, 6, 1)
    assert total["detail"] == "1 account"

    out = tmp_path / "report.html"
    r = ctl("report", "--html", "-o", str(out), "-c", cfg)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    page = out.read_text()
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page and "\x1b" not in page
    r = ctl("report", "-c", cfg)
    assert "total: 1 accounts, 6 of 7 messages" in r.stdout and "1 skipped" in r.stdout, r.stdout


def test_report_page_in_a_real_browser(tmp_path, dovecot_pair, browser):  # noqa: F811 - the fixture
    from playwright.sync_api import expect
    _seed(dovecot_pair)
    with dash_daemon(tmp_path, dovecot_pair, password=None) as d:
        front_door_login(d, dovecot_pair, A)
        d.wait_log(f"event=pass_done account={A} ok=True", timeout=120)
        store = Store.in_state_dir(d.state_dir)
        try:
            _words_of_a_hostile_server(store)
        finally:
            store.close()
        ctx = browser.new_context(viewport={"width": 1024, "height": 900}, locale="en-US")
        page = ctx.new_page()
        page.goto(f"http://127.0.0.1:{d.http_port}/admin")
        page.locator("nav a", has_text="Report").click()
        expect(page).to_have_url(f"http://127.0.0.1:{d.http_port}/admin/report")
        report = page.locator("#migration-report")
        expect(report.locator('tr[data-total="accounts"] td')).to_have_text("1")
        expect(report.locator('tr[data-total="messages-at-the-source"] td')).to_have_text("7")
        expect(report.locator('tr[data-total="messages-on-the-new-server"] td')).to_have_text("7")
        expect(report.locator("h2")).to_have_text(A)
        expect(report.locator("q")).to_contain_text('<b>bold</b>')           # as text, not markup
        expect(report.locator("q b")).to_have_count(0)
        page.emulate_media(media="print")
        expect(page.locator("header.top")).to_be_hidden()
        ctx.close()
        assert "Traceback" not in d.log()
