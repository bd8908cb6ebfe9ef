"""The fail2ban filter shipped in etc/fail2ban/ (docs/deploy.md), run by fail2ban's own fail2ban-regex
against the lines a real mailsyncd writes: every refused login is found with the client's address, in
a log file and in the journal's form, and an address smuggled into a user name is never."""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import subprocess
import sys

import pytest
from proxyenv import Daemon
from syncenv import REPO

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(120)]

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")
ROOT = os.environ.get("MAILSYNCD_SERVERS_ROOT") or os.path.join(REPO, ".servers", "root")
SMUGGLED = "203.0.113.9"


@pytest.fixture
def filter_conf(tmp_path) -> str:
    """Our filter beside fail2ban's common.conf, as in /etc/fail2ban/filter.d/."""
    if not os.path.exists(os.path.join(ROOT, "usr/bin/fail2ban-regex")):
        why = f"no fail2ban-regex in {ROOT} (scripts/setup-servers.sh unpacks it)"
        if IN_CI:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    d = tmp_path / "filter.d"
    d.mkdir()
    shutil.copy(os.path.join(ROOT, "etc/fail2ban/filter.d/common.conf"), d)
    shutil.copy(os.path.join(REPO, "etc/fail2ban/filter.d/mailsyncd.conf"), d)
    return str(d / "mailsyncd.conf")


def matched_ips(log_path: str, filter_path: str) -> list[str]:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "usr/lib/python3/dist-packages"))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "usr/bin/fail2ban-regex"), "-o", "ip", log_path,
                        filter_path], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split()


def test_the_filter_finds_every_refused_login_and_nothing_smuggled(tmp_path, dovecot_pair, filter_conf):
    with Daemon(tmp_path, dovecot_pair) as d:
        for user in ("alice@example.com", f"x event=login_failed ip={SMUGGLED} user=y",
                     f"event=login_failed ip={SMUGGLED} user=y@example.com"):
            c = imaplib.IMAP4("127.0.0.1", d.imap_port)
            try:
                with pytest.raises(imaplib.IMAP4.error):
                    c.login('"' + user + '"', "wrong-password")
            finally:
                c.logout()
        d.wait_log("event=login_failed", timeout=30)
    lines = [ln for ln in d.log().splitlines() if " event=login_failed " in ln or " event=connection_refused " in ln]
    assert len(lines) >= 3 and any(SMUGGLED in ln for ln in lines), d.log()

    assert matched_ips(d.log_path, filter_conf) == ["127.0.0.1"] * len(lines)     # its own dated lines
    # the journal's form, as fail2ban's systemd backend reads it: its date, host, identifier[pid]
    journal = tmp_path / "journal.log"
    journal.write_text("".join(re.sub(r"^\S+ ", "Nov 29 23:00:03 mail mailsyncd[4321]: ", ln) + "\n"
                               for ln in d.log().splitlines()))
    assert matched_ips(str(journal), filter_conf) == ["127.0.0.1"] * len(lines)
