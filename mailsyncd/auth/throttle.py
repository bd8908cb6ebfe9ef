"""Login throttling: pure bookkeeping, the clock is injected.

Every user's password check reaches the source from our one address, so a
guesser must not be able to make us hammer it (the source would then block us
for everyone), and must not be able to lock a user out either.  A password
comparison of any kind (the source, the argon2 verifier, the in-memory caches)
costs a token first; a right password gives it back.  Three budgets:

* per (user, client network): a stranger's guesses drain only their own
  network's budget for that user, never the user's own;
* per client network across users: one network spraying many users;
* per user across all *stranger* networks, a generous hourly cap: a circuit
  breaker against a distributed attack.  Networks the user logged in from
  before (``known``) do not draw from it, so strangers cannot drain it for them.

A client network is the IPv4 address (/32) or the IPv6 /64.  Failures are
answered late, as Dovecot does: 2 s, doubling, capped at 15 s.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

_MAX_KEYS = 100_000       # buckets kept before full ones are forgotten

# Budget names, as they appear in the log ("throttled: budget=... empty").
NETWORK = "network"                 # one client network, all users
USER_NETWORK = "user+network"       # one user from one client network
USER = "user"                       # one user from all stranger networks (the circuit breaker)


def network_of(ip: str) -> str:
    """The client network an address belongs to: "203.0.113.7/32", "2001:db8:1:2::/64"."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip                   # not an IP (a UNIX socket in tests): its own network
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 32 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class Limits:
    network_burst: int = 10       # checks one client network may cause at once, over all users...
    network_refill: float = 60.0  # ...and one more every this many seconds
    user_network_burst: int = 5   # checks of one user from one network
    user_network_refill: float = 300.0
    user_hourly: int = 30         # checks of one user per hour from networks it never logged in from
    delay_base: float = 2.0
    delay_max: float = 15.0


def limits_for(fd) -> Limits:
    """The limits a ``frontdoor:`` config section sets (the front door's and the web's)."""
    return Limits(fd.network_burst, fd.network_refill, fd.user_network_burst, fd.user_network_refill,
                  fd.user_hourly, fd.failure_delay, fd.failure_delay_max)


class _Buckets:
    def __init__(self, burst: int, refill: float, clock: Callable[[], float]):
        self.burst, self.refill, self.clock = burst, refill, clock
        self._b: dict[object, tuple[float, float]] = {}

    def _level(self, key, now: float) -> float:
        tokens, at = self._b.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) / self.refill)

    def take(self, key) -> bool:
        now = self.clock()
        level = self._level(key, now)
        if level < 1.0:
            self._b[key] = (level, now)
            return False
        self._b[key] = (level - 1.0, now)
        self._trim(now)
        return True

    def give_back(self, key) -> None:
        now = self.clock()
        self._b[key] = (min(float(self.burst), self._level(key, now) + 1.0), now)

    def _trim(self, now: float) -> None:
        if len(self._b) > _MAX_KEYS:
            self._b = {k: v for k, v in self._b.items() if self._level(k, now) < self.burst}


class Throttle:
    def __init__(self, limits: Limits = Limits(), clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.clock = clock
        self._net = _Buckets(limits.network_burst, limits.network_refill, clock)
        self._pair = _Buckets(limits.user_network_burst, limits.user_network_refill, clock)
        self._user = _Buckets(limits.user_hourly, 3600.0 / limits.user_hourly, clock)
        self._streak: dict[str, tuple[int, float]] = {}   # ip -> (consecutive failures, last at)

    def update(self, limits: Limits) -> None:
        """New limits (a reload) apply to the buckets as they are: nobody gets a fresh allowance."""
        self.limits = limits
        self._net.burst, self._net.refill = limits.network_burst, limits.network_refill
        self._pair.burst, self._pair.refill = limits.user_network_burst, limits.user_network_refill
        self._user.burst, self._user.refill = limits.user_hourly, 3600.0 / limits.user_hourly

    def take(self, network: str, user: str, *, known: bool) -> str | None:
        """Spend a token for one password comparison; None if allowed, else the empty budget's name."""
        if not self._pair.take((user, network)):
            return USER_NETWORK
        if not self._net.take(network):
            self._pair.give_back((user, network))
            return NETWORK
        if not known and not self._user.take(user):
            self._pair.give_back((user, network))
            self._net.give_back(network)
            return USER
        return None

    def give_back(self, network: str, user: str, *, known: bool) -> None:
        """The comparison said yes (or could not be made): the token returns."""
        self._pair.give_back((user, network))
        self._net.give_back(network)
        if not known:
            self._user.give_back(user)

    def may_ask_source(self, ip: str, user: str) -> str | None:
        """``take`` for callers that know only the client IP (the web pages): a stranger's budgets."""
        return self.take(network_of(ip), user, known=False)

    def succeeded(self, ip: str, user: str | None = None) -> None:
        """A login from ``ip`` succeeded: its failure streak ends (and ``may_ask_source``'s token returns)."""
        if user is not None:
            self.give_back(network_of(ip), user, known=False)
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
