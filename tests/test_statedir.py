"""Secrets at rest: a private umask, and no state directory other users can read."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from syncenv import REPO, ctl

CONFIG = ("state_dir: ./state\ndomains:\n  example.com:\n    source: {host: 127.0.0.1, security: none}\n"
          "    target: {host: 127.0.0.1, security: none}\n")


@pytest.fixture
def cfg(tmp_path) -> str:
    p = tmp_path / "mailsyncd.yaml"
    p.write_text(CONFIG)
    return str(p)


def _run(*args, umask=0o022, timeout=30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(k, None)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO, umask=umask)


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701])
@pytest.mark.parametrize("program", ["mailsyncd.cli.daemon", "mailsyncd.cli.ctl"])
def test_a_state_dir_other_users_can_enter_is_refused(tmp_path, cfg, program, mode):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    cmd = ["--config", cfg] + (["status"] if program.endswith("ctl") else [])
    r = _run(program, *cmd)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"state_dir {state} has mode {mode:04o}" in r.stderr and f"chmod 700 {state}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert os.listdir(state) == []                 # nothing written into it


def test_files_are_private_under_a_022_umask(tmp_path, cfg):
    csv = tmp_path / "accounts.csv"
    csv.write_text("target,source,password\nalice@example.com,alice@example.com,her-old-password\n")
    r = _run("mailsyncd.cli.ctl", "--config", cfg, "import", str(csv))
    assert r.returncode == 0, r.stdout + r.stderr
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    names = sorted(os.listdir(state))
    assert "mailsyncd.sqlite3" in names and "vault.key" in names, names
    for name in names:
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name


def test_ctl_check_config_refuses_too(tmp_path, cfg):
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state").chmod(0o770)
    r = ctl("--config", cfg, "check-config")
    assert r.returncode == 1 and "has mode 0770" in r.stderr, r.stderr
