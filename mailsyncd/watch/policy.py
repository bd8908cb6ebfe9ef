"""What the watchers decide, without sockets or clocks of their own: everything here is testable
with plain numbers.

Modes: ``idle`` holds one source connection in IDLE (RFC 2177) on INBOX; ``poll`` opens a short
connection for one STATUS of INBOX; ``off`` leaves the account to the scheduler's passes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

IDLE, POLL, OFF = "idle", "poll", "off"
AUTO = "auto"                       # sync.watch's default: idle for recent front-door users, else poll
RECENT_LOGIN = 7 * 86400            # "logged in through the front door in the last 7 days"
IDLE_RENEW = 25 * 60                # RFC 2177: re-issue IDLE at least every 29 minutes
POLL_CEILING_FACTOR = 10            # a quiet INBOX is polled at most every 10 x sync.poll_interval
POLL_GROWTH = 1.5
RECONNECT_BASE, RECONNECT_MAX = 5.0, 600.0
STABLE_CONNECTION = 300.0           # an IDLE connection that lasted this long resets the reconnect backoff
WATCH_PASS_BURST = 5                # news of new mail copied at once, back to back ...
WATCH_PASS_REFILL = 10.0            # ... then once per this many seconds, what came meanwhile together;
WATCH_PASS_GAP = 1.0                # a copy that found new mail gives its token back: real mail is copied in
                                    # seconds, at most once per this many seconds (each copy is a source login)


def choose_mode(setting: str, last_login: float | None, now: float) -> str:
    """The mode an account asks for: ``sync.watch`` of its domain, with ``auto`` resolved."""
    if setting != AUTO:
        return setting
    return IDLE if last_login is not None and now - last_login <= RECENT_LOGIN else POLL


@dataclass(frozen=True, slots=True)
class Mark:
    """What one look at INBOX saw: a change in any of these means mail arrived (or the box was rebuilt)."""
    messages: int | None
    uidnext: int | None
    uidvalidity: int | None


def changed(old: Mark | None, new: Mark) -> bool:
    """True when ``new`` shows mail that ``old`` did not; the first look is only a baseline.

    Items the server left out (None) are not compared: a server that sends no UIDNEXT after
    EXAMINE must not look like a change every time.
    """
    if old is None:
        return False
    return any(a is not None and b is not None and a != b
               for a, b in ((old.messages, new.messages), (old.uidnext, new.uidnext),
                            (old.uidvalidity, new.uidvalidity)))


class PollInterval:
    """Adaptive poll interval: ``base`` (sync.poll_interval) after a change, x1.5 per quiet poll up to
    ``POLL_CEILING_FACTOR`` x base, never above ``ceiling`` (the pass interval: a pass looks anyway)."""

    def __init__(self, base: float, ceiling: float | None = None):
        self.base = base
        top = base * POLL_CEILING_FACTOR
        self.ceiling = max(base, min(top, ceiling) if ceiling is not None else top)
        self.current = base

    def after(self, was_change: bool) -> float:
        self.current = self.base if was_change else min(self.ceiling, self.current * POLL_GROWTH)
        return self.current


class Backoff:
    """Reconnect delays: 5 s doubling to 10 min, with jitter; ``reset`` once a connection has worked."""

    def __init__(self, base: float = RECONNECT_BASE, cap: float = RECONNECT_MAX, rand=random.uniform):
        self.base, self.cap, self.rand = base, cap, rand
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        return delay * self.rand(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


class PassGate:
    """A token bucket for the copies the watch asks for: a source that floods EXISTS or NOTIFY news (real or
    made up) cannot make us hammer it and the target with a pass per event.  News held back is not lost: the
    caller keeps it and asks again after ``wait`` seconds.

    Only news that leads nowhere is held to the slow refill: a copy that found new mail gives its token
    back (``refund``), so mail arriving every few seconds is copied every few seconds, while made-up news
    (a copy that finds nothing) still runs the bucket dry.  Every let-through is ``gap`` after the last."""

    def __init__(self, burst: int = WATCH_PASS_BURST, refill: float = WATCH_PASS_REFILL,
                 gap: float = WATCH_PASS_GAP):
        self.burst, self.refill, self.gap = burst, refill, gap
        self.tokens = float(burst)
        self.at: float | None = None
        self.went: float | None = None      # the last let-through

    def wait(self, now: float) -> float:
        """0.0: go now (one token taken); else the seconds until a token is free."""
        self._fill(now)
        soon = 0.0 if self.went is None else max(0.0, self.went + self.gap - now)
        if self.tokens >= 1 - 1e-9:
            if soon > 0:
                return soon
            self.tokens = max(0.0, self.tokens - 1)
            self.went = now
            return 0.0
        return max(soon, (1 - self.tokens) * self.refill)

    def refund(self, now: float) -> None:
        """A let-through copied new mail: its token back."""
        self._fill(now)
        self.tokens = min(float(self.burst), self.tokens + 1)

    def _fill(self, now: float) -> None:
        if self.at is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.refill)
        self.at = now


@dataclass(frozen=True, slots=True)
class Want:
    address: str
    host: str
    mode: str
    last_login: float | None = None


def assign(wants: list[Want], max_watches: int, host_caps: dict[str, int]) -> dict[str, tuple[str, str | None]]:
    """{address: (mode, why it is not what it asked for or None)}.

    IDLE connections are the scarce thing: at most ``max_watches`` in all and ``host_caps[host]`` per
    source host (set when a source refused one).  The most recent front-door users keep theirs; the
    rest are polled instead.
    """
    out: dict[str, tuple[str, str | None]] = {}
    total = 0
    per_host: dict[str, int] = {}
    idle = sorted((w for w in wants if w.mode == IDLE),
                  key=lambda w: (-(w.last_login or 0.0), w.address))
    for w in wants:
        if w.mode != IDLE:
            out[w.address] = (w.mode, None)
    for w in idle:
        cap = host_caps.get(w.host)
        if total >= max_watches:
            out[w.address] = (POLL, "scheduler.max_watches")
        elif cap is not None and per_host.get(w.host, 0) >= cap:
            out[w.address] = (POLL, "source connection cap")
        else:
            out[w.address] = (IDLE, None)
            total += 1
            per_host[w.host] = per_host.get(w.host, 0) + 1
    return out

