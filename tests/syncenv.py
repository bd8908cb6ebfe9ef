"""Helpers for sync tests: a config for a Dovecot pair, and ways to run a pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import yaml

from mailsyncd.config import load_config
from mailsyncd.store import Store
from mailsyncd.sync.account import AccountSync, PassResult

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(tmp_path, pair, *, folders=None, sync=None, source=None, target=None,
                name="mailsyncd.yaml") -> str:
    master_file = tmp_path / "master.secret"
    master_file.write_text(pair.master[1] + "\n")
    master_file.chmod(0o600)
    src = {"host": "127.0.0.1", "port": pair.source.imap_port, "security": "none", "protocol": "imap"}
    tgt = {"host": "127.0.0.1", "port": pair.target.imap_port, "security": "none", "auth": "master",
           "master_user": pair.master[0], "master_password_file": str(master_file)}
    src.update(source or {})
    tgt.update(target or {})
    dom = {"source": src, "target": tgt, "folders": folders or {"layout": "mirror"}}
    doc = {"state_dir": str(tmp_path / "state"), "domains": {"example.com": dom}}
    if sync:
        doc["sync"] = sync
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return str(path)


def sync_once(cfg_path: str, address: str, password: str, **kw) -> PassResult:
    cfg = load_config(cfg_path)
    store = Store.open(cfg)
    try:
        return AccountSync(cfg.domain_for(address), address, password, store, **kw).run()
    finally:
        store.close()


def on_backend(cfg_path: str, request, backend: str) -> str:
    """The config with its state in a PostgreSQL database of the test's own (migrated), if ``backend`` says so."""
    if backend == "postgresql":
        url, pw_file = request.getfixturevalue("pg_database")
        doc = yaml.safe_load(open(cfg_path))
        doc["database"] = {"url": url, "password_file": pw_file}
        open(cfg_path, "w").write(yaml.safe_dump(doc, allow_unicode=True))
        Store.open(load_config(cfg_path), migrate=True).close()
    return cfg_path


def ctl(*args: str, input: str | None = None, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "mailsyncd.cli.ctl", *args], input=input, capture_output=True,
                          text=True, timeout=timeout, env=e, cwd=REPO)


def ctl_popen(*args: str, stdout=None, stderr=None) -> subprocess.Popen:
    e = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "mailsyncd.cli.ctl", *args], cwd=REPO, env=e,
                            stdout=stdout or subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL)


def password_file(tmp_path, password: str, name: str = "old.pw") -> str:
    p = tmp_path / name
    p.write_text(password + "\n")
    p.chmod(0o600)
    return str(p)


def kill_at(p: subprocess.Popen, count: Callable[[], int], at: int) -> int | None:
    """SIGKILL ``p`` once ``count()`` (messages on the target) reaches ``at``; the count then, or None if ``p``
    ended first.  Waits for ``p`` either way."""
    while p.poll() is None and count() < at:
        time.sleep(0.01)
    killed = None
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        killed = count()
    p.wait()
    return killed
