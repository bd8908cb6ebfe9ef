"""Work leases with fencing, the nodes' heartbeats, and the source hosts' shared connection budget.

Several nodes may share one database.  A node runs an account's pass only while it holds the account's
lease (``claim_lease``: one transaction that also takes the pass's connections from its source host's
budget).  Each claim adds one to the lease's token; the pass writes through ``fenced(lease)``, a view of
the store whose every write transaction first checks, inside that transaction, that the lease row still
has the pass's node and token, else raises LeaseLost and writes nothing.  A node that was paused past its
lease (SIGSTOP, GC, a partition) therefore cannot write after another node took the account over.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import LeaseLost

logger = logging.getLogger("mailsyncd.leases")


@dataclass(eq=False)
class Lease:
    account: str
    node: str
    token: int
    expires: float                     # on the scheduler's clock; renewals move it on
    host: str = ""
    owner: str = ""                    # the pass's host_slots row
    connections: int = 0               # granted from the host's budget
    margin: float = 0.0                # no APPEND this close to expires: it could land after a takeover
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def check(self) -> None:
        """Before a write to the target (which no database check can fence): is the lease surely ours?"""
        if self.clock() >= self.expires - self.margin:
            raise LeaseLost(f"lease on {self.account} expired (not renewed in time): the pass stops")


@dataclass(frozen=True)
class Refused:
    """A claim that did not succeed: ``why`` for the log, ``retry_at`` on the scheduler's clock."""
    account: str
    why: str
    retry_at: float
    holder: str = ""                   # the node holding the lease, when that is why


