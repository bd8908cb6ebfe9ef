"""Wiring: one Twisted process with the front door, the scheduler, reload, status and shutdown."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

from OpenSSL import SSL
from twisted.application import internet, service
from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from . import systemd
from .providers import autodetect
from .auth.gate import Gate
from .config import Config, ConfigError, MasterPasswords, load_config
from .connlimits import ConnectionLimits, fd_budget
from .errors import TLSFailure
from .proxy import tls
from .proxy.frontdoor import FrontDoorFactory
from .proxy.tlsrelay import BulkTLSFactory
from .proxyproto.listener import ProxyHeaderFactory
from .scheduler import Scheduler
from .statedir import STATUS_FILE
from .store import Store
from .vault import Vault
from .watch.manager import Watches

logger = logging.getLogger("mailsyncd")

STATUS_EVERY = 2.0


class _PoolService(service.Service):
    def __init__(self, pool: ThreadPool):
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()


@implementer(IOpenSSLServerConnectionCreator)
class _CurrentTLS:
    """Server TLS whose certificate can be swapped: new handshakes get the new one.  It declares
    Twisted's connection-creator interface, else Twisted warns (LegacyContextFactoryWarning) at each start."""

    def __init__(self, options):
        self.options = options

    def serverConnectionForTLS(self, tls_protocol) -> SSL.Connection:
        return SSL.Connection(self.options.getContext(), None)


class _Adopted(service.Service):
    """A listening socket handed over by systemd (socket activation)."""

    def __init__(self, reactor, fd: int, factory, tls_options):
        self.reactor, self.fd, self.factory, self.tls_options = reactor, fd, factory, tls_options
        self.port = None

    def startService(self) -> None:
        super().startService()
        self.port = systemd.adopt(self.reactor, self.fd, self.factory, tls_options=self.tls_options)

    def stopService(self):
        super().stopService()
        return self.port.stopListening() if self.port is not None else None


