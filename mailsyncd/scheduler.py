"""Which account syncs when: continuous passes within limits, backoff, and cutover.

Runs on the reactor.  Passes run the blocking engine in the ``sync`` pool;
store writes that are not part of a pass go to the one-thread ``state`` pool,
so the reactor never waits on SQLite's write lock.

* Every account with a stored source password gets a pass every
  ``scheduler.pass_interval`` seconds (with jitter), first-time and small
  mailboxes first.
* Limits: ``max_accounts`` at once, ``max_accounts_per_domain``, and per source
  host a number of *connections* (``source.max_connections``): providers cap
  connections per client IP.  When a source shows throttling signs the host's
  limit is halved, and it grows back by a quarter connection per good pass.
  The front door's password checks take their connection from the same budget
  (``acquire``/``release``): a login waits up to ``frontdoor.source_wait`` for
  one, ahead of any pass, and is answered NO [UNAVAILABLE] if none frees up.  A check is granted
  on this node's view of the others' use and confirmed in the shared budget before it connects.
* A failed pass is retried with exponential backoff and jitter.  A source that
  refuses the stored password marks the account failed until the user logs in
  again (with the new password).
* Several nodes may share one database: a pass runs only under its account's lease (mailsyncd.leases,
  store/leases.py), claimed with its connections from the host's budget shared by every node, renewed
  each ``node.heartbeat``; the adaptive host limit is shared too.  Each node keeps its own ordering.
* Cutover, per domain: one final pass per account, then phase ``cutover``
  (syncing stops; logins are decided by the verifier), then the stored source
  passwords are destroyed.  Each step is logged and recorded in the store.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field

from twisted.internet import defer, task, threads

from . import cutover
from .store.base import DatabaseUnavailable
from .focus import ByTarget, FocusQueue, FocusResult
from .leases import NodeLeases
from .store import Lease, Refused
from .sync.account import AccountSync, PassResult
from .sync.progress import Progress

logger = logging.getLogger("mailsyncd.scheduler")

NEVER = float("inf")
MAX_FOCUS_WAITING = 64   # folders of one account waiting to be copied first; a client opening more is not held
ABSENT_TTL = 300.0   # a name no source folder has is not looked for again (a source login) for this long
UNKNOWN_LOOKS = 5    # names the last plan did not have that may start a pass (a source login) per ABSENT_TTL
# After the watch's news, a folder's count in the store is not believed for this long: the copy it started may
# have listed the folder while mail was still arriving, and the source's notice of the rest may come after the
# client's SELECT (seen in bench/open_folder.py --watch auto: 259 of 300 shown as complete)
NEWS_FRESH = 10.0


@dataclass
class _Account:
    address: str
    domain: str
    due: float = 0.0
    failures: int = 0
    completed: bool = False        # has had a complete pass: later passes go after first-timers
    messages: int = 0              # source size, for "small mailboxes first"
    waiting_login: bool = False    # the source refused the stored password: wait for the user
    final: bool = False            # the cutover's final pass is pending
    focus: list = field(default_factory=list)   # folders to copy next (focus.py keys), before a pass starts
    rate: float | None = None      # messages a second copied by its last pass that copied enough to tell
    absent: dict = field(default_factory=dict)  # target name -> when a plan showed no source folder has it
    planned: tuple | None = None   # (when, FocusQueue) of its last pass's plan: every source folder then
    looks: list = field(default_factory=list)   # when a name that plan did not have started a pass
    news: dict = field(default_factory=dict)    # source path -> when the watch last asked for its copy
    urgent: bool = False           # asked for (a login, sync now, a retry, the cutover): not the lease's due


@dataclass
class _Waiter:
    key: object                    # a source path or focus.ByTarget
    deferred: defer.Deferred
    reason: str
    on_left: object = None         # (messages left) -> None, once the pass knows
    told: bool = False
    requeued: bool = False
    queue: object = None           # the FocusQueue ``ticket`` was given by (a later pass's snapshot is newer)
    ticket: int = 0


@dataclass
class _Running:
    progress: Progress
    stop: threading.Event
    host: str
    connections: int
    domain: str
    final: bool = False            # started as the cutover's final pass
    deferred: defer.Deferred | None = None
    focus: FocusQueue | None = None
    extra: int = 0                 # connections granted for the focus queue (counted in ``connections``)
    urgent: bool = False
    lease: Lease | None = None     # set by the pass's thread once claimed


@dataclass
class _Cutover:
    # cutover.NONE until this daemon begins it (the plan itself is the store's row), then FINAL_PASS, DONE
    state: str = cutover.NONE
    pending: set[str] = field(default_factory=set)   # accounts whose final pass has not ended
    closing: bool = False                            # the close is in flight in the state thread


def host_key(endpoint) -> str:
    return f"{endpoint.host}:{endpoint.port}"


class Scheduler:
    def __init__(self, reactor, sync_pool, state_pool, store, vault, config_ref):
        self.reactor = reactor
        self.sync_pool = sync_pool
        self.state_pool = state_pool
        self.store = store
        self.vault = vault
        self.config_ref = config_ref
        self.accounts: dict[str, _Account] = {}
        self.running: dict[str, _Running] = {}
        self.host_limit: dict[str, float] = {}
        self.cutovers: dict[str, _Cutover] = {}
        self._store_cutovers: dict[str, dict] = {}   # the store's cutover rows, as last read
        self.stopping = False
        self._loop: task.LoopingCall | None = None
        self.checks: dict[str, int] = {}    # host -> login checks holding one of its connections
        self.watch_conns: dict[str, int] = {}   # host -> connections held by watches (mailsyncd.watch)
        self.leases = NodeLeases(reactor, state_pool, store, config_ref)
        # a login check waiting on the other nodes' use is woken by a fresh read of it, not only by ours
        self.leases.on_others = lambda: [self._wake(h) for h in list(self._check_waiters)]
        self._check_waiters: dict[str, list[tuple[object, defer.Deferred]]] = {}
        self._focus_waiters: dict[str, list[_Waiter]] = {}
        self.counts = {"passes": 0, "failed_passes": 0, "throttled": 0, "login_checks_waited": 0,
                       "login_checks_refused": 0}
        self.on_cutover = None             # (domain) -> None, after a domain is cut over
        self.on_password_rejected = None   # (address) -> None, when the source refuses the stored password
        self.on_change = None              # () -> None, when a pass starts or ends (status views refresh)
        self.on_pass_ended = None          # (address, PassResult | None) -> None, after a pass ends

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> defer.Deferred:
        d = threads.deferToThreadPool(self.reactor, self.state_pool, self._load)
        d.addCallback(self._loaded)
        return d

    def _load(self) -> tuple[list[dict], dict[str, dict]]:
        self.leases.register()
        return self.store.accounts(), self.store.cutovers()

    def _loaded(self, loaded) -> None:
        rows, cutovers = loaded
        for r in rows:
            if r["phase"] == "cutover" or not r["has_password"]:
                continue
            self.accounts[r["address"]] = _Account(r["address"], r["domain"], due=self.reactor.seconds(),
                                                   completed=r["phase"] == "synced", messages=r["messages"] or 0)
        for domain, row in cutovers.items():
            if row["state"] == cutover.DONE:
                self.cutovers[domain] = _Cutover(cutover.DONE)
                if any(r["domain"] == domain and r["has_password"] for r in rows):
                    # stopped between step 2 and the end of step 4: finish destroying the passwords
                    threads.deferToThreadPool(self.reactor, self.state_pool, self._destroy_passwords, domain
                                              ).addErrback(lambda f: logger.error("event=cutover_error error=%r",
                                                                                  f.getErrorMessage()))
            # a row in final_pass (interrupted by a restart) begins again: see cutover.TRANSITIONS
        self._store_cutovers = cutovers
        logger.info("event=scheduler_started accounts=%d", len(self.accounts))
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(1.0, now=True)
        self.leases.start(self.running)

    def shutdown(self, grace: float = 25.0) -> defer.Deferred:
        """Stop starting passes; ask running ones to stop after their current batch."""
        self.stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.leases.stop()
        for run in self.running.values():
            run.stop.set()
        pending = [r.deferred for r in self.running.values() if r.deferred is not None]
        d = defer.DeferredList(pending, consumeErrors=True)
        d.addTimeout(grace, self.reactor)
        d.addErrback(lambda _f: logger.warning("event=shutdown_passes_still_running n=%d", len(self.running)))
        return d

    # -- inputs ------------------------------------------------------------------------
    def on_login(self, address: str, domain, first: bool) -> None:
        """The gate verified ``address`` at the source (and stored its password)."""
        acct = self.accounts.get(address)
        if acct is None:
            acct = self.accounts[address] = _Account(address, domain.name)
        was_waiting = acct.waiting_login
        acct.waiting_login = False
        if first or was_waiting or not acct.completed or acct.failures:
            acct.due = 0.0           # first logins and recovering accounts jump the queue
            acct.failures = 0
            acct.urgent = True
        self.reactor.callLater(0, self.tick)

    def add_accounts(self, rows: list[dict]) -> int:
        """The store's accounts after another process wrote (an import, mailsyncctl account): schedule the
        new ones, retry the stuck and those no longer failed, drop the removed."""
        added = 0
        now = self.reactor.seconds()
        present = {r["address"] for r in rows}
        for address in [a for a in self.accounts if a not in present and a not in self.running]:
            del self.accounts[address]
        for r in rows:
            if r["phase"] == "cutover" or not r["has_password"] or self.is_cut_over(r["domain"]):
                continue
            acct = self.accounts.get(r["address"])
            if acct is None:
                self.accounts[r["address"]] = _Account(r["address"], r["domain"], due=now,
                                                       messages=r["messages"] or 0)
                added += 1
            elif acct.waiting_login or (acct.failures and r["phase"] != "failed"
                                        and r["address"] not in self.running):
                # perhaps the import brought a new password, or `mailsyncctl account retry` cleared failed
                acct.waiting_login = False
                acct.failures = 0
                acct.due = now
                acct.urgent = True
        if added:
            logger.info("event=accounts_added count=%d", added)
            self.reactor.callLater(0, self.tick)
        return added

    def sync_now(self, address: str) -> bool:
        acct = self.accounts.get(address)
        if acct is None:
            return False
        acct.due = 0.0
        acct.waiting_login = False
        acct.urgent = True
        self.reactor.callLater(0, self.tick)
        return True

    # -- the folder the user opens goes next (the front door; focus.py) ----------------------------
    def focus(self, address: str, path, *, reason: str, on_left=None) -> defer.Deferred:
        """Copy ``path`` (a source path, or focus.ByTarget) of ``address`` next.  Fires a focus.FocusResult
        when that folder's copy is complete, failed or stopped.  ``on_left(n)`` is called once the pass
        knows how many messages the folder still lacks.

        No pass running: a focused pass starts at once (ahead of other accounts' waiting passes, within the
        budgets).  A pass running: its workers take the folder before their planned order, and one more
        worker starts for it if the host's budget has a connection to spare (_grant); if the workers are
        past taking, a focused pass follows it.  Never two passes of one account at once."""
        acct = self.accounts.get(address)
        if acct is None or self.stopping or self.is_cut_over(acct.domain):
            return defer.succeed(FocusResult("absent", detail="not syncing"))
        if acct.waiting_login:
            return defer.succeed(FocusResult("failed", detail="the source refused the stored password"))
        if len(self._focus_waiters.get(address, ())) >= MAX_FOCUS_WAITING:
            # a client opening name after name while no pass can start or plan: memory must not follow it
            return defer.succeed(FocusResult("failed", detail=f"{MAX_FOCUS_WAITING} folders already waiting"))
        w = _Waiter(path, defer.Deferred(), reason, on_left)
        self._focus_waiters.setdefault(address, []).append(w)
        if reason == "watch" and not isinstance(path, ByTarget):
            now = self.reactor.seconds()
            acct.news = {p: t for p, t in acct.news.items() if now - t < NEWS_FRESH}
            acct.news[path] = now
        logger.info("event=focus account=%s folder=%r reason=%s", address,
                    path.name if isinstance(path, ByTarget) else path, reason)
        run = self.running.get(address)
        if run is not None and run.focus is not None:
            w.queue, w.ticket = run.focus, run.focus.push(path)
            self._focus_changed(address)
            if w in self._focus_waiters.get(address, ()):
                self._grant(address, run)
        else:
            if path not in acct.focus:
                acct.focus.append(path)
            self.reactor.callLater(0, self.tick)
        return w.deferred

    def folder_left(self, address: str, target_name: str) -> defer.Deferred:
        """What copying the folder a client opens as ``target_name`` would take: fires (key for focus(),
        messages it lacks or None if unknown), or None when there is nothing to do (complete, not a
        source folder, not syncing).  From the running pass's plan, else the store (in the state thread)."""
        acct = self.accounts.get(address)
        if acct is None or acct.waiting_login or self.is_cut_over(acct.domain):
            return defer.succeed(None)
        now = self.reactor.seconds()
        seen = acct.absent.get(target_name)
        if seen is not None and now - seen < ABSENT_TTL:
            return defer.succeed(None)    # a folder only on the new server: asking the source again costs a login
        run = self.running.get(address)
        planned = acct.planned
        if (run is None and planned is not None and now - planned[0] < ABSENT_TTL
                and planned[1].resolve(ByTarget(target_name)) is None):
            # no source folder had that name at the last plan: new there since (only a pass can tell), or made
            # up -- a client may make up a new one per SELECT, and each pass costs a source login
            acct.looks = [t for t in acct.looks if now - t < ABSENT_TTL]
            if len(acct.looks) >= UNKNOWN_LOOKS:
                return defer.succeed(None)
            acct.looks.append(now)
        if run is not None and run.focus is not None and run.focus.planned:
            # the pass's counts are as of its snapshot, which is older than this open: mail may have come
            # since (the watch started this pass for it), so its copy is asked again and the open held
            path = run.focus.resolve(ByTarget(target_name))
            if path is None:
                return defer.succeed(None)
            if not run.focus.only or run.focus.left(path) is not None:
                return defer.succeed((path, run.focus.left(path) or None))
            # else a focused pass of other folders: the store says

        def answer(rows):
            if not rows:
                return ByTarget(target_name), None      # never copied: only a pass's plan can tell
            for path, left in rows:
                if left != 0:
                    return path, left
            run = self.running.get(address)
            others = run is not None and run.focus.only and run.focus.planned   # a focused pass of other folders
            now = self.reactor.seconds()
            news = any(now - acct.news.get(path, -NEWS_FRESH) < NEWS_FRESH for path, _left in rows)
            if acct.focus or acct.urgent or (run is not None and not others) or news:
                # the store's counts are a finished pass's; a pass of this account is about to look again,
                # or the watch's news may have outrun them (NEWS_FRESH)
                return rows[0][0], None
            return None
        return threads.deferToThreadPool(self.reactor, self.state_pool, self.store.folders_into, address,
                                         target_name).addCallback(answer)

    def copy_rate(self, address: str) -> float | None:
        """Messages a second this account's copy runs at: the running pass's, else the last one's."""
        run = self.running.get(address)
        if run is not None and run.progress.done >= 50:
            return run.progress.rate
        acct = self.accounts.get(address)
        return acct.rate if acct else None

    def _grant(self, address: str, run: _Running) -> None:
        """The running pass's workers may all be busy with long folders: give the queue a worker of its own,
        one connection more, if the source host's budget has it."""
        dom = self.config_ref().domains.get(run.domain)
        if dom is None or run.extra >= 1 or self._host_free(run.host, dom.source) < 1:
            return
        if run.focus.grant():
            run.extra += 1
            run.connections += 1
            logger.info("event=focus_worker account=%s host=%s connections=%d", address, run.host, run.connections)

    def _focus_queue(self, acct: _Account, only: bool) -> FocusQueue:
        keys, acct.focus = acct.focus, []
        address = acct.address
        return FocusQueue(keys, only=only and bool(keys),
                          notify=lambda: self.reactor.callFromThread(self._focus_changed, address))

    def _focus_changed(self, address: str, run: _Running | None = None) -> None:
        """The pass planned or finished a folder: answer the waiters it concerns."""
        run = run or self.running.get(address)
        if run is None or run.focus is None or not run.focus.planned:
            return
        acct = self.accounts.get(address)
        if acct is not None and (acct.planned is None or acct.planned[1] is not run.focus):
            acct.planned = (self.reactor.seconds(), run.focus)
        for w in list(self._focus_waiters.get(address, ())):
            path = run.focus.resolve(w.key)
            if path is None:
                if acct is not None and isinstance(w.key, ByTarget):
                    now = self.reactor.seconds()
                    if len(acct.absent) >= 1000:
                        acct.absent = {k: t for k, t in acct.absent.items() if now - t < ABSENT_TTL}
                    acct.absent[w.key.name] = now
                self._focus_fire(address, w, FocusResult("absent", detail="no such source folder"))
                continue
            left = run.focus.left(path)
            if left and not w.told and w.on_left is not None:   # 0 from an older snapshot says nothing
                w.told = True
                w.on_left(left)
            done, error = run.focus.finished(path, w.ticket if w.queue is run.focus else 0)
            if done:
                self._focus_fire(address, w, FocusResult("failed" if error else "done", path, error,
                                                         run.focus.copied(path)))

    def _focus_ended(self, address: str, run: _Running, res: PassResult | None) -> None:
        self._focus_changed(address, run)
        acct = self.accounts.get(address)
        for w in list(self._focus_waiters.get(address, ())):
            if res is None or res.error is not None or acct is None or self.stopping:
                state = "stopped" if res is not None and res.error_kind == "Stopped" else "failed"
                self._focus_fire(address, w, FocusResult(state, detail=res.error if res else "no password"))
            elif not run.focus.planned:
                # a pass without folders to plan (a POP3 source): it copied everything there is
                self._focus_fire(address, w, FocusResult("done", copied=res.copied))
            elif w.requeued:
                self._focus_fire(address, w, FocusResult("failed", detail="not copied by two passes"))
            else:
                # pushed after the pass's workers stopped taking: a focused pass follows
                w.requeued = True
                if w.key not in acct.focus:
                    acct.focus.append(w.key)

    def _focus_fire(self, address: str, w: _Waiter, result: FocusResult) -> None:
        waiters = self._focus_waiters.get(address, [])
        if w in waiters:
            waiters.remove(w)
        if not waiters:
            self._focus_waiters.pop(address, None)
        logger.info("event=focus_done account=%s folder=%r state=%s reason=%s", address, result.path,
                    result.state, w.reason)
        w.deferred.callback(result)

    def progress(self, address: str) -> Progress | None:
        run = self.running.get(address)
        return run.progress if run else None

    def live(self) -> dict[str, dict]:
        """The running passes' counters, for the progress views (mailsyncd.status)."""
        out = {}
        for address, run in self.running.items():
            p = run.progress
            out[address] = {"done": p.done, "total": p.total, "bytes": p.bytes, "rate": round(p.rate, 1),
                            "current": sorted(p.current), "connections": run.connections,
                            "stage": p.stage}
        return out

    def is_cut_over(self, domain: str) -> bool:
        c = self.cutovers.get(domain)
        return c is not None and c.state == cutover.DONE

    # -- the source hosts' connection budget, for the front door's password checks ---------------
    def _host_free(self, host: str, endpoint) -> int:
        limit = min(int(self.host_limit.get(host, float(endpoint.max_connections))), endpoint.max_connections)
        used = (self.checks.get(host, 0) + self.watch_conns.get(host, 0)
                + sum(r.connections for r in self.running.values() if r.host == host))
        return limit - used - self.leases.others.get(host, 0)

    def acquire(self, endpoint, wait: float) -> defer.Deferred:
        """One connection to ``endpoint``'s host for a login check; fires True, or False after ``wait`` s.
        A connection free in this node's view of the others (read up to a second before) is confirmed in
        the shared budget before it is granted: another node may have taken it meanwhile."""
        host = host_key(endpoint)
        deadline = self.reactor.seconds() + wait
        waiters = self._check_waiters.setdefault(host, [])
        if not waiters and self._host_free(host, endpoint) >= 1:
            self.checks[host] = self.checks.get(host, 0) + 1
            return self._confirm_check(endpoint, host, deadline)
        self.counts["login_checks_waited"] += 1
        return self._wait_check(endpoint, host, deadline)

    def _wait_check(self, endpoint, host: str, deadline: float) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        entry = (endpoint, d)
        waiters = self._check_waiters.setdefault(host, [])
        waiters.append(entry)
        self.leases.refresh_others()     # the view may be a second old: read it again now

        def give_up() -> None:
            if entry in waiters:
                waiters.remove(entry)
                self.counts["login_checks_refused"] += 1
                logger.warning("event=source_busy host=%s what='login check found no free connection' "
                               "in_use=%d", host, self.checks.get(host, 0) + sum(
                                   r.connections for r in self.running.values() if r.host == host))
                d.callback(False)

        timer = self.reactor.callLater(max(0.0, deadline - self.reactor.seconds()), give_up)
        d.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        # granted here (self.checks counted by _wake): confirmed in the shared budget like a direct grant
        d.addCallback(lambda ok: self._confirm_check(endpoint, host, deadline) if ok else False)
        return d

    def _confirm_check(self, endpoint, host: str, deadline: float) -> defer.Deferred:
        if self.state_pool is None:
            return defer.succeed(True)
        n = self.checks.get(host, 0) + self.watch_conns.get(host, 0)
        d = threads.deferToThreadPool(self.reactor, self.state_pool, self.leases.take_checks, host, n,
                                      endpoint.max_connections)

        def confirmed(ok: bool):
            if ok:
                return True
            self._drop_check(host)       # another node took it since our last read: wait like the others
            if self.reactor.seconds() >= deadline:
                self.counts["login_checks_refused"] += 1
                return False
            self.counts["login_checks_waited"] += 1
            return self._wait_check(endpoint, host, deadline)

        def failed(f):
            # the budget cannot be read (the database is down): this node's own view decides, as it did
            logger.error("event=store_error what='confirm a login check' error=%r", f.getErrorMessage())
            return True
        return d.addCallbacks(confirmed, failed)

    def _drop_check(self, host: str) -> None:
        n = self.checks.get(host, 0) - 1
        if n > 0:
            self.checks[host] = n
        else:
            self.checks.pop(host, None)
        self._publish(host)

    def release(self, endpoint) -> None:
        host = host_key(endpoint)
        self._drop_check(host)
        self._wake(host)
        if not self.stopping:
            self.reactor.callLater(0, self.tick)

    def take_watch_connection(self, endpoint, *, reserve: int) -> bool:
        """One connection to ``endpoint``'s host for a watch, if ``reserve`` more stay free (for a pass) and
        no login check waits; a watch never waits for one."""
        host = host_key(endpoint)
        if self._check_waiters.get(host) or self._host_free(host, endpoint) < 1 + reserve:
            return False
        self.watch_conns[host] = self.watch_conns.get(host, 0) + 1
        return True

    def confirm_watch_connection(self, endpoint) -> bool:
        """In the state thread, after take_watch_connection and before connecting: the connection taken on
        this node's view of the others (read up to a second before) is counted in the shared budget if it
        still has room; False: give it back (release_watch_connection) and try later."""
        host = host_key(endpoint)
        return self.leases.take_checks(host, self.checks.get(host, 0) + self.watch_conns.get(host, 0),
                                       endpoint.max_connections)

    def watch_should_yield(self, endpoint) -> bool:
        """A login check waits for ``endpoint``'s host, or its limit fell (throttling, a reload) below what is
        held: a watch there should give its connection back."""
        host = host_key(endpoint)
        return bool(self._check_waiters.get(host)) or self._host_free(host, endpoint) < 0

    def release_watch_connection(self, endpoint) -> None:
        host = host_key(endpoint)
        n = self.watch_conns.get(host, 0) - 1
        if n > 0:
            self.watch_conns[host] = n
        else:
            self.watch_conns.pop(host, None)
        self._publish(host)
        self._wake(host)

    def _publish(self, host: str) -> None:
        """This node's login checks and watches on ``host`` into the shared budget: the other nodes' passes,
        checks and watches count them (a watch's connection left out let three nodes' polls go over it)."""
        self.leases.publish_checks(host, self.checks.get(host, 0) + self.watch_conns.get(host, 0))

    def _wake(self, host: str) -> None:
        waiters = self._check_waiters.get(host)
        while waiters and self._host_free(host, waiters[0][0]) >= 1:
            _endpoint, d = waiters.pop(0)
            self.checks[host] = self.checks.get(host, 0) + 1
            d.callback(True)             # then confirmed in the shared budget (_wait_check)

    # -- the loop ----------------------------------------------------------------------------
    def tick(self) -> None:
        if self.stopping:
            return
        cfg = self.config_ref()
        now = self.reactor.seconds()
        self._check_cutovers(cfg, now)
        self.leases.refresh_others()
        free_total = cfg.scheduler.max_accounts - len(self.running)
        if free_total <= 0:
            return
        due = [a for a in self.accounts.values()
               if a.address not in self.running and not a.waiting_login and (a.due <= now or a.focus)
               and a.domain in cfg.domains and not self.is_cut_over(a.domain)]
        due.sort(key=lambda a: (not a.focus, not a.final, a.completed, a.messages, a.due))
        per_domain: dict[str, int] = {}
        used: dict[str, int] = dict(self.checks)
        for host, n in list(self.watch_conns.items()) + list(self.leases.others.items()):
            used[host] = used.get(host, 0) + n
        for r in self.running.values():
            per_domain[r.domain] = per_domain.get(r.domain, 0) + 1
            used[r.host] = used.get(r.host, 0) + r.connections
        for acct in due:
            if free_total <= 0:
                break
            domain = cfg.domains[acct.domain]
            if per_domain.get(acct.domain, 0) >= cfg.scheduler.max_accounts_per_domain:
                continue
            host = host_key(domain.source)
            if self._check_waiters.get(host):
                continue             # logins waiting for this host go first
            limit = int(self.host_limit.setdefault(host, float(domain.source.max_connections)))
            limit = min(limit, domain.source.max_connections)   # a reload may have lowered it
            free = limit - used.get(host, 0)
            if free < 1:
                continue
            conns = min(domain.sync.connections, free)
            self._start(acct, domain, host, conns, focused=acct.due > now)
            free_total -= 1
            per_domain[acct.domain] = per_domain.get(acct.domain, 0) + 1
            used[host] = used.get(host, 0) + conns

    def _start(self, acct: _Account, domain, host: str, conns: int, focused: bool = False) -> None:
        # a focused pass claims the lease whatever its due time (the user waits); it is not the account's
        # scheduled pass, so the account's own request (a login's, the cutover's) stays for that one
        run = _Running(Progress(), threading.Event(), host, conns, acct.domain, final=acct.final and not focused,
                       urgent=focused or acct.urgent or acct.final)
        run.focus = self._focus_queue(acct, only=focused)
        if not focused:
            acct.urgent = False
        self.running[acct.address] = run
        logger.info("event=pass_start account=%s host=%s connections=%d%s", acct.address, host, conns,
                    " final=yes" if run.final else " focused=yes" if focused else "")
        d = threads.deferToThreadPool(self.reactor, self.sync_pool, self._pass, acct.address, domain, run)
        d.addCallbacks(self._ended, self._crashed, callbackArgs=(acct.address, domain),
                       errbackArgs=(acct.address, domain))
        run.deferred = d
        if self.on_change is not None:
            self.on_change()

    def _pass(self, address: str, domain, run: _Running) -> PassResult | Refused | None:
        lease = None
        try:
            lease = self.leases.claim(address, run.host, run.connections, domain.source.max_connections, run.urgent)
            if isinstance(lease, Refused):
                return lease
            run.connections = lease.connections
            run.lease = lease
            store = self.store.fenced(lease)     # every write of the pass checks the lease's token
            password = self.vault.source_password(address)
            if password is None:
                return None
            row = self.store.account(address) or {}
            res = AccountSync(domain, address, password, store, progress=run.progress, stop=run.stop,
                              connections=run.connections, source_address=row.get("source_address"),
                              focus=run.focus).run()
            notice = self.config_ref().notice
            if notice.enabled and res.complete and not run.focus.only and res.error_kind != "LeaseLost":
                self._notice(domain, address, password, notice, store)
            return res
        finally:
            if isinstance(lease, Lease):
                self.leases.free_slot(lease)
            self.store.release_thread()

    def _notice(self, domain, address: str, password: str, notice, store) -> None:
        from . import notice as notices
        try:
            notices.deliver(domain, address, password, store, sender=notice.sender)
        except Exception as e:  # noqa: BLE001 - a notice must never fail the pass
            logger.warning("event=notice_failed account=%s error=%r", address, str(e))

    def _crashed(self, failure, address: str, domain) -> None:
        event = "database_unavailable" if failure.check(DatabaseUnavailable) else "pass_crashed"
        logger.error("event=%s account=%s error=%r", event, address, failure.getErrorMessage())
        res = PassResult(address, error=f"internal error: {failure.getErrorMessage()}", error_kind="crash")
        self._ended(res, address, domain)

    def _ended(self, res: PassResult | Refused | None, address: str, domain) -> None:
        run = self.running.pop(address, None)
        if run is not None:
            self._wake(run.host)
        acct = self.accounts.get(address)
        now = self.reactor.seconds()
        sched = self.config_ref().scheduler
        if isinstance(res, Refused) or (res is not None and res.error_kind == "LeaseLost"):
            self._not_ours(res, acct, run, now)
            if run is not None:
                why = res.why if isinstance(res, Refused) else res.error
                self._focus_ended(address, run, PassResult(address, error=f"not run here: {why}",
                                                           error_kind="NotOurs"))
            if self.on_change is not None:
                self.on_change()
            if not self.stopping:
                self.reactor.callLater(0, self.tick)
            return
        focused = run is not None and run.focus is not None and run.focus.only
        if acct is not None and res is not None and res.error is None and res.copied >= 50 and res.seconds > 0:
            acct.rate = res.copied / res.seconds      # what a folder the user opens can expect
        if acct is not None and focused and res is not None and res.error is None:
            pass                     # a focused pass leaves the account's schedule as it was
        elif acct is not None:
            final = run is not None and run.final
            if final:
                acct.final = False
            if res is None:
                acct.waiting_login = True
                logger.warning("event=pass_skipped account=%s reason='no stored source password'", address)
            elif res.error_kind == "Stopped":
                acct.due = now
            elif res.error is None:
                self.counts["passes"] += 1
                acct.failures = 0
                acct.completed = True
                acct.messages = max(acct.messages, res.copied + res.present)
                acct.due = now + sched.pass_interval * random.uniform(0.9, 1.1)
            else:
                self.counts["failed_passes"] += 1
                acct.failures += 1
                if res.error_kind == "AuthFailed" and not res.throttled:
                    acct.waiting_login = True
                    if self.on_password_rejected is not None:
                        self.on_password_rejected(address)
                    self._set_phase(address, "failed", "the source refused the stored password (changed?); "
                                    "syncing resumes at the user's next login: " + res.error)
                else:
                    wait = min(sched.failure_backoff * 2 ** (acct.failures - 1), sched.failure_backoff_max)
                    acct.due = now + wait * random.uniform(0.5, 1.0)
                    logger.warning("event=pass_failed account=%s failures=%d retry_in=%.0fs error=%r",
                                   address, acct.failures, acct.due - now, res.error)
            if acct.final and res is not None and res.error is None:
                acct.due = 0.0       # a pass that began before the cutover does not count: the final one now
            c = self.cutovers.get(acct.domain)
            if final and c is not None:
                c.pending.discard(address)
        if res is not None and run is not None:
            self._adapt(run.host, res, domain)
        if run is not None:
            self._focus_ended(address, run, res)
        if run is not None and run.lease is not None:
            self.leases.release(run.lease, acct.due if acct is not None and acct.due != NEVER else now)
        if self.on_change is not None:
            self.on_change()
        if self.on_pass_ended is not None:
            self.on_pass_ended(address, res)
        if not self.stopping:
            self.reactor.callLater(0, self.tick)

    def _not_ours(self, res, acct: _Account | None, run: _Running | None, now: float) -> None:
        """The lease was not granted (another node holds it, not due, no connection free), or was lost
        mid-pass: no pass happened here, nothing to count; try again when it may be free."""
        if isinstance(res, Refused):
            logger.debug("event=lease_refused account=%s why=%r", res.account, res.why)
            retry_at = res.retry_at
        else:
            logger.warning("event=pass_lost account=%s error=%r", res.address, res.error)
            retry_at = now + self.config_ref().node.lease_seconds
        if acct is not None:
            acct.due = max(retry_at, now + 1.0)
            # a refused claim keeps the request (a login's, the cutover's) for the next try
            acct.urgent = acct.urgent or (run is not None and run.urgent and isinstance(res, Refused))

    def _adapt(self, host: str, res: PassResult, domain) -> None:
        """The host's limit, shared by the nodes in the store: halved when the source throttles, a quarter
        connection back per good pass."""
        cap = domain.source.max_connections
        if not res.throttled and (res.error is not None or self.host_limit.get(host, cap) >= cap):
            return
        if res.throttled:
            self.counts["throttled"] += 1
        cur = self.host_limit.get(host, float(cap))
        d = threads.deferToThreadPool(self.reactor, self.state_pool, self.store.adapt_host_limit, host, cap,
                                      res.throttled, res.error is None, self.reactor.seconds())

        def adapted(new: float) -> None:
            if res.throttled:
                logger.warning("event=source_throttled host=%s limit=%d->%d account=%s", host, int(cur), int(new),
                               res.address)
            self.host_limit[host] = new
        d.addCallback(adapted)
        d.addErrback(lambda f: logger.error("event=store_error what='adapt host limit' error=%r",
                                            f.getErrorMessage()))

    def _set_phase(self, address: str, phase: str, reason: str | None) -> None:
        logger.warning("event=account_%s account=%s reason=%r", phase, address, reason)
        threads.deferToThreadPool(self.reactor, self.state_pool, self.store.set_phase, address, phase,
                                  reason).addErrback(lambda f: logger.error("event=store_error error=%r",
                                                                            f.getErrorMessage()))

    # -- cutover (the states and legal moves: mailsyncd.cutover) ---------------------------------
    def cutover_time(self, cfg, domain: str) -> float | None:
        d = cfg.domains.get(domain)
        return cutover.plan_time(self._store_cutovers.get(domain), d.cutover if d else None)

    def refresh_cutovers(self, rows: dict[str, dict]) -> None:
        """Rows of the store's cutover table (written by `mailsyncctl cutover` and the dashboard)."""
        self._store_cutovers = rows
        for domain, row in rows.items():
            c = self.cutovers.get(domain)
            if row["state"] != cutover.FINAL_PASS and c is not None and c.state == cutover.FINAL_PASS:
                self._call_off(domain, row)

    def _call_off(self, domain: str, row: dict | None) -> None:
        """The store says the cutover is not (or no longer) in its final passes: cancelled or moved."""
        logger.warning("event=cutover_cancelled domain=%s during=final_pass state=%s", domain,
                       cutover.state_of(row))
        if row is not None:
            self._store_cutovers[domain] = row
        self.cutovers[domain] = _Cutover()
        for a in self.accounts.values():
            if a.domain == domain:
                a.final = False

    def _check_cutovers(self, cfg, now: float) -> None:
        for name, dom in cfg.domains.items():
            c = self.cutovers.setdefault(name, _Cutover())
            if c.state == cutover.NONE:
                if cutover.due(self._store_cutovers.get(name), dom.cutover, now):
                    self._begin_cutover(name, c, now)
            elif c.state == cutover.FINAL_PASS and not c.pending and not c.closing:
                c.closing = True
                d = threads.deferToThreadPool(self.reactor, self.state_pool, self._finish_cutover, name, now)
                d.addCallbacks(self._cut_over, self._cutover_failed, callbackArgs=(name,), errbackArgs=(name,))

    def _begin_cutover(self, domain: str, c: _Cutover, now: float) -> None:
        c.state = cutover.next_state(c.state, cutover.BEGIN)
        c.pending = {a.address for a in self.accounts.values()
                     if a.domain == domain and not a.waiting_login}
        for addr in c.pending:
            acct = self.accounts[addr]
            acct.final = True
            acct.due = 0.0
        logger.warning("event=cutover_step domain=%s step=1/4 what='final pass per account' accounts=%d",
                       domain, len(c.pending))
        d = threads.deferToThreadPool(self.reactor, self.state_pool, self.store.begin_cutover, domain,
                                      self.cutover_time(self.config_ref(), domain),
                                      f"final pass of {len(c.pending)} accounts", now)
        d.addCallback(self._begun, domain, c)
        d.addErrback(lambda f: logger.error("event=cutover_error domain=%s error=%r", domain, f.getErrorMessage()))

    def _begun(self, refused: dict | None, domain: str, c: _Cutover) -> None:
        # cancelled or postponed between our last look at the store and the start
        if refused is not None and self.cutovers.get(domain) is c and c.state == cutover.FINAL_PASS:
            self._call_off(domain, refused)

    def _finish_cutover(self, domain: str, now: float) -> tuple[int, int] | dict | None:
        """Steps 2-4, in the state thread: phase cutover, then destroy the source passwords.

        Step 2 is the point of no return, taken in one transaction with the store's cancel rule:
        a cancel accepted before it wins (returns the store's row instead)."""
        n = self.store.close_cutover(domain, "syncing stopped; destroying the stored source passwords")
        if n is None:
            return self.store.cutover(domain)
        logger.warning("event=cutover_step domain=%s step=2/4 what='syncing stopped, phase cutover' accounts=%d",
                       domain, n)
        logger.warning("event=cutover_step domain=%s step=3/4 what='logins decided by the last good "
                       "password (verifier); the source is no longer asked'", domain)
        forgotten = self._destroy_passwords(domain)
        logger.warning("event=cutover_step domain=%s step=4/4 what='stored source passwords destroyed' "
                       "passwords=%d", domain, forgotten)
        self.store.set_cutover(domain, now, cutover.DONE, f"{n} accounts cut over, {forgotten} passwords destroyed")
        return n, forgotten

    def _destroy_passwords(self, domain: str) -> int:
        forgotten = 0
        for row in self.store.accounts(domain):
            if row["has_password"]:
                self.vault.forget_password(row["address"])
                forgotten += 1
        return forgotten

    def _cut_over(self, result, domain: str) -> None:
        if isinstance(result, dict) and result.get("state") == cutover.DONE:
            # another node won the close (the store's compare-and-set) and destroys the passwords
            logger.warning("event=cutover_done_elsewhere domain=%s", domain)
            result = (0, 0)
        elif not isinstance(result, tuple):
            self._call_off(domain, result)
            return
        self.cutovers[domain] = _Cutover(cutover.next_state(cutover.FINAL_PASS, cutover.CLOSE))
        for addr in [a for a, acct in self.accounts.items() if acct.domain == domain]:
            del self.accounts[addr]
        logger.warning("event=cutover_done domain=%s accounts=%d passwords_destroyed=%d", domain, *result)
        if self.on_cutover is not None:
            self.on_cutover(domain)

    def _cutover_failed(self, failure, domain: str) -> None:
        logger.error("event=cutover_error domain=%s error=%r", domain, failure.getErrorMessage())
        self.cutovers[domain] = _Cutover(cutover.FINAL_PASS)   # the close is retried at the next tick

    # -- numbers --------------------------------------------------------------------------------
    def summary(self) -> dict:
        return {"running": len(self.running), "scheduled": len(self.accounts),
                "waiting_login": sum(a.waiting_login for a in self.accounts.values()),
                "backing_off": sum(1 for a in self.accounts.values() if a.failures),
                "cut_over_domains": sorted(d for d, c in self.cutovers.items() if c.state == cutover.DONE),
                **self.counts}

