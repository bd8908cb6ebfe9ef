"""Login throttling: pure bookkeeping, the clock is injected.

Every user's password check reaches the source from our one address, so a
guesser must not be able to make us hammer it (the source would then block us
for everyone).  Two token buckets bound the checks that reach the source: one
per client IP and one per user.  A token is spent before the check and given
back when the password was right, so parallel connections cannot overdraw.
Failures are answered late, as Dovecot does: 2 s, doubling, capped at 15 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

_MAX_KEYS = 100_000       # buckets kept before full ones are forgotten


@dataclass(frozen=True, slots=True)
class Limits:
    ip_burst: int = 10            # source checks an IP may cause at once...
    ip_refill: float = 60.0       # ...and one more every this many seconds
    user_burst: int = 5
    user_refill: float = 300.0
    delay_base: float = 2.0
    delay_max: float = 15.0


class _Buckets:
    def __init__(self, burst: int, refill: float, clock: Callable[[], float]):
        self.burst, self.refill, self.clock = burst, refill, clock
        self._b: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._b.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) / self.refill)

    def take(self, key: str) -> bool:
        now = self.clock()
        level = self._level(key, now)
        if level < 1.0:
            self._b[key] = (level, now)
            return False
        self._b[key] = (level - 1.0, now)
        self._trim(now)
        return True

    def give_back(self, key: str) -> None:
        now = self.clock()
        self._b[key] = (min(float(self.burst), self._level(key, now) + 1.0), now)

    def _trim(self, now: float) -> None:
        if len(self._b) > _MAX_KEYS:
            self._b = {k: v for k, v in self._b.items() if self._level(k, now) < self.burst}


class Throttle:
    def __init__(self, limits: Limits = Limits(), clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.clock = clock
        self._ip = _Buckets(limits.ip_burst, limits.ip_refill, clock)
        self._user = _Buckets(limits.user_burst, limits.user_refill, clock)
        self._streak: dict[str, tuple[int, float]] = {}   # ip -> (consecutive failures, last at)

    def update(self, limits: Limits) -> None:
        """New limits (a reload) apply to the buckets as they are: nobody gets a fresh allowance."""
        self.limits = limits
        self._ip.burst, self._ip.refill = limits.ip_burst, limits.ip_refill
        self._user.burst, self._user.refill = limits.user_burst, limits.user_refill

    def may_ask_source(self, ip: str, user: str) -> str | None:
        """Spend a token for a source check; None if allowed, else why not ("ip" or "user")."""
        if not self._ip.take(ip):
            return "ip"
        if not self._user.take(user):
            self._ip.give_back(ip)
            return "user"
        return None

    def succeeded(self, ip: str, user: str) -> None:
        self._ip.give_back(ip)
        self._user.give_back(user)
        self._streak.pop(ip, None)

    def failed(self, ip: str) -> float:
        """Record a failed login; returns how long to wait before answering it."""
        now = self.clock()
        n, at = self._streak.get(ip, (0, now))
        if now - at > self.limits.delay_max * 4:
            n = 0      # a streak ends after a quiet spell
        n += 1
        self._streak[ip] = (n, now)
        if len(self._streak) > _MAX_KEYS:
            self._streak = {k: v for k, v in self._streak.items() if now - v[1] <= self.limits.delay_max * 4}
        return min(self.limits.delay_max, self.limits.delay_base * 2 ** (n - 1))
