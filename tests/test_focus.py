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


def _folder_state(path):
    from mailsyncd.store.records import FolderState
    return FolderState(path, path, path, 1, 0, 1, 0, None, None)    # copied whole: 0 messages, 0 left


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


def test_a_folder_the_running_pass_copied_before_the_open_is_copied_again_with_a_new_status(world):
    # the pass's snapshot of the folder (its LIST-STATUS) is older than the open: mail may have come since
    cfg, store, vault, reactor, passes, sched = world()
    q = sched.running[A].focus
    q.plan({"INBOX": "INBOX"}, {"INBOX": 3})
    pending = {"INBOX": "inbox-job"}
    planned = dict(pending)
    pending.pop("INBOX")                                # the planned order took it
    q.done("INBOX", None)
    got = _results(sched.focus(A, "INBOX", reason="open"))
    assert got == []                                    # not answered from the old snapshot
    assert q.take(pending, planned) == "inbox-job"      # requeued into the running pass...
    assert q.fresh("INBOX") and not q.fresh("INBOX")    # ...which asks the source's STATUS anew
    q.done("INBOX", None)
    assert got[0].state == "done"


def test_a_waiter_registered_after_its_folders_job_was_taken_is_not_answered_by_that_job(world):
    cfg, store, vault, reactor, passes, sched = world()
    q = sched.running[A].focus
    q.plan({"INBOX": "INBOX", "Work": "Work"}, {"Work": 287})
    pending = {"INBOX": "inbox-job", "Work": "work-job"}
    planned = dict(pending)
    pending.pop("Work")                                 # a worker copies Work from the plan's STATUS (287)
    left: list[int] = []
    got = _results(sched.focus(A, "Work", reason="open", on_left=left.append))
    q.done("Work", None)                                # that copy ends with 287
    assert got == [] and left == [287]
    assert q.take(pending, planned) == "work-job" and q.fresh("Work")
    q.done("Work", None)                                # the copy from a STATUS taken after the open
    assert got[0].state == "done" and got[0].path == "Work"


def test_a_folder_being_copied_from_an_older_snapshot_stays_queued_until_that_copy_ends():
    q = FocusQueue()
    q.plan({"Work": "Work", "INBOX": "INBOX"}, {})
    planned = {"Work": "work-job", "INBOX": "inbox-job"}
    pending = {"INBOX": "inbox-job"}                    # a worker took Work by the planned order
    q.push("Work")
    assert q.take(pending, planned) is None and q.waiting()
    q.done("Work", None)
    assert q.take(pending, planned) == "work-job" and q.fresh("Work")
    assert not q.finished("Work", 1)[0]
    q.done("Work", None)
    assert q.finished("Work", 1) == (True, None) and q.take(pending, planned) is None


def test_an_open_the_running_pass_answers_with_the_snapshot_it_took_before_is_answered_done(world):
    # focus asked before the pass's LIST-STATUS: the plan's snapshot is newer, no second copy
    cfg, store, vault, reactor, passes, sched = world()
    q = sched.running[A].focus
    got = _results(sched.focus(A, "Work", reason="open"))
    q.snapshot()
    q.plan({"Work": "Work"}, {"Work": 4})
    pending = {"Work": "work-job"}
    assert q.take(pending, {"Work": "work-job"}) == "work-job" and not q.fresh("Work")
    q.done("Work", None)
    assert got[0].state == "done"


def test_an_open_during_a_watch_pass_not_yet_planned_is_held_not_judged_from_the_store(world):
    # the store says the folder is complete (its last pass's count); a pass (started by the watch) is
    # about to look at the source again: the open waits for it rather than go through with what is old
    cfg, store, vault, reactor, passes, sched = world(scheduler={"pass_interval": 86400})
    q = sched.running[A].focus
    q.plan({"INBOX": "INBOX"}, {"INBOX": 0})
    store.save_folder(A, _folder_state("INBOX"))
    _end(passes, reactor)
    assert _results(sched.folder_left(A, "INBOX")) == [None]     # no pass: complete as far as anyone knows
    sched.sync_now(A)                                   # the watch saw new mail
    assert _results(sched.folder_left(A, "INBOX")) == [("INBOX", None)]
    reactor.advance(0)
    assert A in sched.running and not sched.running[A].focus.planned
    assert _results(sched.folder_left(A, "INBOX")) == [("INBOX", None)]
    sched.running[A].focus.plan({"INBOX": "INBOX"}, {"INBOX": 0})
    sched.running[A].focus.done("INBOX", None)
    assert _results(sched.folder_left(A, "INBOX")) == [("INBOX", None)]   # copied from a snapshot before it


