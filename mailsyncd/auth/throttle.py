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

Where the buckets live is the ``state``'s business: ``MemoryState`` (one process: the pure tests)
or the Store (store/throttle.py), whose ``throttle`` table every node on the same database shares,
so that N nodes do not give a guesser N times the budget.  The arithmetic stays here; each call is
one short transaction (read the rows locked, write them back, no fsync of its own).  With a store
the methods block: the daemon calls them in its ``state`` thread pool, never on the reactor.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_MAX_KEYS = 100_000       # in memory: buckets kept before full ones are forgotten
_TRIM_EVERY = 300.0       # seconds between two trims of the buckets that are full again

# Budget names, as they appear in the log ("throttled: budget=... empty").
NETWORK = "network"                 # one client network, all users
USER_NETWORK = "user+network"       # one user from one client network
USER = "user"                       # one user from all stranger networks (the circuit breaker)
STREAK = "streak"                   # not a budget: a client address's failures in a row (level = count)


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


Key = tuple[str, str]                # (kind, key): kind is a budget's name or STREAK
Row = tuple[float | None, float]     # (level, at); level None: a full bucket


class MemoryState:
    """The rows in this process's memory: one node only."""

    def __init__(self):
        self._rows: dict[Key, Row] = {}
        self._lock = threading.Lock()

    def throttle_update(self, keys, fn):
        with self._lock:
            result, writes = fn({k: self._rows[k] for k in keys if k in self._rows})
            for k, row in writes.items():
                if row is None:
                    self._rows.pop(k, None)
                else:
                    self._rows[k] = row
            return result

    def throttle_trim(self, kind: str, burst: float, refill: float, before: float) -> int:
        with self._lock:
            gone = [k for k, (level, at) in self._rows.items()
                    if k[0] == kind and (level is None or at + (burst - level) * refill <= before)]
            for k in gone:
                del self._rows[k]
            return len(gone)

    def throttle_rows(self) -> int:
        return len(self._rows)


class Throttle:
    def __init__(self, limits: Limits = Limits(), clock: Callable[[], float] = time.monotonic, state=None,
                 scope: str = ""):
        self.limits = limits
        self.clock = clock
        self.scope = scope          # "admin:": the dashboard's own buckets, apart from the front door's
        self.state = state if state is not None else MemoryState()   # or a Store: the nodes' shared rows
        self._trimmed = clock()

    def update(self, limits: Limits) -> None:
        """New limits (a reload) apply to the buckets as they are: nobody gets a fresh allowance."""
        self.limits = limits

    def _budgets(self) -> dict[str, tuple[float, float]]:
        """Each budget's (burst, seconds per token)."""
        lim = self.limits
        return {self.scope + USER_NETWORK: (lim.user_network_burst, lim.user_network_refill),
                self.scope + NETWORK: (lim.network_burst, lim.network_refill),
                self.scope + USER: (lim.user_hourly, 3600.0 / lim.user_hourly)}

    @staticmethod
    def _level(row: Row | None, burst: float, refill: float, now: float) -> float:
        if row is None or row[0] is None:
            return float(burst)
        return min(float(burst), row[0] + (now - row[1]) / refill)

    def _keys(self, network: str, user: str, known: bool) -> list[Key]:
        keys = [(self.scope + USER_NETWORK, f"{user} {network}"), (self.scope + NETWORK, network)]
        return keys + ([] if known else [(self.scope + USER, user)])

    def take(self, network: str, user: str, *, known: bool) -> str | None:
        """Spend a token for one password comparison; None if allowed, else the empty budget's name.
        Blocking with a store: one transaction."""
        now = self.clock()
        budgets = self._budgets()
        keys = self._keys(network, user, known)

        def spend(rows):
            levels = {k: self._level(rows.get(k), *budgets[k[0]], now) for k in keys}
            for k in keys:
                if levels[k] < 1.0:
                    return k[0][len(self.scope):], {}     # nothing spent: the budgets before it keep their token
            return None, {k: (levels[k] - 1.0, now) for k in keys}
        empty = self.state.throttle_update(keys, spend)
        self._trim(now)
        return empty

    def give_back(self, network: str, user: str, *, known: bool, ip: str | None = None) -> None:
        """The comparison said yes (or could not be made): the token returns.  ``ip``: a login that
        succeeded, whose failure streak ends in the same transaction."""
        now = self.clock()
        budgets = self._budgets()
        keys = self._keys(network, user, known)
        streak = [(self.scope + STREAK, ip)] if ip is not None else []

        def refund(rows):
            writes: dict[Key, Row | None] = {
                k: (min(float(budgets[k[0]][0]), self._level(rows.get(k), *budgets[k[0]], now) + 1.0), now)
                for k in keys}
            return None, {**writes, **dict.fromkeys(streak)}
        self.state.throttle_update(keys + streak, refund)

    def may_ask_source(self, ip: str, user: str) -> str | None:
        """``take`` for callers that know only the client IP (the web pages): a stranger's budgets."""
        return self.take(network_of(ip), user, known=False)

    def succeeded(self, ip: str, user: str | None = None) -> None:
        """A login from ``ip`` succeeded: its failure streak ends (and ``may_ask_source``'s token returns)."""
        if user is not None:
            self.give_back(network_of(ip), user, known=False, ip=ip)
        else:
            streak = (self.scope + STREAK, ip)
            self.state.throttle_update([streak], lambda rows: (None, {streak: None}))

    def failed(self, ip: str) -> float:
        """Record a failed login; returns how long to wait before answering it."""
        now = self.clock()
        lim = self.limits
        streak = (self.scope + STREAK, ip)

        def count(rows):
            n, at = rows.get(streak) or (0, now)
            n = int(n or 0)
            if now - at > lim.delay_max * 4:
                n = 0      # a streak ends after a quiet spell
            return n + 1, {streak: (n + 1, now)}
        n = self.state.throttle_update([streak], count)
        return min(lim.delay_max, lim.delay_base * 2 ** (n - 1))

    def _trim(self, now: float) -> None:
        """Forget the buckets that are full again and the streaks that ended: every few minutes (in
        memory also when there are too many)."""
        if now - self._trimmed < _TRIM_EVERY and not (isinstance(self.state, MemoryState)
                                                      and self.state.throttle_rows() > _MAX_KEYS):
            return
        self._trimmed = now
        for kind, (burst, refill) in self._budgets().items():
            self.state.throttle_trim(kind, burst, refill, now)
        self.state.throttle_trim(self.scope + STREAK, 0, 0, now - self.limits.delay_max * 4)
