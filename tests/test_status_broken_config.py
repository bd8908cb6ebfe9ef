"""A failed reload leaves a broken config file: `mailsyncctl status` still works from the daemon's own
record and says the error first; the dashboard shows it in a banner."""

from __future__ import annotations

import json
import os

import pytest
from syncenv import ctl
from test_dashboard import A, Web, dash_daemon, front_door_login, wait_for

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(300)]

BROKEN = '"<b>x</b>": 1\n'            # an unknown key, and markup that the page must escape


def break_and_reload(d) -> str:
    """Break the config file, have the daemon refuse it, and return the file's good text."""
    good = open(d.config_path).read()
    with open(d.config_path, "w") as f:
        f.write(f"state_dir: {d.state_dir}\n" + BROKEN)
    r = ctl("--config", d.config_path, "reload")
    assert r.returncode == 1 and "unknown key" in r.stderr, r.stdout + r.stderr   # refused before SIGHUP
    n = d.log().count("event=reload_failed keeping")
    d.sighup()                                                                     # the daemon refuses it too
    wait_for(lambda: d.log().count("event=reload_failed keeping") > n, 20, "reload_failed")
    d.status_after()
    return good


def test_status_and_dashboard_after_a_failed_reload(tmp_path, dovecot_pair):
    with dash_daemon(tmp_path, dovecot_pair, password=None) as d:
        front_door_login(d, dovecot_pair, A)
        d.wait_log(f"event=pass_done account={A} ok=True", 120)
        r = ctl("--config", d.config_path, "status")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "FAILED" not in r.stdout and "ERRORS" not in r.stdout
        good = break_and_reload(d)

        r = ctl("--config", d.config_path, "status")
        assert r.returncode == 5, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("RELOAD FAILED: mailsyncd keeps running generation 1 "
                                   f"(config {d.config_path}): "), r.stdout
        assert "unknown key" in lines[0]
        assert lines[1] == f"CONFIG FILE HAS ERRORS: {d.config_path}", r.stdout
        assert "status below from the running daemon's record" in r.stdout
        daemon_line = next(i for i, ln in enumerate(lines) if ln.startswith("daemon: pid "))
        assert "config generation 1" in lines[daemon_line]
        assert any(ln.startswith(A) and "tailing" in ln for ln in lines[daemon_line:]), r.stdout
        assert "example.com" in r.stdout and "Traceback" not in r.stderr

        r = ctl("--config", d.config_path, "status", "--json")
        assert r.returncode == 5
        doc = json.loads(r.stdout)
        assert "unknown key" in doc["daemon"]["reload_error"] and "unknown key" in doc["config_errors"][0]
        assert [a["address"] for a in doc["accounts"]] == [A]
        assert [x["name"] for x in doc["domains"]] == ["example.com"]

        # no state_dir line left in the file: --state-dir says where
        with open(d.config_path, "w") as f:
            f.write(BROKEN)
        r = ctl("--config", d.config_path, "status")
        assert r.returncode == 1 and "pass --state-dir DIR" in r.stderr, r.stdout + r.stderr
        r = ctl("--config", d.config_path, "status", "--state-dir", d.state_dir)
        assert r.returncode == 5 and r.stdout.startswith("RELOAD FAILED"), r.stdout + r.stderr

        # the dashboard: the banner, escaped, with uptime, generation and config path, in both languages
        web = Web(d.http_port)
        page = web.get("/admin?lang=en").text
        assert 'id="reload-failed"' in page and "The last reload failed" in page
        assert "&quot;&lt;b&gt;x&lt;/b&gt;&quot;: unknown key" in page and "<b>x</b>" not in page
        assert "Configuration generation</dt><dd>1</dd>" in page
        assert f"<code>{d.config_path}</code>" in page and "Running for" in page
        zh = web.get("/admin?lang=zh").text
        assert "上次重新加载配置失败" in zh and "配置代数</dt><dd>1</dd>" in zh

        # fixed and reloaded: no banner, status exits 0 again
        with open(d.config_path, "w") as f:
            f.write(good)
        assert ctl("--config", d.config_path, "reload").returncode == 0
        r = ctl("--config", d.config_path, "status")
        assert r.returncode == 0 and "FAILED" not in r.stdout, r.stdout + r.stderr
        assert 'id="reload-failed"' not in web.get("/admin").text


def test_status_of_a_broken_config_without_a_daemon_reads_the_store(tmp_path, dovecot_pair):
    d = dash_daemon(tmp_path, dovecot_pair, password=None)
    with d:
        front_door_login(d, dovecot_pair, A)
        d.wait_log(f"event=pass_done account={A} ok=True", 120)
    assert not os.path.exists(os.path.join(d.state_dir, "daemon.json"))
    with open(d.config_path, "w") as f:
        f.write(f"state_dir: '{d.state_dir}'  # kept\ndomains: [unclosed\n")     # not YAML: the line is read
    r = ctl("--config", d.config_path, "status")
    assert r.returncode == 5, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"CONFIG FILE HAS ERRORS: {d.config_path}"
    assert "status below from the state store" in r.stdout
    assert "daemon: not running" in r.stdout and "example.com" in r.stdout


def test_status_of_a_broken_config_finds_the_postgresql_store_the_daemon_uses(tmp_path, dovecot_pair, pg_database):
    """database: in PostgreSQL: a broken file must not send status to an (absent) SQLite store."""
    from mailsyncd.config import load_config
    from mailsyncd.store import Store
    d = dash_daemon(tmp_path, dovecot_pair, password=None)
    url, password_file = pg_database
    d.doc["database"] = {"url": url, "password_file": password_file}
    d.save()
    Store.open(load_config(d.config_path), migrate=True).close()
    with d:
        front_door_login(d, dovecot_pair, A)
        d.wait_log(f"event=pass_done account={A} ok=True", 120)
        assert not os.path.exists(os.path.join(d.state_dir, "mailsyncd.sqlite3"))
        good = open(d.config_path).read()
        with open(d.config_path, "w") as f:       # not YAML at all: only daemon.json knows the database
            f.write(f"state_dir: '{d.state_dir}'\ndatabase: [unclosed\n")
        n = d.log().count("event=reload_failed keeping")
        d.sighup()
        wait_for(lambda: d.log().count("event=reload_failed keeping") > n, 20, "reload_failed")
        d.status_after()
        r = ctl("--config", d.config_path, "status")
        assert r.returncode == 5, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("RELOAD FAILED: mailsyncd keeps running generation 1"), r.stdout
        assert lines[1] == f"CONFIG FILE HAS ERRORS: {d.config_path}", r.stdout
        assert any(ln.startswith(A) and "tailing" in ln for ln in lines), r.stdout
        assert "no state store" not in r.stderr and "Traceback" not in r.stderr
    # no daemon (no daemon.json): the file's own database: section, where it still validates
    assert not os.path.exists(os.path.join(d.state_dir, "daemon.json"))
    with open(d.config_path, "w") as f:
        f.write(good + BROKEN)
    r = ctl("--config", d.config_path, "status", "--json")
    assert r.returncode == 5, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert [a["address"] for a in doc["accounts"]] == [A] and "unknown key" in doc["config_errors"][0]
