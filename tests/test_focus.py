"""Scheduler.focus, the folder the user opens goes next: the queueing policy, in-process, with a fake clock.

The sync pool holds each pass (HeldPool); the test plays the pass's part through its FocusQueue
(plan, done) as AccountSync's workers would.
"""

from __future__ import annotations

import pytest

from test_scheduler import DOMAIN, A, _end, _started, _world

from mailsyncd.focus import ByTarget, FocusQueue

B = "bob@example.com"


@pytest.fixture
def world(tmp_path):
    made = []

    def make(accounts=(A,), **kw):
        w = _world(tmp_path, list(accounts), **kw)
        sched = _started(w)
        made.append((sched, w[1]))
        return (*w, sched)
    yield make
    for sched, store in made:
        sched.shutdown()
        store.close()


def _results(d):
    out = []
    d.addCallback(out.append)
    return out


def test_focus_starts_a_focused_pass_at_once_and_fires_when_the_folder_is_copied(world):
    cfg, store, vault, reactor, passes, sched = world(scheduler={"pass_interval": 86400})
    assert _end(passes, reactor) == [A]                 # the first full pass
    due = sched.accounts[A].due
    reactor.advance(5)
    assert passes.held == []                            # nothing due for a day
    left: list[int] = []
    got = _results(sched.focus(A, "Projects", reason="open", on_left=left.append))
    reactor.advance(0)
    assert [a for _, a in passes.held] == [A]           # at once, not at the next pass interval
    q = sched.running[A].focus
    assert q.only                                       # restricted to the queued folders
    assert q.names("Projects", "Projects") and not q.names("INBOX", "INBOX")
    q.plan({"INBOX": "INBOX", "Projects": "Projects"}, {"Projects": 300})
    assert left == [300] and got == []
    assert q.take({"INBOX": "inbox-job", "Projects": "projects-job"}) == "projects-job"
    q.done("Projects", None)
    assert got and got[0].state == "done" and got[0].path == "Projects"
    assert _end(passes, reactor) == [A]
    # a focused pass is not the account's pass: its schedule, counts and pass history stay as they were
    assert sched.accounts[A].due == due and sched.counts["passes"] == 1
    reactor.advance(10)
    assert passes.held == []


def test_a_focused_account_jumps_ahead_of_other_accounts_waiting_passes(world):
    cfg, store, vault, reactor, passes, sched = world([A, B], scheduler={"pass_interval": 86400,
                                                                        "max_accounts": 1})
    first = _end(passes, reactor)
    second = _end(passes, reactor)
    assert sorted(first + second) == [A, B]
    sched.sync_now(B)                                   # B's full pass is due and waiting...
    sched.focus(A, "INBOX", reason="open")              # ...A's folder goes first
    reactor.advance(0)
    assert [a for _, a in passes.held] == [A]
    _end(passes, reactor)
    assert [a for _, a in passes.held] == [B]


def test_a_running_pass_takes_the_focused_folder_next_and_no_second_pass_starts(world):
    cfg, store, vault, reactor, passes, sched = world()
    assert [a for _, a in passes.held] == [A]           # the first pass is running
    q = sched.running[A].focus
    assert not q.only
    q.plan({"INBOX": "INBOX", "Big": "Big", "Small": "Small"}, {"INBOX": 10, "Big": 5000, "Small": 300})
    got = _results(sched.focus(A, ByTarget("Small"), reason="open"))
    reactor.advance(5)
    assert [a for _, a in passes.held] == [A]           # still the one pass
    pending = {"Big": "big", "Small": "small", "INBOX": "inbox"}
    assert q.take(pending) == "small" and q.take(pending) is None   # then the planned order resumes
    q.done("Small", None)
    assert got[0].state == "done"


def test_a_folder_the_running_pass_already_copied_answers_at_once(world):
    cfg, store, vault, reactor, passes, sched = world()
    q = sched.running[A].focus
    q.plan({"INBOX": "INBOX"}, {"INBOX": 3})
    q.done("INBOX", None)
    got = _results(sched.focus(A, "INBOX", reason="open"))
    assert got[0].state == "done"


def test_a_focus_the_pass_was_too_late_for_gets_a_focused_pass_right_after(world):
    cfg, store, vault, reactor, passes, sched = world(scheduler={"pass_interval": 86400})
    q = sched.running[A].focus
    q.plan({"INBOX": "INBOX", "Work": "Work"}, {"INBOX": 3, "Work": 0})
    got = _results(sched.focus(A, "Work", reason="open"))   # the workers have stopped taking
    assert _end(passes, reactor) == [A] and got == []
    assert [a for _, a in passes.held] == [A]           # right after, never beside it
    q2 = sched.running[A].focus
    assert q2 is not q and q2.only
    q2.plan({"INBOX": "INBOX", "Work": "Work"}, {"Work": 0})
    q2.done("Work", None)
    assert got[0].state == "done"


def test_a_name_no_source_folder_has_is_answered_absent_once_planned(world):
    cfg, store, vault, reactor, passes, sched = world()
    got = _results(sched.focus(A, ByTarget("Only on the new server"), reason="open"))
    assert got == []
    sched.running[A].focus.plan({"INBOX": "INBOX"}, {"INBOX": 0})
    assert got[0].state == "absent"


