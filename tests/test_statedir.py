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


NOBODY = 65534


def _as_admin_without_root_powers(*args) -> subprocess.CompletedProcess:
    """mailsyncctl as root minus the capabilities that let root open anyone's files: what a non-root
    admin meets at the service's state (the venv here is not readable for other users, so not runuser)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
                           sys.executable, "-m", "mailsyncd.cli.ctl", *args], capture_output=True, text=True,
                          timeout=30, env=env, cwd=REPO)


@pytest.mark.parametrize("layout", ["owned by the service user", "behind /var/lib/private (0700)"])
@pytest.mark.parametrize("cmd", [["status"], ["status", "--json"], ["report", "alice@example.com"],
                                 ["account", "retry", "alice@example.com", "--yes"]])
def test_a_state_dir_it_cannot_read_says_how_to_get_in(tmp_path, cmd, layout):
    if layout.startswith("behind"):
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        state = private / "mailsyncd"
        link = tmp_path / "state"
        os.symlink(state, link)
    else:
        state = link = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = tmp_path / "mailsyncd.yaml"
    cfg.write_text(CONFIG.replace("./state", str(link)))
    assert _run("mailsyncd.cli.ctl", "--config", str(cfg), "status").returncode == 0   # root: it works
    for p in (state, state.parent) if layout.startswith("behind") else (state,):
        for d, _dirs, names in os.walk(p):
            for n in [d, *(os.path.join(d, x) for x in names)]:
                os.chown(n, NOBODY, NOBODY)
    r = _as_admin_without_root_powers("--config", str(cfg), *cmd)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert f"cannot use the state in {link}: permission denied" in r.stderr, r.stderr
    assert "run this as root" in r.stderr and "-p User=mailsyncd -p StateDirectory=mailsyncd" in r.stderr
    assert r.stdout == ""
