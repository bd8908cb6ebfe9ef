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
    for code, words in (("3", "skipped"), ("4", "restart"), ("6", "syncing the account"), ("141", "went away")):
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


# -- one-off sync and `mailsyncctl account`: the real CLI on the real store ------------------------------

A = "alice@example.com"


def _store(cfg: str):
    from mailsyncd.config import load_config
    from mailsyncd.store import Store
    return Store.open(load_config(cfg))


def _state_dir(cfg: str) -> str:
    from mailsyncd.config import load_config
    return load_config(cfg).state_dir


def _phase(cfg: str, address: str):
    store = _store(cfg)
    try:
        acct = store.account(address)
        return None if acct is None else acct["phase"]
    finally:
        store.close()


def test_one_off_sync_of_an_unknown_address_leaves_nothing(cfg_path, tmp_path):
    from syncenv import password_file
    r = ctl("sync", "nobody@example.com", "--password-file", password_file(tmp_path, "x"), "-c", cfg_path)
    assert r.returncode == 1 and "--add" in r.stderr, r.stderr
    assert _phase(cfg_path, "nobody@example.com") is None


def test_one_off_sync_with_a_wrong_password_keeps_the_phase_unless_asked(tmp_path, dovecot_pair):
    from syncenv import make_config, password_file, sync_once
    cfg = make_config(tmp_path, dovecot_pair)
    assert sync_once(cfg, A, "alice-old-pw").complete            # the daemon's pass: in sync
    assert _phase(cfg, A) == "synced"
    wrong = password_file(tmp_path, "wrong-pw")
    r = ctl("sync", A, "--password-file", wrong, "--progress", "none", "-c", cfg)
    assert r.returncode == 1 and "failed" in r.stderr
    assert _phase(cfg, A) == "synced"
    r = ctl("sync", A, "--password-file", wrong, "--progress", "none", "--record", "-c", cfg)
    assert r.returncode == 1
    assert _phase(cfg, A) == "failed"
    r = ctl("account", "retry", A, "--yes", "-c", cfg)
    assert r.returncode == 0, r.stderr
    assert _phase(cfg, A) == "synced"                               # its last good pass says so
    r = ctl("sync", "bob@example.com", "--add", "--password-file", password_file(tmp_path, "bob-old-pw", "b.pw"),
            "--progress", "none", "-c", cfg)
    assert r.returncode == 0, r.stderr
    assert _phase(cfg, "bob@example.com") == "synced"               # added: its phase from this pass


@pytest.fixture
def seeded(cfg_path, store_backend, request):
    """alice with a stored password, a folder row, a pass and a known network: rows in several tables.
    On both backends (the account commands are the store's deletes)."""
    from syncenv import on_backend

    from mailsyncd.vault import Vault
    on_backend(cfg_path, request, store_backend)
    store = _store(cfg_path)
    try:
        store.ensure_account(A, "example.com", "import")
        vault = Vault.open(_state_dir(cfg_path), store)
        vault.put_password(A, "alice-secret-pw")
        store.finish_pass(store.start_pass(A), ok=False, copied=0, present=0, skipped=0, nbytes=0,
                          error="x", deleted=0)
        store.remember_network(A, "127.0.0.1/32")
        blob = store.secret_password(A)
    finally:
        store.close()
    return cfg_path, blob


def _db_bytes(cfg: str) -> bytes:
    """SQLite's files, where a dropped ciphertext must not be found (PostgreSQL's: README, secure deletion)."""
    path = os.path.join(_state_dir(cfg), "mailsyncd.sqlite3")
    out = b""
    for p in (path, path + "-wal"):
        if os.path.exists(p):
            with open(p, "rb") as f:
                out += f.read()
    return out


@pytest.mark.parametrize("action", ["remove", "forget-password", "retry"])
def test_account_commands_need_a_confirmation(seeded, action):
    cfg, blob = seeded
    store = _store(cfg)
    store.set_phase(A, "failed", "x")
    store.close()
    r = ctl("account", action, A, "-c", cfg, input="y\n")          # stdin is no terminal: refused
    assert r.returncode == 1 and "--yes" in r.stderr
    store = _store(cfg)
    try:
        assert store.account(A)["phase"] == "failed" and store.secret_password(A) == blob
    finally:
        store.close()