class Daemon(service.MultiService):
    def __init__(self, config: Config, reactor, *, notifier: systemd.Notifier | None = None,
                 fds: dict[str, list[int]] | None = None):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.notifier = notifier or systemd.Notifier()
        self.generation = 1
        self.reloads = 0
        self.reload_error: str | None = None
        self.restart_needed: list[str] = []    # what the last reload could not apply; mailsyncctl reload says it
        self.started = time.time()
        self.store = Store.open(config)
        self.vault = Vault.open(config.state_dir, self.store)
        self.auth_pool = ThreadPool(minthreads=0, maxthreads=config.frontdoor.auth_threads, name="auth")
        self.sync_pool = ThreadPool(minthreads=0, maxthreads=config.scheduler.max_accounts, name="sync")
        self.state_pool = ThreadPool(minthreads=1, maxthreads=1, name="state")
        self.scheduler = Scheduler(reactor, self.sync_pool, self.state_pool, self.store, self.vault, self.current)
        self.watches = Watches(reactor, self.scheduler, self.vault, self.store, self.state_pool, self.current)
        self.scheduler.on_pass_ended = self.watches.pass_ended
        self.gate = Gate(reactor, self.auth_pool, self.current, self.store, self.vault,
                         on_login=self._logged_in, cut_over=self.scheduler.is_cut_over,
                         source_slots=self.scheduler, state_pool=self.state_pool)
        self.master_passwords = MasterPasswords.read(config)     # not at each relay: no file reads there
        self.conn_limits = ConnectionLimits(*self._conn_caps(config))
        self.scheduler.on_cutover = self.gate.forget_recent
        self.scheduler.on_password_rejected = self.gate.password_rejected
        self.scheduler.on_change = self._write_status
        self.tls = _CurrentTLS(tls.server_options(config.tls.cert, config.tls.key)) if config.tls else None
        self.factories: list[FrontDoorFactory] = []
        self.listeners: list[service.Service] = []
        self._status_loop: task.LoopingCall | None = None
        self._watchdog: task.LoopingCall | None = None
        self._last_status = ""
        self.phase_counts: dict[str, int] = {}
        self.detected: dict[str, dict] = {}          # host: auto results, for status
        self.detect_errors: dict[str, str] = {}
        self._accounts_rev = self.store.revision()   # imports made while we run bump it
        # Services stop in reverse order: pools last, after the scheduler has wound down.
        for pool in (self.auth_pool, self.sync_pool, self.state_pool):
            _PoolService(pool).setServiceParent(self)
        self._listen(fds or {})
        self._listen_http()

    def _listen(self, fds: dict[str, list[int]]) -> None:
        for name, addr, implicit in (("imap", self.config.listen.imap, False),
                                     ("imaps", self.config.listen.imaps, True)):
            inherited = fds.get(name, [])
            if addr is None and not inherited:
                continue
            if implicit and self.tls is None:
                raise TLSFailure("an imaps socket was passed in but the config has no tls: section")
            f = FrontDoorFactory(self.reactor, self.current, self.gate, self.scheduler, self.current_tls,
                                 implicit_tls=implicit, limits=self.conn_limits,
                                 master_passwords=lambda: self.master_passwords)
            f.noisy = False
            self.factories.append(f)
            factory, tls_options = self._proxy_header(name, f, self.tls if implicit else None)
            if inherited:
                for fd in inherited:
                    srv = _Adopted(self.reactor, fd, factory, tls_options)
                    srv.setServiceParent(self)
                    self.listeners.append(srv)
                logger.info("event=listen name=%s from=systemd fds=%s", name, inherited)
                continue
            srv = self._server(addr, factory, tls_options)
            srv.setName(name)
            srv.setServiceParent(self)
            self.listeners.append(srv)

    # -- the self-service web page (plan 3) --------------------------------------------------------
    def _listen_http(self) -> None:
        """listen.http: HTTPS with the front door's certificate when tls: is set, else plain HTTP on loopback only."""
        self.web_site = None
        addr = self.config.listen.http
        if addr is None:
            return
        from .web import app
        if self.tls is None and not app.is_loopback(addr.host):
            raise TLSFailure(f"listen.http {addr}: plain HTTP would send passwords across the network; add a "
                             "tls: section (the page is then served over HTTPS), or listen on a loopback "
                             "address behind a TLS-terminating proxy")
        self.web_site = app.make_site(self)
        srv = self._server(addr, *self._proxy_header("http", self.web_site, self.tls))
        srv.setName("http")
        srv.setServiceParent(self)
        self.listeners.append(srv)
        logger.info("event=listen name=http addr=%s tls=%s", addr, "yes" if self.tls is not None else "no")

    def _proxy_header(self, name: str, factory, tls_options):
        """(factory, TLS options for the listener): on a listen.proxy_protocol listener the PROXY
        header is read first, from trusted proxies only, and TLS (implicit) starts after it."""
        if not self.config.listen.proxied(name):
            return factory, tls_options
        if tls_options is not None:
            factory = BulkTLSFactory(tls_options, False, factory)
        wrapped = ProxyHeaderFactory(factory, self.reactor, lambda: self.config.frontdoor.trusted_proxies, name=name)
        logger.info("event=listen_proxy_protocol name=%s trusted=%s", name,
                    ",".join(self.config.frontdoor.trusted_proxies))
        return wrapped, None

    @staticmethod
    def _server(addr, factory, tls_options):
        if tls_options is not None:
            return internet.TCPServer(addr.port, BulkTLSFactory(tls_options, False, factory), interface=addr.host)
        return internet.TCPServer(addr.port, factory, interface=addr.host)

    def current(self) -> Config:
        return self.config

    @staticmethod
    def _conn_caps(config: Config) -> tuple[int, int]:
        """(per client network pre-auth, total): the total stays below RLIMIT_NOFILE (2 fds a session)."""
        fd = config.frontdoor
        total = min(fd.max_connections, fd_budget())
        if total < fd.max_connections:
            logger.info("event=connection_cap frontdoor.max_connections=%d lowered_to=%d reason=RLIMIT_NOFILE",
                        fd.max_connections, total)
        return fd.max_preauth_per_ip, total

    def current_tls(self):
        return self.tls

    # -- start ---------------------------------------------------------------------------------
    def startService(self) -> None:
        try:
            super().startService()
        except BaseException:
            # a listener that cannot bind: the pools' threads must not keep a half-started process alive
            for pool in (self.auth_pool, self.sync_pool, self.state_pool):
                if pool.started:
                    pool.stop()
            raise
        self.scheduler.start()
        self.watches.start()
        self._status_loop = task.LoopingCall(self._tick_status)
        self._status_loop.start(STATUS_EVERY, now=True)
        where = " ".join(f"{n}={a}" for n, a in (("imap", self.config.listen.imap),
                                                  ("imaps", self.config.listen.imaps)) if a)
        logger.info("event=ready %s domains=%s generation=%d", where or "listeners=systemd",
                    ",".join(self.config.domains), self.generation)
        self.notifier.ready(self.status_line())
        self._watchdog = systemd.start_watchdog(self.reactor, self.notifier)
        self._write_status()

    def _logged_in(self, address: str, domain, first: bool) -> None:
        self.watches.on_login(address)
        self.scheduler.on_login(address, domain, first)

    # -- reload (SIGHUP) ---------------------------------------------------------------------------
    def reload(self) -> None:
        self.notifier.reloading()
        self.reloads += 1
        old = self.config
        try:
            new = load_config(old.path)
            options = tls.server_options(new.tls.cert, new.tls.key) if new.tls else None
            masters = MasterPasswords.read(new)
            if (new.tls is None) != (old.tls is None):
                raise ConfigError(["tls: adding or removing the tls section needs a restart "
                                   "(the listeners are set up at start)"])
        except (ConfigError, TLSFailure) as e:
            self._reload_failed(e.errors if isinstance(e, ConfigError) else [str(e)])
            return
        if any(d.source.auto for d in new.domains.values()):
            # DNS look-ups and probes block: off the reactor
            d = threads.deferToThreadPool(self.reactor, self.state_pool, autodetect.resolve, new)
            d.addCallback(lambda r: self._apply(r[0], options, r[1], r[2], masters))
            d.addErrback(lambda f: self._reload_failed([f"source auto-detection failed: {f.getErrorMessage()}"]))
            return
        self._apply(new, options, {}, {}, masters)

    def _reload_failed(self, errors: list[str]) -> None:
        self.reload_error = "; ".join(errors)
        for err in errors:
            logger.error("event=reload_failed error=%r", err)
        logger.error("event=reload_failed keeping=generation-%d", self.generation)
        self.notifier.ready(f"reload failed: {errors[0]}"[:200])
        self._last_status = ""
        self._write_status()

    def _apply(self, new: Config, options, found: dict, failed: dict, masters: MasterPasswords) -> None:
        old = self.config
        notes = []
        if new.listen != old.listen:
            logger.warning("event=reload_note what='listen addresses change only on restart' old=%s new=%s",
                           _listen_text(old), _listen_text(new))
            notes.append(f"listen addresses change only on restart: still {_listen_text(old)}, "
                         f"after a restart {_listen_text(new)}")
        if new.state_dir != old.state_dir:
            logger.warning("event=reload_note what='state_dir changes only on restart' kept=%s", old.state_dir)
            notes.append(f"state_dir changes only on restart: still {old.state_dir}, after a restart {new.state_dir}")
        if new.database != old.database:
            logger.warning("event=reload_note what='database changes only on restart'")
            notes.append("database changes only on restart")
        self.restart_needed = notes
        new = dataclasses.replace(new, listen=old.listen, state_dir=old.state_dir, database=old.database)
        added = sorted(set(new.domains) - set(old.domains))
        removed = sorted(set(old.domains) - set(new.domains))
        self.config = new
        self.detected = {k: v.to_dict() for k, v in found.items()}
        self.detect_errors = failed
        if options is not None:
            self.tls.options = options
        self.master_passwords = masters
        self.gate.reconfigure(new)
        self.conn_limits.update(*self._conn_caps(new))
        self.auth_pool.adjustPoolsize(maxthreads=new.frontdoor.auth_threads)
        self.sync_pool.adjustPoolsize(maxthreads=new.scheduler.max_accounts)
        self.generation += 1
        self.reload_error = None
        logger.info("event=reloaded generation=%d domains=%s added=%s removed=%s", self.generation,
                    ",".join(new.domains), ",".join(added) or "-", ",".join(removed) or "-")
        self.reactor.callLater(0, self.scheduler.tick)
        self._last_status = ""
        self.notifier.ready(self.status_line())
        self._write_status()

    # -- status --------------------------------------------------------------------------------
    @property
    def sessions(self) -> int:
        return sum(len(f.sessions) for f in self.factories)

    def status_line(self) -> str:
        c = self.phase_counts
        # the status words (mailsyncd.status): the store's "synced" is "tailing" once no pass runs
        line = (f"accounts: {len(self.scheduler.running)} syncing, {c.get('synced', 0)} tailing, "
                f"{c.get('failed', 0)} failed, {c.get('cutover', 0)} cutover; sessions: {self.sessions}")
        if self.reload_error:
            line = f"reload failed: {self.reload_error[:120]} | " + line
        return line

    def _tick_status(self) -> defer.Deferred:
        d = threads.deferToThreadPool(self.reactor, self.state_pool, self._read_state)
        d.addCallback(self._got_state)
        d.addErrback(lambda f: logger.error("event=status_error error=%r", f.getErrorMessage()))
        return d

    def _read_state(self):
        rev = self.store.revision()
        changed = None
        if rev != self._accounts_rev:
            self._accounts_rev = rev
            changed = self.store.accounts()
        return self.store.phase_counts(), self.store.cutovers(), changed

    def _got_state(self, state) -> None:
        self.phase_counts, cutovers, changed = state
        self.scheduler.refresh_cutovers(cutovers)
        if changed is not None:
            self.scheduler.add_accounts(changed)
        line = self.status_line()
        if line != self._last_status:
            self._last_status = line
            self.notifier.status(line)
        self._write_status()

    def status(self, domain: str | None = None, user: str | None = None, *, query=None,
               totals: bool = True) -> defer.Deferred:
        """The status document (mailsyncd.status, schema 1) for the web views, one page of ``query``
        (statusquery.Query; default: the first page of ``domain``/``user``); fires with a dict.
        ``totals=False``: the page only (the totals are zeros)."""
        from . import status, statusquery
        query = query or statusquery.Query(domain=domain, user=user)
        live = self.scheduler.live()

        def read():
            return statusquery.read(self.store, query, running=live.keys(), totals=totals), self.store.cutovers()

        d = threads.deferToThreadPool(self.reactor, self.state_pool, read)
        d.addCallback(lambda r: status.build_page(
            r[0]["rows"], r[0]["groups"], config=self.config, live=live, running_domains=r[0]["running_domains"],
            cutovers=r[1], daemon=self.daemon_info(), domain=query.domain, next_cursor=r[0]["next_cursor"],
            watch=self.watches.view()))
        return d

    def daemon_info(self) -> dict:
        return {"running": True, "pid": os.getpid(), "generation": self.generation, "started": self.started,
                "sessions": self.sessions, "relayed": sum(f.relayed for f in self.factories),
                "reload_error": self.reload_error, "config_path": self.config.path,
                "passes_running": len(self.scheduler.running)}

    def _running_config(self) -> dict:
        """What ``mailsyncctl status`` needs of the running generation's config when the file no longer parses."""
        c = self.config
        rec = {"pass_interval": c.scheduler.pass_interval,
               "cutovers": {name: d.cutover for name, d in sorted(c.domains.items())}}
        if c.database.url is not None:     # the URL carries no password (config refuses one); the file's path
            rec["database"] = {"url": c.database.url, "password_file": c.database.password_file,
                               "pool_size": c.database.pool_size}
        return rec

    def _write_status(self) -> None:
        doc = {"pid": os.getpid(), "generation": self.generation, "reloads": self.reloads,
               "reload_error": self.reload_error, "started": self.started, "updated": time.time(),
               "config_path": self.config.path, "state_dir": self.config.state_dir,
               "running_config": self._running_config(), "domains": sorted(self.config.domains),
               "sessions": self.sessions, "relayed": sum(f.relayed for f in self.factories),
               "phases": self.phase_counts, "scheduler": self.scheduler.summary(),
               "logins": dict(self.gate.counts), "detected": self.detected, "live": self.scheduler.live(),
               "detect_errors": self.detect_errors, "watch": self.watches.view(),
               "watch_summary": self.watches.summary()}
        doc["restart_needed"] = self.restart_needed
        path = os.path.join(self.config.state_dir, STATUS_FILE)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, path)
        except OSError as e:
            logger.warning("event=status_file_error path=%s error=%r", path, e.strerror)

    # -- stop ----------------------------------------------------------------------------------
    async def _stop(self) -> None:
        self.notifier.stopping()
        logger.info("event=stopping running=%d sessions=%d", len(self.scheduler.running), self.sessions)
        for loop in (self._status_loop, self._watchdog):
            if loop is not None and loop.running:
                loop.stop()
        for srv in self.listeners:           # no new connections from here on
            await defer.maybeDeferred(srv.disownServiceParent)
        self.watches.stop()
        await self.scheduler.shutdown()
        await self._close_sessions()
        await service.MultiService.stopService(self)
        self.store.close()
        try:
            os.unlink(os.path.join(self.config.state_dir, STATUS_FILE))
        except OSError:
            pass
        logger.info("event=stopped")

    def _close_sessions(self, spread: float = 3.0) -> defer.Deferred:
        """Close relays spread over a few seconds, so clients do not all reconnect in the same instant."""
        sessions = [s for f in self.factories for s in list(f.sessions)]
        if not sessions:
            return defer.succeed(None)
        step = min(spread / len(sessions), 0.05)
        for i, s in enumerate(sessions):
            self.reactor.callLater(i * step, s.transport.loseConnection)
        return task.deferLater(self.reactor, len(sessions) * step + 0.1, lambda: None)

    def stopService(self):
        return defer.ensureDeferred(self._stop())


def _listen_text(cfg: Config) -> str:
    text = ",".join(f"{n}={a}" for n, a in (("imap", cfg.listen.imap), ("imaps", cfg.listen.imaps)) if a) or "-"
    return text + (f",proxy_protocol={'+'.join(cfg.listen.proxy_protocol)}" if cfg.listen.proxy_protocol else "")
