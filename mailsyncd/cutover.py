"""The cutover of a domain as one state machine: its states, and every legal transition in one table.

A cutover ends a domain's migration: one final pass per account, then syncing stops and the stored
source passwords are destroyed.  Pure: the scheduler, ``mailsyncctl cutover``, the dashboard and
/metrics ask here which moves are legal and what a state is called; the store applies a move
atomically (Store.begin_cutover / close_cutover / cancel_cutover: conditional updates, so a cancel that
races the scheduler is decided in one transaction), and tests/test_cutover.py checks that the store's
conditions and this table agree.

The state is the store's row (``cutovers.state``); no row is ``none``: the YAML's ``cutover:`` time,
if any, is the plan.
"""

from __future__ import annotations

NONE, SCHEDULED, CANCELLED, FINAL_PASS, DONE = "none", "scheduled", "cancelled", "final_pass", "done"
STATES = (NONE, SCHEDULED, CANCELLED, FINAL_PASS, DONE)

# Events.  By the admin (CLI or dashboard): schedule (a time, "now" included), clear (follow the YAML
# again), cancel.  By the scheduler: begin (the time has come: final passes), close (the final passes
# are over: the point of no return).
SCHEDULE, CLEAR, CANCEL, BEGIN, CLOSE = "schedule", "clear", "cancel", "begin", "close"

# (state, event) -> next state.  A pair not listed is refused.
TRANSITIONS: dict[tuple[str, str], str] = {
    (NONE, SCHEDULE): SCHEDULED,
    (SCHEDULED, SCHEDULE): SCHEDULED,        # moved (postponed or brought forward)
    (CANCELLED, SCHEDULE): SCHEDULED,
    (NONE, CLEAR): NONE,
    (SCHEDULED, CLEAR): NONE,
    (CANCELLED, CLEAR): NONE,
    (NONE, CANCEL): CANCELLED,               # the YAML's time is ignored until clear or a new time
    (SCHEDULED, CANCEL): CANCELLED,
    (CANCELLED, CANCEL): CANCELLED,
    (FINAL_PASS, CANCEL): CANCELLED,         # honoured until the close, even mid-pass
    (NONE, BEGIN): FINAL_PASS,               # only when due (see plan_time)
    (SCHEDULED, BEGIN): FINAL_PASS,
    (FINAL_PASS, BEGIN): FINAL_PASS,         # a restart runs the (incremental) final passes again
    (FINAL_PASS, CLOSE): DONE,               # the point of no return
}

_WORDS = {NONE: "not scheduled", SCHEDULED: "scheduled", CANCELLED: "cancelled", FINAL_PASS: "final pass",
          DONE: "done"}


def state_of(row: dict | None) -> str:
    """The state of a store row (``Store.cutover``), ``none`` without one."""
    return row["state"] if row else NONE


def next_state(state: str, event: str) -> str | None:
    """Where ``event`` leads from ``state``; None when the table refuses it."""
    return TRANSITIONS.get((state, event))


def allowed(state: str, event: str) -> bool:
    return (state, event) in TRANSITIONS


def plan_time(row: dict | None, yaml_at: float | None) -> float | None:
    """When the cutover is (or was) to begin: the row's time once scheduled, the YAML's without a row,
    else never (cancelled, done)."""
    state = state_of(row)
    if state in (SCHEDULED, FINAL_PASS):
        return row["at"]
    return yaml_at if state == NONE else None


def due(row: dict | None, yaml_at: float | None, now: float) -> bool:
    """May the scheduler begin (or, after a restart, resume) the final passes at ``now``?"""
    if state_of(row) == FINAL_PASS:
        return True
    at = plan_time(row, yaml_at)
    return at is not None and at <= now and allowed(state_of(row), BEGIN)


def admin_events(state: str) -> tuple[str, ...]:
    """The moves the dashboard offers: a (new) time, and cancel when something is planned or running."""
    out = (SCHEDULE,) if allowed(state, SCHEDULE) else ()
    return out + ((CANCEL,) if state in (SCHEDULED, FINAL_PASS) else ())


def word(state: str) -> str:
    """The state for people (CLI, logs): ``final pass``, not ``final_pass``."""
    return _WORDS.get(state, state.replace("_", " "))
