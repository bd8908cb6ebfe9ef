"""The daemon's wiring in process: reload of a bad and a good config file, and the status file.

The Daemon is built on a fake reactor and never started: no socket is bound and no thread runs
(its state pool is swapped for a synchronous one), so a reload or a status tick is one call.
What needs the real process (signals, sd_notify over a socket, listeners) is in test_daemon.py.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
import yaml

from fakes import FakeReactor, HeldPool, SyncPool

from mailsyncd import daemon as daemon_mod
from mailsyncd.config import load_config
from mailsyncd.sync.account import PassResult
from mailsyncd.vault import Vault


class Notifier:
    """Records what the daemon would tell systemd."""

    def __init__(self):
        self.sent: list[tuple[str, str | None]] = []

    def __getattr__(self, name):
        return lambda status=None: self.sent.append((name, status))


def domain(port: int) -> dict:
    return {"source": {"host": "127.0.0.1", "port": port, "security": "none"},
            "target": {"host": "127.0.0.1", "port": port + 1, "security": "none"}}


def _env(tmp_path, request, backend="sqlite"):
    from syncenv import on_backend
    state = tmp_path / "state"
    path = tmp_path / "mailsyncd.yaml"
    doc = {"state_dir": str(state), "listen": {"imap": "127.0.0.1:1"},
           "frontdoor": {"allow_plaintext_login": True}, "domains": {"example.com": domain(10)}}
    path.write_text(yaml.safe_dump(doc))
    on_backend(str(path), request, backend)
    doc = yaml.safe_load(path.read_text())
    notifier = Notifier()
    d = daemon_mod.Daemon(load_config(str(path)), FakeReactor(), notifier=notifier)
    d.state_pool = d.scheduler.state_pool = SyncPool()       # the one state thread, run at once
    return d, path, doc, notifier


@pytest.fixture
def env(tmp_path, request):
    d, path, doc, notifier = _env(tmp_path, request)
    yield d, path, doc, notifier
    d.store.close()


@pytest.fixture
def env_on_backend(tmp_path, request, store_backend):
    d, path, doc, notifier = _env(tmp_path, request, store_backend)
    yield d, path, doc, notifier
    d.store.close()


def status_file(d) -> dict:
    with open(os.path.join(d.config.state_dir, daemon_mod.STATUS_FILE)) as f:
        return json.load(f)


def test_a_bad_reload_keeps_the_running_config_and_says_why(env, caplog):
    d, path, doc, notifier = env
    old = d.config
    path.write_text(yaml.safe_dump({**doc, "domains": {"example.com": domain(70000)}}))
    with caplog.at_level(logging.INFO, logger="mailsyncd"):
        d.reload()
    assert d.config is old and d.generation == 1
    assert "source.port" in d.reload_error and "example.com" in d.reload_error, d.reload_error
    assert notifier.sent[0] == ("reloading", None)
    assert notifier.sent[-1][0] == "ready" and notifier.sent[-1][1].startswith("reload failed: ")
    st = status_file(d)
    assert (st["generation"], st["reloads"], st["reload_error"]) == (1, 1, d.reload_error)
    assert "event=reload_failed keeping=generation-1" in caplog.text
    assert not any(r.exc_info for r in caplog.records)          # an expected failure: no traceback
    assert d.status_line().startswith("reload failed: ")


def test_a_good_reload_adds_a_domain_and_clears_the_last_error(env, caplog):
    d, path, doc, notifier = env
    path.write_text("domains: [")                               # not YAML
    d.reload()
    assert d.reload_error and d.generation == 1
    path.write_text(yaml.safe_dump({**doc, "domains": {**doc["domains"], "example.net": domain(20)}}))
    with caplog.at_level(logging.INFO, logger="mailsyncd"):
        d.reload()
    assert d.generation == 2 and d.reload_error is None and sorted(d.config.domains) == ["example.com",
                                                                                         "example.net"]
    assert "event=reloaded generation=2 domains=example.com,example.net added=example.net removed=-" in caplog.text
    st = status_file(d)
    assert (st["generation"], st["reloads"], st["reload_error"], st["domains"]) == \
        (2, 2, None, ["example.com", "example.net"])
    assert notifier.sent[-1][0] == "ready" and not notifier.sent[-1][1].startswith("reload failed")


def test_a_status_tick_picks_up_an_import_made_by_another_process(env_on_backend, make_store):
    d, _path, _doc, notifier = env_on_backend
    d.scheduler.sync_pool = passes = HeldPool(PassResult)
    d.scheduler.start()
    d._tick_status()
    assert status_file(d)["scheduler"]["scheduled"] == 0
    other = make_store(d.config.state_dir)              # mailsyncctl import, another process
    sealed = Vault.open(d.config.state_dir, other).seal("bob@example.com", "bob-pw")
    other.import_accounts([("bob@example.com", "example.com", "import", None, sealed),
                           ("carol@example.com", "example.com", "import", None, None)])
    other.close()
    d._tick_status()
    st = status_file(d)
    assert sum(st["phases"].values()) == 2, st
    assert st["scheduler"]["scheduled"] == 1, st                # carol has no password: nothing to sync with
    assert ("status", d.status_line()) in notifier.sent
    d.reactor.advance(0)
    assert passes.finish() == ["bob@example.com"]               # and bob's first pass starts at once


def test_a_reload_keeps_the_database_it_started_with_and_says_restart(env, caplog, tmp_path):
    d, path, doc, notifier = env
    pw = tmp_path / "db.pw"
    pw.write_text("x\n")
    path.write_text(yaml.safe_dump({**doc, "database": {"url": "postgresql://u@127.0.0.1:1/db",
                                                        "password_file": str(pw)}}))
    with caplog.at_level(logging.INFO, logger="mailsyncd"):
        d.reload()
    assert d.generation == 2 and d.reload_error is None
    assert d.restart_needed == ["database changes only on restart"]
    assert d.config.database.url is None and d.store.backend == "sqlite"
