"""The scheduler's cutover with the real Store and Vault, a fake clock and thread pools the test drives.

The sync pool only records passes (the test ends them); the state pool runs its work at once, as
the daemon's one state thread would, in order.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import pytest

from fakes import FakeReactor, HeldPool, SyncPool

from mailsyncd.cli import control
from mailsyncd.config import parse_config
from mailsyncd.scheduler import Scheduler
from mailsyncd.store import Store
from mailsyncd.sync.account import PassResult
from mailsyncd.vault import Vault

A = "alice@example.com"
DOMAIN = "example.com"


@pytest.fixture
def env(tmp_path, make_store, store_backend, request):
    """On both backends: `mailsyncctl cutover` and the scheduler meet in the store's cutover table."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    doc = {"state_dir": str(state), "domains": {DOMAIN: {
        "source": {"host": "127.0.0.1", "port": 1, "security": "none"},
        "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}}
    if store_backend == "postgresql":
        url, password_file = request.getfixturevalue("pg_database")
        doc["database"] = {"url": url, "password_file": password_file}
    cfg = parse_config(doc, path=str(tmp_path / "c.yaml"))
    store = make_store(str(state))
    vault = Vault(store, os.urandom(32))
    store.ensure_account(A, DOMAIN, "import")
    vault.put_password(A, "old-pw")
    reactor, passes = FakeReactor(), HeldPool(PassResult)   # passes wait until the test ends them
    reactor.advance(time.time())         # the scheduler's clock, which the CLI's --now reads as time.time()
    sched = Scheduler(reactor, passes, SyncPool(), store, vault, lambda: cfg)
    sched.start()
    yield cfg, store, vault, reactor, passes, sched
    sched.shutdown()


