"""The cutover machine (mailsyncd.cutover): its table, and the store's atomic moves agreeing with it."""

from __future__ import annotations

import pytest

from mailsyncd import cutover
from mailsyncd.store import Store
from mailsyncd.web.admin import change_cutover

DOMAIN = "example.com"
A = "alice@example.com"
NOW = 1_900_000_000.0


def _seed(store: Store, state: str, at: float | None = NOW - 1) -> None:
    if state == cutover.NONE:
        store.clear_cutover(DOMAIN)
    else:
        store.set_cutover(DOMAIN, at, state, "seeded")


@pytest.fixture
def store(make_store):
    s = make_store()
    s.ensure_account(A, DOMAIN)
    return s


def test_every_state_and_event_has_a_decision_and_done_is_final():
    for state in cutover.STATES:
        for event in (cutover.SCHEDULE, cutover.CLEAR, cutover.CANCEL, cutover.BEGIN, cutover.CLOSE):
            nxt = cutover.next_state(state, event)
            assert nxt is None or nxt in cutover.STATES
    assert not any(s == cutover.DONE for s, _ in cutover.TRANSITIONS)        # nothing leaves done
    assert cutover.next_state(cutover.FINAL_PASS, cutover.CANCEL) == cutover.CANCELLED
    assert cutover.next_state(cutover.FINAL_PASS, cutover.SCHEDULE) is None


@pytest.mark.parametrize("state", cutover.STATES)
def test_the_stores_atomic_moves_follow_the_table(store, state):
    # cancel
    _seed(store, state)
    refused = store.cancel_cutover(DOMAIN, "x")
    assert (refused is None) == cutover.allowed(state, cutover.CANCEL)
    assert cutover.state_of(store.cutover(DOMAIN)) == (cutover.next_state(state, cutover.CANCEL) or state)
    # begin, when due
    _seed(store, state)
    refused = store.begin_cutover(DOMAIN, NOW - 1, "final pass", NOW)
    assert (refused is None) == cutover.allowed(state, cutover.BEGIN)
    # close
    _seed(store, state)
    closed = store.close_cutover(DOMAIN, "closing")
    assert (closed is not None) == cutover.allowed(state, cutover.CLOSE)
    assert cutover.state_of(store.cutover(DOMAIN)) == (cutover.next_state(state, cutover.CLOSE) or state)


def test_due_honours_the_clock_the_row_and_the_yaml():
    row = {"state": cutover.SCHEDULED, "at": NOW + 60}
    assert not cutover.due(row, None, NOW) and cutover.due(row, None, NOW + 60)
    assert cutover.due(None, NOW, NOW) and not cutover.due(None, NOW + 1, NOW) and not cutover.due(None, None, NOW)
    # cancelled: the YAML's time is ignored; final_pass (after a restart): resumed at once
    assert not cutover.due({"state": cutover.CANCELLED, "at": None}, NOW - 1, NOW)
    assert cutover.due({"state": cutover.FINAL_PASS, "at": NOW - 5}, None, NOW)
    assert not cutover.due({"state": cutover.DONE, "at": NOW - 5}, NOW - 5, NOW)


@pytest.mark.parametrize("state", cutover.STATES)
def test_the_dashboards_buttons_follow_the_table(store, state):
    _seed(store, state)
    offered = cutover.admin_events(state)
    for action, event in (("cutover_now", cutover.SCHEDULE), ("cancel_cutover", cutover.CANCEL)):
        _seed(store, state)
        result = change_cutover(store, DOMAIN, action, NOW, None, NOW, True)
        assert (result[0] == "ok") == cutover.allowed(state, event), (action, result)
        if event in offered:
            assert result[0] == "ok"


def test_postponing_by_hours_starts_from_the_plan():
    # the plan: the row's time while scheduled, the YAML's without a row, none once cancelled
    assert cutover.plan_time({"state": cutover.SCHEDULED, "at": NOW}, NOW - 99) == NOW
    assert cutover.plan_time(None, NOW - 99) == NOW - 99
    assert cutover.plan_time({"state": cutover.CANCELLED, "at": None}, NOW - 99) is None


def test_words():
    assert cutover.word(cutover.FINAL_PASS) == "final pass" and cutover.word(cutover.NONE) == "not scheduled"
