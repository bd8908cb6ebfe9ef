"""No server string reaches a terminal, a log line or a page unescaped.

A folder named (in modified UTF-7) ESC[2J ESC]0;title BEL once cleared the admin's terminal from
`mailsyncctl report`.  Here such strings are put in the store the way a pass would (folder report,
skipped message, account error), and also served by a real Dovecot source, whose CREATE refuses
control characters but which lists a maildir folder that already has them on disk, as an old
server may.  Then the real `mailsyncctl` output, the daemon's log and its pages must carry the
escaped form and not one raw control character or bidi override.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import unicodedata

import pytest
import yaml
from proxyenv import Daemon
from seed import Msg, make_message, seed
from syncenv import ctl, make_config, password_file
from test_dashboard import HASH, PASSWORD
from test_dashboard import Web as AdminWeb
from test_selfservice import Web as SelfWeb
from test_selfservice import web_daemon

from mailsyncd.store import FolderReport, Store

A = "alice@example.com"
EVIL = "\x1b[2J\x1b]0;title\x07"
EVIL_SHOWN = "\\x1b[2J\\x1b]0;title\\x07"
FOLDER = f"Work{EVIL}\r\nX\u202eyxz"                    # what a pass would record from a hostile LIST
FOLDER_SHOWN = f"Work{EVIL_SHOWN}\\r\\nX\\u202eyxz"
REASON = f"target refused: NO [{EVIL}]\r\nevent=login_ok \u2066bidi\u2069"
REASON_SHOWN = f"target refused: NO [{EVIL_SHOWN}]\\r\\nevent=login_ok \\u2066bidi\\u2069"
ON_DISK = ".&ABs-[2J&ABs-]0;title&AAc-"                  # maildir++ name of the folder EVIL
pytestmark = pytest.mark.timeout(300)


def raw_hidden(text: str) -> list[str]:
    """Characters a terminal or the bidi algorithm would act on (newlines between lines aside)."""
    return sorted({c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")})


def plant(state_dir: str, address: str = A) -> None:
    """Hostile server strings, stored through the store API as a pass stores them."""
    store = Store.in_state_dir(state_dir)
    try:
        store.ensure_account(address, "example.com", plan="login")
        store.save_report(address, FolderReport(FOLDER, FOLDER + "-new", 3, 1, 1, 0, 1, 1234, 0.5, REASON, 1.0))
        store.commit_batch(address, FOLDER, 7, [], [(42, 5000, REASON)], None)
        pid = store.start_pass(address)
        store.finish_pass(pid, ok=False, copied=1, present=0, skipped=1, nbytes=1234, error=REASON)
        store.set_phase(address, "failed", REASON)
    finally:
        store.close()


def test_report_and_status_show_server_strings_escaped(tmp_path):
    state = tmp_path / "state"
    end = {"host": "127.0.0.1", "security": "none"}
    cfg = tmp_path / "mailsyncd.yaml"
    cfg.write_text(yaml.safe_dump({"state_dir": str(state),
                                   "domains": {"example.com": {"source": end, "target": end}}}))
    plant(str(state))
    for args in (["report", A], ["status"]):
        r = ctl("--config", str(cfg), *args)
        assert r.returncode == 0, r.stderr
        assert raw_hidden(r.stdout + r.stderr) == [], (args, r.stdout)
        assert "\r" not in r.stdout and EVIL not in r.stdout
    report = ctl("--config", str(cfg), "report", A).stdout
    assert f"error={REASON_SHOWN}" in report
    assert f"{FOLDER_SHOWN}  {FOLDER_SHOWN}-new" in report and f"FAILED: {REASON_SHOWN}" in report
    assert f"skipped message: folder={FOLDER_SHOWN} uid=42 size=5000: {REASON_SHOWN}" in report
    status = ctl("--config", str(cfg), "status").stdout
    assert f"↳ {REASON_SHOWN}" in status

    # CSV and JSON: escaped as well (a CSV is read on the terminal as often as in a spreadsheet);
    # the JSON keeps the exact string, with its control characters as \u escapes only.
    r = ctl("--config", str(cfg), "report", A, "--csv")
    assert raw_hidden(r.stdout.replace("\r\n", "\n")) == [] and FOLDER_SHOWN in r.stdout
    r = ctl("--config", str(cfg), "status", "--json")
    assert raw_hidden(r.stdout) == [] and "\\u001b[2J" in r.stdout
    assert json.loads(r.stdout)["accounts"][0]["reason"] == REASON


def hostile_source(pair) -> None:
    """alice's old mailbox: a folder named EVIL made on disk (CREATE refuses it), and one with a bidi
    override made by CREATE (Dovecot allows that), each with a message."""
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(1))],
                                   "Invoice\u202efdp-exe": [Msg(make_message(2))]})
    folder = os.path.join(pair.source.maildir(A), ON_DISK)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(folder, sub))
    open(os.path.join(folder, "maildirfolder"), "w").close()
    with open(os.path.join(folder, "new", "1.host"), "wb") as f:
        f.write(make_message(3))


def test_a_real_source_with_hostile_folder_names(tmp_path, dovecot_pair):
    hostile_source(dovecot_pair)
    cfg = make_config(tmp_path, dovecot_pair)
    pw = password_file(tmp_path, dovecot_pair.users[A].old_password)
    for r in (ctl("--config", cfg, "sync", A, "--add", "--password-file", pw, "--progress", "lines"),
              ctl("--config", cfg, "report", A)):
        assert r.returncode in (0, 3), r.stderr
        out = r.stdout + r.stderr
        assert raw_hidden(out) == [], out
        assert "Invoice\\u202efdp-exe" in r.stdout
        assert EVIL_SHOWN in r.stdout, r.stdout          # the target refused it: reported, escaped


def test_pages_and_log_show_server_strings_escaped(tmp_path, dovecot_pair):
    hostile_source(dovecot_pair)
    d = web_daemon(tmp_path, dovecot_pair)
    d.doc["admin"] = {"password_hash": HASH}
    d.save()
    with d:
        user = SelfWeb(d.http_port)
        assert user.start(A, dovecot_pair.users[A].old_password).status == 303
        d.wait_log(f"event=pass_done account={A}", timeout=120)
        plant(d.state_dir)

        progress = user.get("/progress").text
        assert raw_hidden(progress) == [], raw_hidden(progress)
        assert '<td class="path">Invoice\\u202efdp-exe</td>' in progress
        assert f'<td class="path">{FOLDER_SHOWN} → {FOLDER_SHOWN}-new</td>' in progress
        assert f"<td>{REASON_SHOWN}</td>" in progress

        admin = AdminWeb(d.http_port)
        assert admin.login(PASSWORD).status == 303
        page = admin.get(f"/admin/accounts/{A}").text
        assert raw_hidden(page) == [], raw_hidden(page)
        assert f'<td class="path">{FOLDER_SHOWN} → {FOLDER_SHOWN}-new</td>' in page
        assert f'<td class="reason">{REASON_SHOWN}</td>' in page
        assert "Invoice\\u202efdp-exe" in page and EVIL_SHOWN in page
        overview = admin.get("/admin").text
        assert raw_hidden(overview) == [] and REASON_SHOWN in overview

        # The status JSON behind the live page keeps the exact string, control characters as \u escapes.
        live = admin.get(f"/admin/status.json?user={A}")
        assert live.status == 200 and raw_hidden(live.text) == [] and "\\u001b[2J" in live.text
        assert [a["reason"] for a in json.loads(live.text)["accounts"]] == [REASON]

        log = d.log()
        assert raw_hidden(log) == [], raw_hidden(log)


class HostilePop3:
    """An old server whose every reply carries terminal escapes (Dovecot will not send such text)."""

    def __init__(self):
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as f:
                conn.sendall(f"+OK {EVIL} ready\r\n".encode())
                for line in f:
                    if line.upper().startswith(b"PASS"):
                        conn.sendall(f"-ERR [AUTH] {EVIL}\r\x1b[1A denied \u202e\r\n".encode())
                    elif line.upper().startswith(b"QUIT"):
                        conn.sendall(b"+OK\r\n")
                        break
                    else:
                        conn.sendall(b"+OK\r\n")

    def close(self) -> None:
        self.srv.close()


def test_import_verify_shows_the_old_servers_refusal_escaped(tmp_path):
    pop = HostilePop3()
    try:
        cfg = tmp_path / "mailsyncd.yaml"
        cfg.write_text(yaml.safe_dump({
            "state_dir": str(tmp_path / "state"),
            "domains": {"example.com": {
                "source": {"host": "127.0.0.1", "port": pop.port, "security": "none", "protocol": "pop3"},
                "target": {"host": "127.0.0.1", "security": "none"}}}}))
        accounts = tmp_path / "accounts.csv"
        accounts.write_text(f"target,source,password\n{A},{A},secret-pw\n")
        r = ctl("--config", str(cfg), "import", str(accounts), "--verify")
    finally:
        pop.close()
    assert r.returncode == 1, r.stderr
    assert raw_hidden(r.stdout + r.stderr) == [], r.stderr
    assert f"{EVIL_SHOWN}\\r\\x1b[1A denied \\u202e" in r.stderr and "secret-pw" not in r.stderr


def test_detect_output_shows_dns_and_greeting_text_escaped():
    from mailsyncd.cli.detect import format_detection, format_failure
    from mailsyncd.providers import Detection, DetectionFailed
    found = Detection("example.com", f"imap{EVIL}.example.com", 993, "tls", "imap", "probe", None,
                      (f"greeting: * OK {EVIL}\r\nhi \u202e", "decided: probe"))
    text = format_detection(found)
    assert raw_hidden(text) == [] and f"host: imap{EVIL_SHOWN}.example.com" in text
    assert f"greeting: * OK {EVIL_SHOWN}\\r\\nhi \\u202e" in text
    text = format_failure(DetectionFailed("example.com", [f"MX: {EVIL}"]))
    assert raw_hidden(text) == [] and f"MX: {EVIL_SHOWN}" in text


def test_the_progress_bar_shows_folder_names_escaped():
    import io

    from mailsyncd.cli.render import ProgressView
    from mailsyncd.sync.progress import Progress
    out = io.StringIO()
    view = ProgressView(out, tty=True)
    p = Progress(view)
    p.add_total(10)
    p.folder(f"A{EVIL}", True)
    view.close(p)
    assert EVIL not in out.getvalue() and "\x07" not in out.getvalue() and f"A{EVIL_SHOWN}" in out.getvalue()
