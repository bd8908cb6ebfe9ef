"""This node's side of the work leases (the rows and their rules: store/leases.py).

A pass claims its account's lease in its own thread before it opens a connection; the scheduler renews
every held lease each ``node.heartbeat`` on the state thread, and a pass whose lease another node took
over, or which this node could not renew in time, is stopped: its writes are fenced anyway (LeaseLost),
stopping it saves the work.  The release, with the time the next pass is due, goes to the state thread.
"""

from __future__ import annotations

import logging
import os
import socket

from twisted.internet import task, threads

from . import __version__
from .config.node import default_name, pid_alive
from .store import Lease, Refused

logger = logging.getLogger("mailsyncd.leases")


class NodeLeases:
    def __init__(self, reactor, state_pool, store, config_ref):
        self.reactor = reactor
        self.state_pool = state_pool
        self.store = store
        self.config_ref = config_ref
        node = getattr(config_ref(), "node", None)
        self.name = node.name if node is not None and node.name else default_name()   # fixed until restart
        self._loop: task.LoopingCall | None = None
        self._reading = False
        self.others: dict[str, int] = {}     # connections other nodes use per source host, as last read
        self.on_others = None                # called after each read of others (the scheduler wakes its waiters)

    @property
    def settings(self):
        return self.config_ref().node

    # -- life cycle (the state thread / the reactor) -------------------------------------------
    def register(self) -> None:
        """In the state thread: this node's row, so that `mailsyncctl status --nodes` lists it; first the
        leases of its previous run, if that process is gone."""
        host = socket.gethostname()
        n = self.store.reclaim_node(self.name, host, lambda pid: pid != os.getpid() and pid_alive(pid))
        if n:
            logger.warning("event=leases_reclaimed node=%s count=%d why='the previous run of this node is gone'",
                           self.name, n)
        self.store.node_started(self.name, os.getpid(), host, self.reactor.seconds(), __version__)

    def start(self, running) -> None:
        """Renew the leases of ``running`` (the scheduler's address -> _Running) every heartbeat."""
        self._loop = task.LoopingCall(self.heartbeat, running)
        self._loop.clock = self.reactor
        self._loop.start(self.settings.heartbeat, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    # -- in the pass's thread ----------------------------------------------------------------
    def claim(self, address: str, host: str, wanted: int, cap: int, urgent: bool) -> Lease | Refused:
        s = self.settings
        got = self.store.claim_lease(address, self.name, self.reactor.seconds(), s.lease_seconds, host=host,
                                     wanted=wanted, cap=cap, ignore_due=urgent)
        if isinstance(got, Lease):
            got.clock = self.reactor.seconds
            got.margin = s.heartbeat
        return got

    def free_slot(self, lease: Lease) -> None:
        try:
            self.store.free_slot(lease)
        except Exception as e:  # noqa: BLE001 - the slot expires with the lease anyway
            logger.warning("event=store_error what='free a connection slot' error=%r", str(e))

    # -- on the reactor ------------------------------------------------------------------------
    def release(self, lease: Lease, due: float) -> None:
        threads.deferToThreadPool(self.reactor, self.state_pool, self.store.release_lease, lease, due
                                  ).addErrback(lambda f: logger.error("event=store_error what='release lease' "
                                                                      "error=%r", f.getErrorMessage()))

    def heartbeat(self, running) -> None:
        now = self.reactor.seconds()
        held = [r.lease for r in running.values() if r.lease is not None]
        for run in running.values():
            if run.lease is not None and now >= run.lease.expires - run.lease.margin and not run.stop.is_set():
                # belt and braces: renewals failed for a whole lease; another node may take over any moment
                logger.error("event=lease_expiring account=%s what='not renewed in time: stopping the pass'",
                             run.lease.account)
                run.stop.set()
        s = self.settings
        d = threads.deferToThreadPool(self.reactor, self.state_pool, self.store.renew_leases, self.name, held,
                                      now, s.lease_seconds)
        d.addCallback(self._renewed, running)
        d.addErrback(lambda f: logger.error("event=lease_renew_failed error=%r", f.getErrorMessage()))

    def _renewed(self, lost: list[Lease], running) -> None:
        for lease in lost:
            for run in running.values():
                if run.lease is lease:
                    logger.error("event=lease_lost account=%s token=%d what='another node took the account "
                                 "over: stopping the pass'", lease.account, lease.token)
                    run.stop.set()

    def refresh_others(self) -> None:
        """Read what the other nodes use per source host (for the login checks' budget), one read at a time."""
        if self.state_pool is None or self._reading:
            return
        self._reading = True
        d = threads.deferToThreadPool(self.reactor, self.state_pool, self.store.host_use_by_others, self.name,
                                      self.reactor.seconds())

        def done(result):
            self._reading = False
            if isinstance(result, dict):
                self.others = result
                if self.on_others is not None:
                    self.on_others()
            else:
                logger.error("event=store_error what='read host use' error=%r", result.getErrorMessage())
        d.addBoth(done)

    def take_checks(self, host: str, n: int, cap: int) -> bool:
        """In the state thread: publish_checks, if the host's shared budget has room (store.take_checks)."""
        return self.store.take_checks(host, self.name, n, cap, self.reactor.seconds(), self.settings.lease_seconds)

    def publish_checks(self, host: str, n: int) -> None:
        """This node's login checks and watches on ``host`` in the shared budget (other nodes count them)."""
        if self.state_pool is None:
            return
        threads.deferToThreadPool(self.reactor, self.state_pool, self.store.set_login_checks, host, self.name, n,
                                  self.reactor.seconds(), self.settings.lease_seconds
                                  ).addErrback(lambda f: logger.error("event=store_error what='publish login "
                                                                      "checks' error=%r", f.getErrorMessage()))
