"""Wiring: one Twisted process with the front door and the background passes."""

from __future__ import annotations

import logging

from twisted.application import internet, service
from twisted.internet import defer
from twisted.python.threadpool import ThreadPool

from .auth.gate import Gate
from .background import SyncQueue
from .config import Config
from .proxy import tls
from .proxy.frontdoor import FrontDoorFactory
from .store import Store
from .vault import Vault

logger = logging.getLogger("mailsyncd")


class _PoolService(service.Service):
    def __init__(self, pool: ThreadPool):
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


class Daemon(service.MultiService):
    def __init__(self, config: Config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.store = Store.in_state_dir(config.state_dir)
        self.vault = Vault.open(config.state_dir, self.store)
        fd = config.frontdoor
        self.auth_pool = ThreadPool(minthreads=0, maxthreads=fd.auth_threads, name="auth")
        self.sync_pool = ThreadPool(minthreads=0, maxthreads=fd.sync_parallel, name="sync")
        self.queue = SyncQueue(reactor, self.sync_pool, self.store, self.vault, self.current, fd.sync_parallel)
        self.gate = Gate(reactor, self.auth_pool, self.current, self.store, self.vault,
                         on_login=self.queue.on_login)
        self.tls_options = tls.server_options(config.tls.cert, config.tls.key) if config.tls else None
        self.factories: list[FrontDoorFactory] = []
        # Pools stop last (services stop in reverse order), after the queue has wound down.
        _PoolService(self.auth_pool).setServiceParent(self)
        _PoolService(self.sync_pool).setServiceParent(self)
        for name, addr, implicit in (("imap", config.listen.imap, False), ("imaps", config.listen.imaps, True)):
            if addr is None:
                continue
            f = FrontDoorFactory(reactor, self.current, self.gate, self.queue, self.current_tls,
                                 implicit_tls=implicit)
            f.noisy = False
            self.factories.append(f)
            if implicit:
                srv = internet.SSLServer(addr.port, f, self.tls_options, interface=addr.host)
            else:
                srv = internet.TCPServer(addr.port, f, interface=addr.host)
            srv.setName(name)
            srv.setServiceParent(self)

    def current(self) -> Config:
        return self.config

    def current_tls(self):
        return self.tls_options

    def startService(self) -> None:
        super().startService()
        where = " ".join(f"{n}={a}" for n, a in (("imap", self.config.listen.imap),
                                                  ("imaps", self.config.listen.imaps)) if a)
        logger.info("event=ready %s domains=%s", where or "listeners=none", ",".join(self.config.domains))

    async def _stop(self) -> None:
        logger.info("event=stopping running=%d", len(self.queue.running))
        await self.queue.shutdown()
        await service.MultiService.stopService(self)
        self.store.close()

    def stopService(self):
        return defer.ensureDeferred(self._stop())

    @property
    def sessions(self) -> int:
        return sum(len(f.sessions) for f in self.factories)
