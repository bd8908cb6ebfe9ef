"""How many connections a listener holds: per client and in all.  Pure bookkeeping, no sockets.

A listener asks ``admit(key)`` when a connection arrives and ``release(key)``
when it ends; ``key`` is the caller's choice (the front door uses the client
network, see ``auth.throttle.network_of``; the web the same, or None for a
trusted proxy, which carries many clients and so counts in ``total`` only).  ``per_key`` caps connections still
in their first phase (the front door: before login; the web: any); a caller
that moves a connection to a phase exempt from the per-key cap (a relayed IMAP
session) calls ``settle(key)``.  ``total`` caps everything held, and is kept
below the process's file descriptor limit by ``fd_budget``.
"""

from __future__ import annotations

import resource

PER_KEY, TOTAL = "per_client", "total"


def fd_budget(fds_per_connection: int = 2, reserve: int = 64) -> int:
    """Connections that fit under RLIMIT_NOFILE, keeping ``reserve`` fds for the store, logs and sources."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, (soft - reserve) // fds_per_connection)


class ConnectionLimits:
    def __init__(self, per_key: int, total: int):
        self.per_key, self.total = per_key, total
        self._open: dict[str, int] = {}     # key -> connections in the capped phase
        self.held = 0                        # every connection admitted and not released

    def admit(self, key: str | None) -> str | None:
        """Count a new connection in; None if admitted, else which cap refused it (PER_KEY or TOTAL)."""
        if self.held >= self.total:
            return TOTAL
        if key is not None:
            if self._open.get(key, 0) >= self.per_key:
                return PER_KEY
            self._open[key] = self._open.get(key, 0) + 1
        self.held += 1
        return None

    def settle(self, key: str | None) -> None:
        """The connection left the per-key-capped phase (it still counts in ``total``)."""
        if key is None:
            return
        n = self._open.get(key, 0) - 1
        if n > 0:
            self._open[key] = n
        else:
            self._open.pop(key, None)

    def release(self, key: str | None, *, settled: bool = False) -> None:
        """The connection ended; ``settled``: ``settle`` was already called for it."""
        if not settled:
            self.settle(key)
        self.held = max(0, self.held - 1)

    def update(self, per_key: int, total: int) -> None:
        """New caps (a reload) apply to new connections; open ones stay."""
        self.per_key, self.total = per_key, total

    def open(self, key: str) -> int:
        return self._open.get(key, 0)
