"""Background passes started by logins: a small in-process queue on the reactor side.

Each pass runs the blocking sync engine in the ``sync`` thread pool, so a big
copy never delays a login.  One pass per account at a time; accounts beyond
``parallel`` wait their turn in arrival order.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from twisted.internet import defer, threads

from .sync.account import AccountSync
from .sync.progress import Progress

logger = logging.getLogger("mailsyncd.background")


class SyncQueue:
    def __init__(self, reactor, pool, store, vault, config_ref, parallel: int):
        self.reactor = reactor
        self.pool = pool
        self.store = store
        self.vault = vault
        self.config_ref = config_ref
        self.parallel = parallel
        self.waiting: deque[str] = deque()
        self.running: dict[str, Progress] = {}
        self.stop = threading.Event()
        self.passes: dict[str, defer.Deferred] = {}   # address -> fires when its current pass ends

    def on_login(self, address: str, domain, first: bool) -> None:
        """Gate callback: start a pass for a new account or one whose last pass did not finish."""
        acct = self.store.account(address)
        if first or acct is None or acct.get("phase") in ("new", "failed", "syncing"):
            self.submit(address)

    def submit(self, address: str) -> None:
        if address in self.running or address in self.waiting or self.stop.is_set():
            return
        self.waiting.append(address)
        logger.info("event=pass_queued account=%s waiting=%d running=%d", address, len(self.waiting),
                    len(self.running))
        self._start_more()

    def progress(self, address: str) -> Progress | None:
        return self.running.get(address)

    def _start_more(self) -> None:
        while self.waiting and len(self.running) < self.parallel and not self.stop.is_set():
            address = self.waiting.popleft()
            progress = Progress()
            self.running[address] = progress
            d = threads.deferToThreadPool(self.reactor, self.pool, self._run, address, progress)
            d.addErrback(lambda f, a=address: logger.error("event=pass_crashed account=%s error=%r",
                                                           a, f.getErrorMessage()))
            d.addBoth(self._ended, address)
            self.passes[address] = d

    def _run(self, address: str, progress: Progress):
        password = self.vault.source_password(address)
        if password is None:
            logger.warning("event=pass_skipped account=%s reason='no stored source password'", address)
            return None
        domain = self.config_ref().domain_for(address)
        return AccountSync(domain, address, password, self.store, progress=progress, stop=self.stop).run()

    def _ended(self, result, address: str):
        self.running.pop(address, None)
        self.passes.pop(address, None)
        self._start_more()
        return result

    def shutdown(self) -> defer.Deferred:
        """Ask running passes to stop at the next batch; fires when they have."""
        self.stop.set()
        self.waiting.clear()
        return defer.DeferredList(list(self.passes.values()), consumeErrors=True)


def alert_text(progress: Progress | None) -> str | None:
    """The [ALERT] a client shows at login while the user's migration runs."""
    if progress is None:
        return None
    if not progress.total:
        return "Mailbox migration in progress: counting your old mail; it will appear here shortly."
    pct = int(100 * progress.done / progress.total)
    return (f"Mailbox migration in progress: {progress.done:,} of {progress.total:,} messages ({pct}%); "
            "older mail is still arriving.")