def test_a_failed_pass_fails_its_focus_rather_than_leaving_it_waiting(world):
    cfg, store, vault, reactor, passes, sched = world()
    got = _results(sched.focus(A, "INBOX", reason="open"))
    _end(passes, reactor, error="connection refused", error_kind="Unreachable")
    assert got[0].state == "failed"


def test_a_focus_queue_copies_its_folders_in_the_order_given():
    q = FocusQueue(["B", "A"], only=True)
    q.plan({"A": "A", "B": "B", "C": "C"}, {})
    pending = {"A": 1, "B": 2, "C": 3}
    assert [q.take(pending), q.take(pending), q.take(pending)] == [2, 1, None]


def test_a_folder_finished_just_before_its_pass_ended_is_answered_done(world):
    cfg, store, vault, reactor, passes, sched = world()
    q = sched.running[A].focus
    q.notify = lambda: None          # the pass's last word arrives with its end, not before
    q.plan({"INBOX": "INBOX", "Work": "Work"}, {"Work": 4})
    got = _results(sched.focus(A, "Work", reason="open"))
    q.take({"Work": "job"})
    q.done("Work", None)
    assert got == []
    _end(passes, reactor)
    assert got[0].state == "done" and passes.held == []     # and no focused pass for it afterwards


# -- AccountSync(focus=[...]) against a real Dovecot pair ------------------------------------------------

def test_a_focused_pass_copies_just_those_folders_in_that_order_and_records_no_pass(dovecot_pair, tmp_path):
    from seed import Msg, make_message, seed, snapshot
    from syncenv import make_config, sync_once

    from mailsyncd.store import Store
    from mailsyncd.sync.progress import Progress
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(3)],
                                   "Alpha": [Msg(make_message(10 + i)) for i in range(4)],
                                   "Beta": [Msg(make_message(20 + i)) for i in range(5)],
                                   "Gamma": [Msg(make_message(30 + i)) for i in range(6)]})
    cfg = make_config(tmp_path, pair)
    opened: list[str] = []
    progress = Progress(lambda p: [opened.append(f) for f in p.current if f not in opened])
    res = sync_once(cfg, A, pair.users[A].old_password, focus=["Alpha", "Gamma"], progress=progress,
                    connections=1)
    assert res.error is None and sorted(f.path for f in res.folders) == ["Alpha", "Gamma"]
    assert opened == ["Alpha", "Gamma"]                  # in the order given, not biggest first
    source, target = snapshot(*pair.source_account(A)), snapshot(*pair.target_master_account(A))
    assert target["Alpha"] == source["Alpha"] and target["Gamma"] == source["Gamma"]
    assert "Beta" not in target and target.get("INBOX", []) == []
    store = Store.in_state_dir(str(tmp_path / "state"))
    try:
        assert store.passes(A) == [] and store.account(A)["phase"] == "new"
    finally:
        store.close()


def test_a_name_no_source_folder_has_costs_the_source_one_look_per_ttl(world):
    from mailsyncd.scheduler import ABSENT_TTL
    cfg, store, vault, reactor, passes, sched = world(scheduler={"pass_interval": 86400})
    _end(passes, reactor)
    looked = _results(sched.folder_left(A, "Mine"))
    assert looked == [(ByTarget("Mine"), None)]         # never copied: only a pass can tell
    got = _results(sched.focus(A, ByTarget("Mine"), reason="open"))
    reactor.advance(0)
    sched.running[A].focus.plan({"INBOX": "INBOX"}, {})
    assert got[0].state == "absent"
    _end(passes, reactor)
    again = _results(sched.folder_left(A, "Mine"))
    assert again == [None]                              # a client opening it again does not start a pass
    reactor.advance(ABSENT_TTL)
    assert _results(sched.folder_left(A, "Mine")) == [(ByTarget("Mine"), None)]


def test_a_running_pass_gets_one_more_connection_for_the_opened_folder_within_the_hosts_budget(world):
    cfg, store, vault, reactor, passes, sched = world(source={"max_connections": 5}, sync={"connections": 4})
    run = sched.running[A]
    assert run.connections == 4
    spawned: list[int] = []
    run.focus.attach(lambda: spawned.append(1) or True)     # what AccountSync attaches once its workers run
    run.focus.plan({"INBOX": "INBOX", "Work": "Work", "Big": "Big"}, {"Work": 20})
    sched.focus(A, "Work", reason="open")
    assert spawned == [1] and run.connections == 5 and sched._host_free(run.host, cfg.domains[DOMAIN].source) == 0
    sched.focus(A, "Big", reason="open")                    # one extra a pass, and the budget is spent
    assert spawned == [1] and run.connections == 5
    # a login check now waits for a connection, as for any pass
    assert not _results(sched.acquire(cfg.domains[DOMAIN].source, wait=5))


def test_no_extra_connection_when_the_host_has_none_to_spare(world):
    cfg, store, vault, reactor, passes, sched = world(source={"max_connections": 4}, sync={"connections": 4})
    run = sched.running[A]
    spawned: list[int] = []
    run.focus.attach(lambda: spawned.append(1) or True)
    run.focus.plan({"Work": "Work"}, {"Work": 20})
    sched.focus(A, "Work", reason="open")
    assert spawned == [] and run.connections == 4