def _ctl(cfg, capsys, **opts) -> tuple[int, str, str]:
    args = argparse.Namespace(**{"domain": DOMAIN, "now": False, "at": None, "cancel": False, "clear": False,
                                 **opts})
    rc = control.cmd_cutover(cfg, args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _run_first_pass(reactor, passes, sched):
    assert passes.finish() == [A]                    # the regular first pass
    reactor.advance(0)


def test_a_cancel_during_the_final_pass_is_honoured_even_before_the_daemon_rereads_the_table(env, capsys):
    cfg, store, vault, reactor, passes, sched = env
    _run_first_pass(reactor, passes, sched)
    store.set_cutover(DOMAIN, reactor.seconds() - 1, "scheduled", "test")
    sched.refresh_cutovers(store.cutovers())
    sched.tick()
    reactor.advance(0)
    assert sched.cutovers[DOMAIN].state == "final_pass" and store.cutover(DOMAIN)["state"] == "final_pass"
    assert [a for _, a in passes.held] == [A]        # the final pass runs
    rc, out, err = _ctl(cfg, capsys, cancel=True)
    assert rc == 0 and "cutover cancelled" in out, out + err
    # the final pass ends before the daemon's 2-second status tick has reread the cutover table
    passes.finish()
    reactor.advance(0)
    sched.tick()
    reactor.advance(0)
    assert store.cutover(DOMAIN)["state"] == "cancelled"
    assert store.account(A)["phase"] != "cutover"
    assert vault.source_password(A) == "old-pw"
    assert not sched.is_cut_over(DOMAIN) and sched.cutovers[DOMAIN].state == "none"
    # and syncing goes on as before
    reactor.advance(10_000)
    sched.tick()
    assert [a for _, a in passes.held] == [A]


def test_a_cancel_past_the_point_of_no_return_says_too_late_and_changes_nothing(env, capsys):
    cfg, store, vault, reactor, passes, sched = env
    _run_first_pass(reactor, passes, sched)
    sealed = store.secret_password(A)[13:]          # the ciphertext, after version byte and nonce
    rc, out, err = _ctl(cfg, capsys, now=True)
    assert rc == 0, err
    reactor.advance(1)
    sched.refresh_cutovers(store.cutovers())
    sched.tick()
    reactor.advance(0)
    passes.finish()                                  # the final pass
    reactor.advance(0)
    assert sched.is_cut_over(DOMAIN) and store.account(A)["phase"] == "cutover"
    rc, out, err = _ctl(cfg, capsys, cancel=True)
    assert rc == 1 and "too late" in err and "already done" in err, out + err
    assert "cutover cancelled" not in out
    assert store.cutover(DOMAIN)["state"] == "done" and vault.source_password(A) is None
    for name in os.listdir(cfg.state_dir):          # the destroyed password cannot be carved from the files (SQLite's)
        with open(os.path.join(cfg.state_dir, name), "rb") as f:
            data = f.read()
        assert not any(sealed[i:i + 12] in data for i in range(0, len(sealed) - 11, 4)), name


def test_the_store_decides_the_cancel_rule_in_one_place(make_store):
    store = make_store()
    now = time.time()
    store.ensure_account(A, DOMAIN)
    # a cancel that lands between the scheduler's look at the table and its start of the cutover wins
    store.set_cutover(DOMAIN, now - 1, "scheduled")
    assert store.cancel_cutover(DOMAIN, "x") is None
    assert store.begin_cutover(DOMAIN, now - 1, "final pass", now)["state"] == "cancelled"
    # a postponement likewise
    store.set_cutover(DOMAIN, now + 3600, "scheduled")
    assert store.begin_cutover(DOMAIN, now - 1, "final pass", now)["state"] == "scheduled"
    # from the YAML (no row): begins; a cancel during the final passes stops the close
    store.clear_cutover(DOMAIN)
    assert store.begin_cutover(DOMAIN, now - 1, "final pass", now) is None
    assert store.cancel_cutover(DOMAIN, "x") is None
    assert store.close_cutover(DOMAIN, "closing") is None
    assert store.account(A)["phase"] != "cutover"
    # once closed, a cancel is refused
    store.set_cutover(DOMAIN, now - 1, "scheduled")
    assert store.begin_cutover(DOMAIN, now - 1, "final pass", now) is None
    assert store.close_cutover(DOMAIN, "closing") == 1
    assert store.cancel_cutover(DOMAIN, "x")["state"] == "done"
    assert store.cutover(DOMAIN)["state"] == "done" and store.account(A)["phase"] == "cutover"


# -- the scheduler's clock and policy, in-process: the fake clock is the only time it reads ----------

def _world(tmp_path, accounts: list[str], *, scheduler: dict | None = None, source: dict | None = None,
           sync: dict | None = None, cutover_at: float | None = None, start: float = 10_000.0):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    dom = {"source": {"host": "127.0.0.1", "port": 1, "security": "none", **(source or {})},
           "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}
    if sync:
        dom["sync"] = sync
    if cutover_at is not None:
        dom["cutover"] = dt.datetime.fromtimestamp(cutover_at, dt.timezone.utc).isoformat()
    cfg = parse_config({"state_dir": str(state), "scheduler": scheduler or {}, "domains": {DOMAIN: dom}},
                       path=str(tmp_path / "c.yaml"))
    store = Store.in_state_dir(str(state))
    vault = Vault(store, os.urandom(32))
    for a in accounts:
        store.ensure_account(a, DOMAIN, "import")
        vault.put_password(a, "pw-" + a)
    reactor, passes = FakeReactor(), HeldPool(PassResult)
    reactor.advance(start)        # far from the wall clock: a policy that reads time.time() shows
    return cfg, store, vault, reactor, passes


def _started(world, sched=None):
    cfg, store, vault, reactor, passes = world
    sched = sched or Scheduler(reactor, passes, SyncPool(), store, vault, lambda: cfg)
    sched.start()
    return sched


def _end(passes, reactor, **result) -> list[str]:
    done, passes.held = passes.held, []
    for on_result, address in done:
        on_result(True, PassResult(address, **result))
    reactor.advance(0)
    return [a for _, a in done]


@pytest.fixture
def closing():
    made = []
    yield made.append
    for sched, store in made:
        sched.shutdown()
        store.close()


def test_the_cutover_begins_by_the_schedulers_clock_not_the_wall_clock(tmp_path, closing):
    world = _world(tmp_path, [A])
    cfg, store, vault, reactor, passes = world
    sched = _started(world)
    closing((sched, store))
    _end(passes, reactor)
    # at: in the wall clock's distant past, but 100 s ahead on the scheduler's clock
    store.set_cutover(DOMAIN, reactor.seconds() + 100, "scheduled", "test")
    sched.refresh_cutovers(store.cutovers())
    reactor.advance(99)
    assert sched.cutovers[DOMAIN].state == "none" and store.cutover(DOMAIN)["state"] == "scheduled"
    reactor.advance(1)
    assert sched.cutovers[DOMAIN].state == "final_pass" and store.cutover(DOMAIN)["state"] == "final_pass"
    assert store.cutover(DOMAIN)["updated"] == reactor.seconds()
    assert _end(passes, reactor) == [A]                 # the final pass
    reactor.advance(1)
    assert sched.is_cut_over(DOMAIN) and store.cutover(DOMAIN)["state"] == "done"
    assert store.cutover(DOMAIN)["at"] == reactor.seconds() - 1 and vault.source_password(A) is None


def test_a_yaml_cutover_time_is_read_on_the_schedulers_clock_too(tmp_path, closing):
    world = _world(tmp_path, [A], cutover_at=10_500.0)
    cfg, store, vault, reactor, passes = world
    sched = _started(world)
    closing((sched, store))
    _end(passes, reactor)
    reactor.advance(400)
    assert sched.cutovers[DOMAIN].state == "none"
    reactor.advance(100)
    assert sched.cutovers[DOMAIN].state == "final_pass"


def test_a_pass_running_when_the_cutover_begins_is_followed_at_once_by_the_final_pass(tmp_path, closing):
    """The pass that began before the cutover does not count as the final one; the final pass follows it at
    once, not a whole pass_interval later (its good result used to reschedule the account past the cutover)."""
    world = _world(tmp_path, [A], scheduler={"pass_interval": 3600})
    cfg, store, vault, reactor, passes = world
    sched = _started(world)
    closing((sched, store))
    assert [a for _, a in passes.held] == [A]            # the first pass runs...
    store.set_cutover(DOMAIN, reactor.seconds(), "scheduled", "test")
    sched.refresh_cutovers(store.cutovers())
    reactor.advance(1)                                   # ...when the cutover begins
    assert sched.cutovers[DOMAIN].state == "final_pass"
    assert _end(passes, reactor) == [A]                  # the old pass ends well
    reactor.advance(2)
    assert [a for _, a in passes.held] == [A]            # the final pass, now
    assert _end(passes, reactor) == [A]
    reactor.advance(1)
    assert sched.is_cut_over(DOMAIN) and store.account(A)["phase"] == "cutover"


def test_a_restart_during_the_final_passes_runs_them_again_and_closes(tmp_path, closing):
    # begun with `mailsyncctl cutover --now` (no YAML time), then the daemon restarted
    world = _world(tmp_path, [A])
    cfg, store, vault, reactor, passes = world
    store.set_cutover(DOMAIN, reactor.seconds() - 5, "final_pass", "final pass of 1 accounts")
    sched = _started(world)
    closing((sched, store))
    assert sched.cutovers[DOMAIN].state == "final_pass" and sched.accounts[A].final
    assert _end(passes, reactor) == [A]
    reactor.advance(1)
    assert sched.is_cut_over(DOMAIN) and store.account(A)["phase"] == "cutover"


def test_a_good_pass_is_followed_by_the_next_one_a_pass_interval_later(tmp_path, closing):
    world = _world(tmp_path, [A], scheduler={"pass_interval": 600})
    cfg, store, vault, reactor, passes = world
    sched = _started(world)
    closing((sched, store))
    assert _end(passes, reactor) == [A]
    reactor.advance(0.9 * 600 - 1)                      # jitter: 0.9 .. 1.1 of the interval
    assert passes.held == []
    reactor.advance(0.2 * 600 + 2)
    assert [a for _, a in passes.held] == [A]


def test_accounts_at_once_per_domain_are_capped(tmp_path, closing):
    accounts = [f"u{i}@example.com" for i in range(5)]
    world = _world(tmp_path, accounts, scheduler={"max_accounts": 4, "max_accounts_per_domain": 2},
                   sync={"connections": 1})
    cfg, store, vault, reactor, passes = world
    sched = _started(world)
    closing((sched, store))
    assert len(passes.held) == 2
    _end(passes, reactor)
    assert len(passes.held) == 2                        # the next two, not four


def test_a_hosts_connection_budget_is_shared_and_halved_when_the_source_throttles(tmp_path, closing):
    accounts = [f"u{i}@example.com" for i in range(4)]
    world = _world(tmp_path, accounts, scheduler={"max_accounts": 4}, source={"max_connections": 4},
                   sync={"connections": 2})
    cfg, store, vault, reactor, passes = world
    sched = _started(world)
    closing((sched, store))
    assert sorted(r.connections for r in sched.running.values()) == [2, 2]    # 4 connections: two passes
    on_result, first = passes.held.pop(0)
    on_result(True, PassResult(first, error="NO [LIMIT] too many connections", error_kind="ConnectionLost",
                               throttled=True))
    reactor.advance(0)
    assert sched.host_limit["127.0.0.1:1"] == 2.0 and sched.counts["throttled"] == 1
    assert len(sched.running) == 1                      # the other pass holds the 2 left; nothing new starts
    _end(passes, reactor)
    assert [r.connections for r in sched.running.values()] == [2]
    # good passes grow the limit back by a quarter connection each, up to the configured cap
    for _ in range(4):
        _end(passes, reactor)
        reactor.advance(10_000)
    good = sched.counts["passes"]
    assert 2 <= good <= 7 and sched.host_limit["127.0.0.1:1"] == 2.0 + 0.25 * good, good


def test_a_failed_pass_backs_off_exponentially_up_to_the_cap(tmp_path, closing):
    world = _world(tmp_path, [A], scheduler={"failure_backoff": 100, "failure_backoff_max": 300})
    cfg, store, vault, reactor, passes = world
    sched = _started(world)
    closing((sched, store))
    for failures, wait in ((1, 100), (2, 200), (3, 300), (4, 300)):
        assert _end(passes, reactor, error="source unreachable", error_kind="Unreachable") == [A]
        assert sched.accounts[A].failures == failures
        reactor.advance(wait * 0.5 - 1)                 # jitter: half to all of the wait
        assert passes.held == [], failures
        reactor.advance(wait * 0.5 + 2)
        assert [a for _, a in passes.held] == [A], failures


def test_account_retry_ends_the_backoff_at_the_next_tick(tmp_path, closing):
    world = _world(tmp_path, [A], scheduler={"failure_backoff": 1000, "failure_backoff_max": 1000})
    cfg, store, vault, reactor, passes = world
    sched = _started(world)
    closing((sched, store))
    assert _end(passes, reactor, error="source unreachable", error_kind="Unreachable") == [A]
    store.set_phase(A, "failed", "source unreachable")       # what the pass itself records
    sched.add_accounts(store.accounts())
    reactor.advance(1)
    assert passes.held == []                                  # still backing off
    store.retry_account(A)                                    # mailsyncctl account retry
    sched.add_accounts(store.accounts())
    reactor.advance(1)
    assert [a for _, a in passes.held] == [A]
    assert sched.accounts[A].failures == 0


def test_a_removed_account_leaves_the_schedule(tmp_path, closing):
    B = "bob@example.com"
    world = _world(tmp_path, [A, B], scheduler={"pass_interval": 60})
    cfg, store, vault, reactor, passes = world
    sched = _started(world)
    closing((sched, store))
    assert sorted(_end(passes, reactor)) == [A, B]
    assert store.remove_account(B)
    sched.add_accounts(store.accounts())
    assert B not in sched.accounts
    reactor.advance(120)
    assert [a for _, a in passes.held] == [A]
