"""mailsyncctl as an admin types it: global options anywhere, a closed pipe, the exit codes in --help."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from syncenv import REPO, ctl


@pytest.fixture
def cfg_path(tmp_path) -> str:
    """A valid config whose servers are never contacted by the commands below."""
    p = tmp_path / "mailsyncd.yaml"
    p.write_text(f"state_dir: {tmp_path / 'state'}\n"
                 "domains:\n"
                 "  example.com:\n"
                 "    source: {host: 127.0.0.1, port: 1, security: none}\n"
                 "    target: {host: 127.0.0.1, port: 2, security: none, auth: same}\n")
    return str(p)


@pytest.mark.parametrize("args", [
    ["check-config", "--config", "{cfg}"],
    ["check-config", "-c", "{cfg}"],
    ["--config", "{cfg}", "check-config"],
    ["status", "--user", "x@example.com", "-c", "{cfg}", "--log-level", "error"],
])
def test_config_option_before_or_after_the_command(cfg_path, args):
    r = ctl(*[a.format(cfg=cfg_path) for a in args], env={"MAILSYNCD_CONFIG": "/nonexistent/m.yaml"})
    assert r.returncode == 0, r.stderr
    assert "unrecognized arguments" not in r.stderr


def test_option_after_the_command_wins_over_the_environment(cfg_path):
    r = ctl("check-config", env={"MAILSYNCD_CONFIG": cfg_path})
    assert r.returncode == 0 and f"{cfg_path}: OK" in r.stdout, r.stderr
    r = ctl("check-config", "-c", "/nonexistent/m.yaml", env={"MAILSYNCD_CONFIG": cfg_path})
    assert r.returncode == 1 and "/nonexistent/m.yaml" in r.stderr


def test_exit_codes_documented_in_help():
    out = ctl("--help").stdout
    for code, words in (("3", "skipped"), ("4", "restart"), ("141", "went away")):
        assert any(line.split()[:1] == [code] and words in line for line in out.splitlines()), out


@pytest.mark.parametrize("cmd", [["status"], ["status", "--json"], ["check-config"]])
def test_closed_pipe_ends_quietly(cfg_path, cmd):
    # `mailsyncctl status | head`: the reader is gone before the first write
    r, w = os.pipe()
    os.close(r)
    env = dict(os.environ, PYTHONPATH=REPO, MAILSYNCD_CONFIG=cfg_path)
    try:
        p = subprocess.run([sys.executable, "-m", "mailsyncd.cli.ctl", *cmd], stdout=w, stderr=subprocess.PIPE,
                           text=True, env=env, cwd=REPO, timeout=60)
    finally:
        os.close(w)
    assert p.stderr == ""
    assert p.returncode == 141


def test_reload_says_when_a_restart_is_needed(tmp_path, dovecot_pair):
    from proxyenv import Daemon

    from mailsyncd.testing import free_port
    with Daemon(tmp_path, dovecot_pair) as d:
        r = ctl("reload", "-c", d.config_path)
        assert r.returncode == 0 and "reloaded: generation 2" in r.stdout, r.stderr
        assert "restart" not in r.stdout
        old, new = d.doc["listen"]["imap"], f"127.0.0.1:{free_port()}"
        d.doc["listen"]["imap"] = new
        d.save()
        r = ctl("reload", "-c", d.config_path)
        assert r.returncode == 4, r.stdout + r.stderr
        assert "reloaded: generation 3" in r.stdout
        note = [line for line in r.stdout.splitlines() if line.startswith("restart needed: listen addresses")]
        assert note and f"imap={old}" in note[0] and f"imap={new}" in note[0], r.stdout