def test_account_remove_deletes_every_row_and_the_password(seeded):
    cfg, blob = seeded
    r = ctl("account", "remove", A, "--yes", "-c", cfg)
    assert r.returncode == 0, r.stderr
    store = _store(cfg)
    try:
        c = store._conn()
        tables = store._columns(c)
        assert {"accounts", "secrets", "passes", "known_networks"} <= set(tables)
        for table, cols in tables.items():
            for col in {"account", "address"} & cols:
                assert c.execute(f"SELECT count(*) FROM {table} WHERE {col}=?", (A,)).fetchone()[0] == 0, table
    finally:
        store.close()
    assert blob not in _db_bytes(cfg)
    r = ctl("account", "remove", A, "--yes", "-c", cfg)
    assert r.returncode == 1 and "no account" in r.stderr


def test_account_forget_password_destroys_the_ciphertext(seeded, store_backend):
    cfg, blob = seeded
    assert blob in _db_bytes(cfg) or store_backend == "postgresql"
    r = ctl("account", "forget-password", A, "--yes", "-c", cfg)
    assert r.returncode == 0, r.stderr
    assert blob not in _db_bytes(cfg)
    store = _store(cfg)
    try:
        assert store.secret_password(A) is None and store.account(A) is not None   # the account itself stays
    finally:
        store.close()


def test_account_commands_refused_during_a_running_pass(seeded):
    # the daemon's status file as `status` reads it: a live pid with a pass of alice under way
    import json
    cfg, blob = seeded
    state = _state_dir(cfg)
    with open(os.path.join(state, "daemon.json"), "w") as f:
        json.dump({"pid": os.getpid(), "live": {A: {"done": 1, "total": 9}}}, f)
    # (sync is refused by the account's lease instead, from any node: tests/test_oneoff_lease.py)
    for cmd in (["account", "remove", A, "--yes"], ["account", "forget-password", A, "--yes"]):
        r = ctl(*cmd, "-c", cfg, input="pw\n")
        assert r.returncode == 1 and "syncing it now" in r.stderr, (cmd, r.stderr)
    store = _store(cfg)
    try:
        assert store.secret_password(A) == blob
    finally:
        store.close()


def test_account_commands_refused_while_another_node_holds_the_accounts_lease(seeded):
    """A shared database: the pass may run on another machine, whose daemon.json is not here."""
    import time
    cfg, blob = seeded
    store = _store(cfg)
    try:
        lease = store.claim_lease(A, "n7", time.time(), 60, host="127.0.0.1:1", wanted=1, cap=4, ignore_due=True)
    finally:
        store.close()
    for cmd in (["account", "remove", A, "--yes"], ["account", "forget-password", A, "--yes"]):
        r = ctl(*cmd, "-c", cfg, input="pw\n")
        assert r.returncode == 1 and "node n7 holds its lease" in r.stderr, (cmd, r.stderr)
    store = _store(cfg)
    try:
        assert store.secret_password(A) == blob and store.account(A) is not None
        store.release_lease(lease, 0.0)
    finally:
        store.close()
    r = ctl("account", "forget-password", A, "--yes", "-c", cfg, input="pw\n")
    assert r.returncode == 0, r.stderr


def test_status_without_a_daemon_says_not_running_and_unknown(seeded):
    cfg, _blob = seeded                 # alice: a password, a failed pass, no source count yet
    r = ctl("status", "-c", cfg)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith(A))
    assert "not running" in line and "ago" not in line.split()[-1:], line
    assert "unknown" in line and "0/0" not in line and "0.0%" not in line, line
    dom = next(x for x in r.stdout.splitlines() if x.startswith("example.com"))
    assert "unknown" in dom and "0 of 0" not in dom and "0.0%" not in dom, dom
    assert "daemon: not running" in r.stdout