class LeasesMixin:
    _fence: Lease | None = None

    # -- the fenced view ------------------------------------------------------
    def fenced(self, lease: Lease):
        """This store as a pass holding ``lease`` writes to it: every write transaction checks the token.
        Shares the connections (and their threads) with this store."""
        view = copy.copy(self)
        view.__class__ = _fenced_class(type(self))
        view._fence = lease
        return view

    def check_lease(self) -> None:
        """Before writing to the target: raises LeaseLost once the pass's lease may be someone else's."""
        if self._fence is not None:
            self._fence.check()

    # -- leases -----------------------------------------------------------------
    def claim_lease(self, account: str, node: str, now: float, lease_seconds: float, *, host: str,
                    wanted: int, cap: int, ignore_due: bool = False, dead: str | None = None) -> Lease | Refused:
        """Take ``account``'s lease if no live node holds it and its next pass is due (``ignore_due``: the
        user asked), and up to ``wanted`` connections of ``host`` (at most its shared limit, itself at most
        ``cap``), in one transaction.  A lease expired on another node is taken over, and so is one held by
        ``dead``: a holder the caller knows cannot write any more (a killed one-off sync of this machine);
        its connections are given back."""
        expires = now + lease_seconds
        with self._tx() as c:
            c.execute("INSERT INTO leases (account, token, expires, due) VALUES (?, 0, 0, 0)"
                      " ON CONFLICT (account) DO NOTHING", (account,))
            row = c.execute("SELECT node, token, expires, due FROM leases WHERE account=?" + self._skip_locked(),
                            (account,)).fetchone()
            if row is None:                   # PostgreSQL: another node is claiming it right now
                return Refused(account, "being claimed by another node", now + 1)
            holder, token, held_until, due = row
            if holder is not None and held_until > now:
                if holder != dead:
                    return Refused(account, f"held by node {holder}", held_until, holder)
                c.execute("DELETE FROM host_slots WHERE owner=?", (f"pass {account} {token}",))
            if due > now and not ignore_due:
                return Refused(account, "not due yet", due)
            # the host's budget: its limit row, locked, serializes claims on one host across nodes
            c.execute("INSERT INTO host_limits (host, connections, updated) VALUES (?,?,?)"
                      " ON CONFLICT (host) DO NOTHING", (host, float(cap), now))
            limit = c.execute("SELECT connections FROM host_limits WHERE host=?" + self._for_update(),
                              (host,)).fetchone()[0]
            used = c.execute("SELECT coalesce(sum(connections), 0) FROM host_slots WHERE host=? AND expires > ?",
                             (host, now)).fetchone()[0]
            grant = min(wanted, min(int(limit), cap) - used)
            if grant < 1:
                return Refused(account, f"source host {host} has no free connection ({used} in use)", now + 1)
            token += 1
            c.execute("UPDATE leases SET node=?, token=?, expires=?, claimed=? WHERE account=?",
                      (node, token, expires, now, account))
            owner = f"pass {account} {token}"
            c.execute("INSERT INTO host_slots (host, owner, node, connections, expires) VALUES (?,?,?,?,?)",
                      (host, owner, node, grant, expires))
        if holder is not None and holder != node:
            logger.warning(
                "event=lease_taken_over account=%s from=%s expired_at=%.3f token=%d", account, holder,
                held_until, token)
        return Lease(account, node, token, expires, host, owner, grant)

    def lease_due(self, account: str) -> float:
        """When the account's next pass may begin, as its lease row says (0: no row, or due now)."""
        row = self._conn().execute("SELECT due FROM leases WHERE account=?", (account,)).fetchone()
        return row[0] if row else 0.0

    def renew_leases(self, node: str, leases: Iterable[Lease], now: float, lease_seconds: float) -> list[Lease]:
        """Move the leases' expiry (and their connections') on; returns those no longer ours.  Also this
        node's heartbeat.  One transaction."""
        expires = now + lease_seconds
        lost = []
        with self._tx() as c:
            c.execute("UPDATE nodes SET heartbeat=? WHERE name=?", (now, node))
            for lease in leases:
                if c.execute("UPDATE leases SET expires=? WHERE account=? AND node=? AND token=?",
                             (expires, lease.account, node, lease.token)).rowcount == 0:
                    lost.append(lease)
                    continue
                c.execute("UPDATE host_slots SET expires=? WHERE host=? AND owner=?", (expires, lease.host, lease.owner))
            c.execute("UPDATE host_slots SET expires=? WHERE owner=?", (expires, f"checks {node}"))
            c.execute("DELETE FROM host_slots WHERE expires <= ?", (now - lease_seconds,))
        for lease in leases:
            if lease not in lost:
                lease.expires = expires
        return lost

    def free_slot(self, lease: Lease) -> None:
        """The pass ended: its connections are closed."""
        with self._tx() as c:
            c.execute("DELETE FROM host_slots WHERE host=? AND owner=?", (lease.host, lease.owner))

    def release_lease(self, lease: Lease, due: float) -> bool:
        """End the pass's lease and say when the next pass is due; False if it was no longer ours."""
        with self._tx() as c:
            c.execute("DELETE FROM host_slots WHERE host=? AND owner=?", (lease.host, lease.owner))
            return c.execute("UPDATE leases SET node=NULL, expires=0, due=? WHERE account=? AND node=? AND token=?",
                             (due, lease.account, lease.node, lease.token)).rowcount == 1

    def leases(self) -> list[dict]:
        """Every lease held (not expired by its row's clock: the reader decides), by account."""
        return self._dicts("SELECT account, node, token, expires, claimed, due FROM leases WHERE node IS NOT NULL"
                           " ORDER BY account", ())

    # -- nodes ---------------------------------------------------------------------
    def node_started(self, name: str, pid: int, host: str, now: float, version: str) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO nodes (name, pid, host, started, heartbeat, version) VALUES (?,?,?,?,?,?)"
                      " ON CONFLICT (name) DO UPDATE SET pid=excluded.pid, host=excluded.host,"
                      " started=excluded.started, heartbeat=excluded.heartbeat, version=excluded.version",
                      (name, pid, host, now, now, version))

    def reclaim_node(self, name: str, host: str, alive) -> int:
        """At a node's start: the leases its previous run under ``name`` on this ``host`` still holds, given
        back at once when that run's process is gone (``alive(pid)`` says no), with their connections: a
        restarted node (kill -9, a crash, systemd's Restart=) need not wait out its own leases.  Returns how
        many; 0 when the row is another host's or its process lives (two nodes given one name)."""
        with self._tx() as c:
            row = c.execute("SELECT pid, host FROM nodes WHERE name=?" + self._for_update(), (name,)).fetchone()
            if row is None or row[1] != host or alive(row[0]):
                return 0
            c.execute("DELETE FROM host_slots WHERE node=?", (name,))
            return c.execute("UPDATE leases SET node=NULL, expires=0 WHERE node=?", (name,)).rowcount

    def nodes(self) -> list[dict]:
        """Each node with its last heartbeat and the leases it holds (count; expired ones included)."""
        return self._dicts("SELECT n.name, n.pid, n.host, n.started, n.heartbeat, n.version,"
                           " (SELECT count(*) FROM leases l WHERE l.node = n.name) AS leases"
                           " FROM nodes n ORDER BY n.name", ())

    # -- the source hosts' shared budget --------------------------------------------
    def host_use(self, now: float) -> dict[str, int]:
        """Connections in use per source host, over every node."""
        return dict(self._conn().execute("SELECT host, sum(connections) FROM host_slots WHERE expires > ?"
                                         " GROUP BY host", (now,)).fetchall())

    def host_use_by_others(self, node: str, now: float) -> dict[str, int]:
        """Connections other nodes use per source host (their passes and login checks)."""
        return dict(self._conn().execute("SELECT host, sum(connections) FROM host_slots WHERE expires > ?"
                                         " AND node <> ? GROUP BY host", (now, node)).fetchall())

    def set_login_checks(self, host: str, node: str, n: int, now: float, ttl: float) -> None:
        """The node's login checks holding a connection of ``host`` now: one row a node and host."""
        owner = f"checks {node}"
        with self._tx() as c:
            if n <= 0:
                c.execute("DELETE FROM host_slots WHERE host=? AND owner=?", (host, owner))
            else:
                c.execute("INSERT INTO host_slots (host, owner, node, connections, expires) VALUES (?,?,?,?,?)"
                          " ON CONFLICT (host, owner) DO UPDATE SET connections=excluded.connections,"
                          " expires=excluded.expires", (host, owner, node, n, now + ttl))

    def take_checks(self, host: str, node: str, n: int, cap: int, now: float, ttl: float) -> bool:
        """Like set_login_checks, but only if the host's shared budget has room for ``n`` beside what the
        others use (under the claims' lock on its limit row): a watch's connection is counted before it is
        opened, not after, so that a pass claimed on another node meanwhile cannot go over the budget."""
        owner = f"checks {node}"
        with self._tx() as c:
            c.execute("INSERT INTO host_limits (host, connections, updated) VALUES (?,?,?)"
                      " ON CONFLICT (host) DO NOTHING", (host, float(cap), now))
            limit = c.execute("SELECT connections FROM host_limits WHERE host=?" + self._for_update(),
                              (host,)).fetchone()[0]
            used = c.execute("SELECT coalesce(sum(connections), 0) FROM host_slots WHERE host=? AND expires > ?"
                             " AND owner <> ?", (host, now, owner)).fetchone()[0]
            if used + n > min(int(limit), cap):
                return False
            c.execute("INSERT INTO host_slots (host, owner, node, connections, expires) VALUES (?,?,?,?,?)"
                      " ON CONFLICT (host, owner) DO UPDATE SET connections=excluded.connections,"
                      " expires=excluded.expires", (host, owner, node, n, now + ttl))
            return True

    def adapt_host_limit(self, host: str, cap: int, throttled: bool, ok: bool, now: float) -> float:
        """The shared adaptive limit after a pass: halved (at least 1) when the source throttled, a quarter
        connection more after a good pass, never above ``cap``.  Returns the new limit."""
        with self._tx() as c:
            c.execute("INSERT INTO host_limits (host, connections, updated) VALUES (?,?,?)"
                      " ON CONFLICT (host) DO NOTHING", (host, float(cap), now))
            cur = c.execute("SELECT connections FROM host_limits WHERE host=?" + self._for_update(),
                            (host,)).fetchone()[0]
            cur = min(cur, float(cap))
            new = max(1.0, float(int(cur) // 2)) if throttled else min(float(cap), cur + 0.25) if ok else cur
            c.execute("UPDATE host_limits SET connections=?, updated=? WHERE host=?", (new, now, host))
        return new


class _Fenced:
    """Mixed in before the store's class by ``LeasesMixin.fenced``: the token check in every write."""

    @contextmanager
    def _tx(self) -> Iterator:
        with super()._tx() as c:
            lease = self._fence
            row = c.execute("SELECT node, token FROM leases WHERE account=?" + self._for_update(),
                            (lease.account,)).fetchone()
            if row is None or row[0] != lease.node or row[1] != lease.token:
                raise LeaseLost(f"lease on {lease.account} was taken over (token {lease.token}, now "
                                f"{row[1] if row else 'none'} on node {row[0] if row else 'none'}): "
                                "the pass stops without writing")
            yield c


_FENCED: dict[type, type] = {}


def _fenced_class(cls: type) -> type:
    if issubclass(cls, _Fenced):
        return cls
    if cls not in _FENCED:
        _FENCED[cls] = type("Fenced" + cls.__name__, (_Fenced, cls), {})
    return _FENCED[cls]