def test_an_open_just_after_the_watchs_copy_of_that_folder_is_held_for_a_fresh_look(world):
    # the watch's news started a copy of Work that listed it while mail was still arriving; the source's
    # notice of the rest comes after the client's SELECT. For NEWS_FRESH seconds the store's "complete" is
    # not believed for that folder: the open is held and the folder looked at again (bench/open_folder.py
    # --watch auto showed 259 of 300 as complete)
    from mailsyncd.scheduler import NEWS_FRESH
    cfg, store, vault, reactor, passes, sched = world(scheduler={"pass_interval": 86400})
    sched.running[A].focus.plan({"INBOX": "INBOX", "Work": "Work"}, {"INBOX": 0, "Work": 0})
    for path in ("INBOX", "Work"):
        store.save_folder(A, _folder_state(path))
    _end(passes, reactor)
    assert _results(sched.folder_left(A, "Work")) == [None]
    got = _results(sched.focus(A, "Work", reason="watch"))
    reactor.advance(0)
    q = sched.running[A].focus
    q.plan({"INBOX": "INBOX", "Work": "Work"}, {"Work": 0})
    q.done("Work", None)
    _end(passes, reactor)
    assert got[0].state == "done" and A not in sched.running
    assert _results(sched.folder_left(A, "Work")) == [("Work", None)]     # held: looked at again
    assert _results(sched.folder_left(A, "INBOX")) == [None]              # no news there: complete
    reactor.advance(NEWS_FRESH)
    assert _results(sched.folder_left(A, "Work")) == [None]               # the news is old: complete


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


def test_names_no_source_folder_has_cost_no_source_look_while_the_last_plan_is_fresh(world):
    # A client SELECTing a new made-up name each time (x1, x2, ...) must not make the daemon log in to
    # the source once per SELECT: the last plan listed every source folder, and none of them is it.
    from mailsyncd.scheduler import ABSENT_TTL, UNKNOWN_LOOKS
    cfg, store, vault, reactor, passes, sched = world(scheduler={"pass_interval": 86400})
    _end(passes, reactor)
    got = _results(sched.focus(A, ByTarget("x0"), reason="open"))
    reactor.advance(0)
    sched.running[A].focus.plan({"INBOX": "INBOX", "Work": "Work"}, {})
    assert got[0].state == "absent"
    _end(passes, reactor)
    # a few names the plan did not have are looked for (a folder made at the source since: a pass tells)...
    assert [_results(sched.folder_left(A, f"x{i}")) for i in range(1, 1 + UNKNOWN_LOOKS)] == \
        [[(ByTarget(f"x{i}"), None)] for i in range(1, 1 + UNKNOWN_LOOKS)]
    # ...then no more until ABSENT_TTL has passed
    for i in range(1 + UNKNOWN_LOOKS, 500):
        assert _results(sched.folder_left(A, f"x{i}")) == [None]
    assert passes.held == []
    # a name the plan has is still looked up (the store has no copy of it yet: a pass must tell)
    assert _results(sched.folder_left(A, "Work")) == [(ByTarget("Work"), None)]
    reactor.advance(ABSENT_TTL)
    assert _results(sched.folder_left(A, "x600")) == [(ByTarget("x600"), None)]


def test_a_flood_of_opened_names_while_no_pass_can_start_keeps_a_bounded_queue(world):
    # B's pass holds the only slot, so A's focused pass cannot start: a client SELECTing a new name every
    # few seconds (the hold's deadline releases it each time) must not grow A's queue and waiters forever.
    from mailsyncd.scheduler import MAX_FOCUS_WAITING
    cfg, store, vault, reactor, passes, sched = world([A, B], scheduler={"pass_interval": 86400,
                                                                        "max_accounts": 1})
    first = _end(passes, reactor)
    assert [a for _, a in passes.held] != first          # the other account's first pass runs now
    idle = first[0]
    got = [_results(sched.focus(idle, ByTarget(f"x{i}"), reason="open")) for i in range(5000)]
    reactor.advance(0)
    assert len(sched._focus_waiters[idle]) <= MAX_FOCUS_WAITING
    assert len(sched.accounts[idle].focus) <= MAX_FOCUS_WAITING
    assert all(g == [] for g in got[:MAX_FOCUS_WAITING])             # the first ones still wait their turn
    assert got[-1] and got[-1][0].state == "failed"                  # the rest are answered at once
