"""The lease of a one-off pass (`mailsyncctl sync`): taken, renewed and released like a daemon pass's
(mailsyncd/leases.py), so that a one-off and a daemon never write one account at once, and the one-off's
connections count in its source host's budget shared by every node.

No reactor here: a thread renews the lease every ``node.heartbeat`` and sets the pass's stop event when
the lease is lost or was not renewed in time (the fenced writes would refuse anyway; stopping saves the
work).  The release gives the lease row back its due time as it was: a one-off pass is not the account's
scheduled pass.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from ..config.node import default_name, pid_alive
from ..store import Lease, Refused

logger = logging.getLogger("mailsyncd.leases")

SLOT_WAIT = 1.0      # seconds between claims while the source host has no free connection


def node_name() -> str:
    """This process as a lease holder: never a daemon's name (those match [A-Za-z0-9][A-Za-z0-9._-]*, and
    a daemon on this host is named after it), unique per process."""
    return f"ctl-{default_name()[:40]}-{os.getpid()}"


def dead_local_oneoff(holder: str) -> bool:
    """Is ``holder`` a one-off sync of this machine (node_name()) whose process has ended?"""
    prefix = f"ctl-{default_name()[:40]}-"
    pid = holder[len(prefix):]
    return holder.startswith(prefix) and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(pid)


class OneOffLease:
    def __init__(self, store, address: str, source, wanted: int, node, *, name: str | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.address = address
        self.host = f"{source.host}:{source.port}"        # as scheduler.host_key: the budget's key
        self.cap = source.max_connections
        self.wanted = wanted
        self.node = node                                  # the config's node: lease_seconds, heartbeat
        self.name = name or node_name()
        self.clock = clock
        self.sleep = sleep
        self.lease: Lease | None = None
        self._due = 0.0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def claim(self, *, slot_wait: float) -> Lease | Refused:
        """The lease and up to ``wanted`` connections, whatever the account's due time (the admin asked).
        Refused at once when another node holds the lease; while only the host's budget is full, claims
        again each second for up to ``slot_wait`` seconds."""
        self._due = self.store.lease_due(self.address)
        deadline = self.clock() + slot_wait
        waited = False
        dead = None
        while True:
            got = self.store.claim_lease(self.address, self.name, self.clock(), self.node.lease_seconds,
                                         host=self.host, wanted=self.wanted, cap=self.cap, ignore_due=True,
                                         dead=dead)
            if isinstance(got, Refused) and got.holder and dead is None and dead_local_oneoff(got.holder):
                # a one-off of this machine killed mid-pass (kill -9, a crash): no process is left to write
                # under its lease, and the rerun that recovers its in-flight batch must not wait it out
                logger.warning("event=lease_taken_over account=%s from=%s why='that process is gone'",
                               self.address, got.holder)
                dead = got.holder
                continue
            if isinstance(got, Lease):
                got.clock = self.clock
                got.margin = self.node.heartbeat
                self.lease = got
                return got
            if got.holder or self.clock() + SLOT_WAIT > deadline:
                return got
            if not waited:
                logger.info("event=lease_waiting account=%s why=%r for_at_most=%.0fs", self.address, got.why,
                            slot_wait)
                waited = True
            self.sleep(SLOT_WAIT)

    def keep(self, stop: threading.Event) -> None:
        """Renew the lease every heartbeat until release(); ``stop`` is set once it may be someone else's."""
        self._thread = threading.Thread(target=self._renew, args=(stop,), name="lease-renew", daemon=True)
        self._thread.start()

    def _renew(self, stop: threading.Event) -> None:
        try:
            while not self._done.wait(self.node.heartbeat) and self.beat():
                pass
            if not self._done.is_set():
                stop.set()
        finally:
            self.store.release_thread()

    def beat(self) -> bool:
        """One renewal; False once the lease is lost or was not renewed in time: the pass must stop."""
        lease = self.lease
        try:
            lost = self.store.renew_leases(self.name, [lease], self.clock(), self.node.lease_seconds)
        except Exception as e:  # noqa: BLE001 - the database may be down a while: retried next beat
            logger.error("event=lease_renew_failed account=%s error=%r", lease.account, str(e))
            lost = []
        if lost:
            logger.error("event=lease_lost account=%s token=%d what='another node took the account over: "
                         "stopping the pass'", lease.account, lease.token)
            return False
        if self.clock() >= lease.expires - lease.margin:
            logger.error("event=lease_expiring account=%s what='not renewed in time: stopping the pass'",
                         lease.account)
            return False
        return True

    def release(self) -> None:
        """Stop renewing; give back the connections and the lease (with the account's due time as it was)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self.lease is None:
            return
        try:
            if not self.store.release_lease(self.lease, self._due):
                logger.warning("event=lease_lost account=%s token=%d what='taken over before the release'",
                               self.lease.account, self.lease.token)
        except Exception as e:  # noqa: BLE001 - it expires by itself within node.lease_seconds
            logger.error("event=store_error what='release lease' error=%r", str(e))
        self.lease = None
