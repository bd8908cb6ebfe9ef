"""Keeps one watch per account in sync with the scheduler's accounts, the config and the source budget.

Runs on the reactor.  Each tick (1 s) it works out which mode every account should have
(``policy.choose_mode`` per domain, then ``policy.assign`` for the caps), stops what is no longer
wanted, opens IDLE connections and runs due STATUS polls.  New mail seen at the source asks the
scheduler to copy that folder next (``Scheduler.focus``: into the running pass's queue, or a focused
pass now); the end of that copy gives the account's new-mail latency.

Budget: every watch connection (held IDLE, or a poll's short one) is taken from the scheduler's
per-source-host count (``Scheduler.take_watch_connection``), leaving room for a pass (``reserve``),
so passes, login checks and watches together never exceed ``source.max_connections``.  A login check
waiting for the host, or a limit lowered below what is held (throttling, a reload), takes one IDLE
connection back per tick (``event=watch_yield``).
A source that refuses the extra connection (refused, BYE, NO at login, no IDLE) moves the account
to polling with one ``event=watch_fallback`` line, and caps the host's IDLE watches at what it
accepted; both are retried after ``FALLBACK_RETRY``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

from twisted.internet import task, threads

from ..scheduler import host_key
from ..text import shown
from . import conn
from .latency import LatencyHistogram
from .policy import (IDLE, OFF, POLL, STABLE_CONNECTION, Backoff, Mark, PassGate, PollInterval, Want, assign,
                     changed, choose_mode)

logger = logging.getLogger("mailsyncd.watch")

FALLBACK_RETRY = 3600.0       # a refused IDLE is tried again after an hour (the provider's cap may have moved)
BUDGET_RETRY = 5.0            # no free source connection for an IDLE watch: look again this much later
MAX_PENDING = 16              # folders with news held back by the PassGate; more become one whole pass
YIELD_PAUSE = 60.0            # an IDLE watch that gave its connection back to a login or a lowered limit


@dataclass
class _State:
    address: str
    host: str = ""
    mode: str = OFF
    proto: conn.InboxConnection | None = None
    busy: bool = False                 # opening (password being read) or polling
    established: bool = False          # IDLE has been entered on the current connection
    retry_at: float = 0.0              # IDLE: (re)connect not before
    poll_at: float = 0.0
    interval: PollInterval | None = None
    backoff: Backoff = field(default_factory=Backoff)          # IDLE reconnects
    poll_backoff: Backoff = field(default_factory=Backoff)     # failed polls (an IDLE watch's own polls too)
    opened_at: float = 0.0             # when the current IDLE connection was opened
    gate: PassGate = field(default_factory=PassGate)
    pending: set = field(default_factory=set)   # folders with news the gate has not let through yet (None: whole)
    gate_call: object = None           # the delayed call that lets them through
    mark: Mark | None = None           # what the last look at INBOX (or, before it, the last pass) saw
    noticed: float | None = None       # a change was seen at this time and is not copied yet
    whole: bool = False                # a whole pass was asked for (the folder's name was not usable)
    rerun: bool = False                # ... during a pass, which may have listed the folders before it
    latency: float | None = None       # seconds from the last notice to the end of the pass that copied it
    fallback: tuple[str, float] | None = None   # (reason, until): IDLE refused, polled instead
    generation: int = 0                # bumped on every mode change: late callbacks of old work are ignored


def _merge(old: Mark | None, new: Mark) -> Mark:
    if old is None:
        return new
    return Mark(*(n if n is not None else o for o, n in ((old.messages, new.messages),
                                                          (old.uidnext, new.uidnext),
                                                          (old.uidvalidity, new.uidvalidity))))


class Watches:
    def __init__(self, reactor, scheduler, vault, store, state_pool, config_ref, *, opener=conn.open_inbox):
        self.reactor = reactor
        self.scheduler = scheduler
        self.vault = vault
        self.store = store
        self.state_pool = state_pool
        self.config_ref = config_ref
        self.opener = opener
        self.states: dict[str, _State] = {}
        self.latencies = LatencyHistogram()         # every new-mail latency since the start (/metrics)
        self.last_login: dict[str, float] = {}      # address -> last front-door login (wall time)
        self.host_caps: dict[str, tuple[int, float]] = {}   # host -> (IDLE watches it accepted, until)
        self._capped: tuple[int, str] | None = None
        self._loop: task.LoopingCall | None = None
        self.stopping = False

    # -- life cycle -------------------------------------------------------------------------------
    def start(self):
        d = threads.deferToThreadPool(self.reactor, self.state_pool, self.store.last_logins)
        d.addCallback(self._loaded)
        d.addErrback(lambda f: logger.error("event=watch_error error=%r", f.getErrorMessage()))
        return d

    def _loaded(self, logins: dict[str, float]) -> None:
        for address, at in logins.items():
            self.last_login[address] = max(at, self.last_login.get(address, 0.0))
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.reactor
        self._loop.start(1.0, now=True)

    def stop(self) -> None:
        self.stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for st in self.states.values():
            self._close(st)
            if st.gate_call is not None and st.gate_call.active():
                st.gate_call.cancel()

    def on_login(self, address: str) -> None:
        """The front door verified ``address``: a recent user (``sync.watch: auto`` gives them IDLE)."""
        self.last_login[address] = self.reactor.seconds()

    # -- what each account should have ------------------------------------------------------------
    def wanted(self, cfg, now: float) -> dict[str, tuple[str, str | None]]:
        wants = []
        for acct in self.scheduler.accounts.values():
            dom = cfg.domains.get(acct.domain)
            if (dom is None or acct.waiting_login or not acct.completed or acct.final
                    or self.scheduler.is_cut_over(acct.domain) or dom.source.protocol != "imap"):
                continue     # not in sync (yet, or any more): passes only
            mode = choose_mode(dom.sync.watch, self.last_login.get(acct.address), now)
            st = self.states.get(acct.address)
            if mode == IDLE and st is not None and st.fallback is not None and st.fallback[1] > now:
                mode = POLL
            if mode != OFF:
                wants.append(Want(acct.address, host_key(dom.source), mode, self.last_login.get(acct.address)))
        caps = {h: n for h, (n, until) in self.host_caps.items() if until > now}
        return assign(wants, cfg.scheduler.max_watches, caps)

    def tick(self) -> None:
        if self.stopping:
            return
        cfg = self.config_ref()
        now = self.reactor.seconds()
        plan = self.wanted(cfg, now)
        for address in [a for a in self.states if a not in plan]:
            self._close(self.states.pop(address))
        capped: dict[str, int] = {}
        for address, (mode, why) in plan.items():
            if why is not None:
                capped[why] = capped.get(why, 0) + 1
            dom = cfg.domains[self.scheduler.accounts[address].domain]
            st = self.states.get(address)
            if st is None:
                st = self.states[address] = _State(address)
            if st.mode != mode:
                self._switch(st, mode, dom, now)
            if mode == IDLE and st.proto is None and not st.busy and st.retry_at <= now:
                self._open_idle(st, dom)
            if (mode == POLL or (mode == IDLE and st.proto is None)) and not st.busy and st.poll_at <= now:
                self._poll(st, dom)    # an IDLE watch waiting for a connection is polled meanwhile
        self._say_capped(capped, cfg)
        self._yield(cfg, now)

    def _yield(self, cfg, now: float) -> None:
        """Logins and a host's lowered limit come before watches: one IDLE watch per host and tick gives back
        its connection (the least recent front-door user's first); it is polled until it can have one again."""
        holders: dict[str, list[_State]] = {}
        for st in self.states.values():
            if st.proto is not None and st.mode == IDLE:
                holders.setdefault(st.host, []).append(st)
        for host, sts in holders.items():
            dom = cfg.domains[self.scheduler.accounts[sts[0].address].domain]
            if self.scheduler.watch_should_yield(dom.source):
                st = min(sts, key=lambda s: (self.last_login.get(s.address) or 0.0, s.address))
                logger.info("event=watch_yield account=%s host=%s", st.address, host)
                self._close(st)
                st.retry_at = now + YIELD_PAUSE

    def _switch(self, st: _State, mode: str, dom, now: float) -> None:
        self._close(st)
        st.mode, st.generation = mode, st.generation + 1
        st.host = host_key(dom.source)
        st.interval = PollInterval(dom.sync.poll_interval, self.config_ref().scheduler.pass_interval)
        st.retry_at = 0.0
        # the first look is a baseline; spread the first polls over one interval
        st.poll_at = now + (random.uniform(0, dom.sync.poll_interval) if mode == POLL else dom.sync.poll_interval)

    def _say_capped(self, capped: dict[str, int], cfg) -> None:
        key = (sum(capped.values()), ",".join(sorted(capped)))
        if key == (self._capped or (0, "")):
            return
        self._capped = key
        if capped:
            logger.warning("event=watch_capped polled_instead=%d reason=%s max_watches=%d", key[0], key[1],
                           cfg.scheduler.max_watches)
        else:
            logger.info("event=watch_capped polled_instead=0")

    def _close(self, st: _State) -> None:
        st.generation += 1
        if st.proto is not None:
            proto, st.proto = st.proto, None
            proto.stop()        # its ended callback releases the connection

    # -- the connections ----------------------------------------------------------------------------
    def _credentials(self, address: str, endpoint) -> tuple[str, str | None, Mark | None] | None:
        """(source login, password, INBOX as the last pass saw it): in the state thread.  None: the shared
        budget has no room for the connection after all (another node's pass took it)."""
        if not self.scheduler.confirm_watch_connection(endpoint):
            return None
        row = self.store.account(address) or {}
        inbox = next((f for f in self.store.folders(address).values() if f.source_name.upper() == "INBOX"), None)
        seen = Mark(None, inbox.uidnext, inbox.uidvalidity) if inbox is not None and inbox.uidnext else None
        return (endpoint.login_name(row.get("source_address") or address), self.vault.source_password(address),
                seen)

    def _baseline(self, st: _State, seen: Mark | None) -> None:
        """Mail that came between the last pass and the first look is a change too: start from the pass."""
        if st.mark is None and seen is not None:
            st.mark = seen

    def _take(self, st: _State, dom, reserve: int) -> bool:
        return self.scheduler.take_watch_connection(dom.source, reserve=reserve)

    def _connect(self, st: _State, dom, reserve: int, retry: str, then) -> None:
        """Take a source connection from the budget (else retry later: ``st.<retry>``), read the account's
        credentials in the state thread, then ``then(user, password, gen)``; the connection goes back if the
        watch changed meanwhile, the password is gone or the daemon stops."""
        if not self._take(st, dom, reserve=reserve):
            setattr(st, retry, self.reactor.seconds() + BUDGET_RETRY)
            return
        st.busy = True
        gen = st.generation
        d = threads.deferToThreadPool(self.reactor, self.state_pool, self._credentials, st.address, dom.source)

        def got(creds):
            if creds is None:
                setattr(st, retry, self.reactor.seconds() + BUDGET_RETRY)
            user, password, seen = creds or (None, None, None)
            if gen != st.generation or password is None or self.stopping:
                st.busy = False
                self.scheduler.release_watch_connection(dom.source)
                return
            self._baseline(st, seen)
            then(user, password, gen)

        d.addCallback(got)
        d.addErrback(self._broken, st, dom)

    def _open_idle(self, st: _State, dom) -> None:
        self._connect(st, dom, dom.sync.connections, "retry_at", lambda user, password, gen: self._idle_open(
            st, dom, user, password, gen))

    def _idle_open(self, st: _State, dom, user, password, gen: int) -> None:
        st.established = False
        st.opened_at = self.reactor.seconds()
        st.proto = self.opener(self.reactor, dom.source, user, password, IDLE,
                               on_mark=lambda m: self._seen(st, m, gen, baseline=True),
                               on_change=lambda m, folder="INBOX": self._seen(st, m, gen, baseline=False,
                                                                              folder=folder))
        st.busy = False
        st.proto.ended.addCallback(self._idle_ended, st, dom, gen)

    def _broken(self, failure, st: _State, dom) -> None:
        st.busy = False
        self.scheduler.release_watch_connection(dom.source)
        logger.error("event=watch_error account=%s error=%r", st.address, failure.getErrorMessage())

    def _idle_ended(self, ended: conn.Ended, st: _State, dom, gen: int) -> None:
        self.scheduler.release_watch_connection(dom.source)
        if gen != st.generation or self.stopping or ended.stage == "stopped":
            return                   # closed on purpose (_close forgot it already)
        st.proto = None
        now = self.reactor.seconds()
        if not ended.established:
            # the source would not give us the extra connection: poll instead, and hold the host's watches
            accepted = sum(1 for s in self.states.values()
                           if s.host == st.host and s.proto is not None and s.mode == IDLE)
            st.fallback = (ended.reason, now + FALLBACK_RETRY)
            self.host_caps[st.host] = (accepted, now + FALLBACK_RETRY)
            logger.warning("event=watch_fallback account=%s reason=%r host=%s host_idle_cap=%d", st.address,
                           ended.reason, st.host, accepted)
            return
        if now - st.opened_at >= STABLE_CONNECTION:
            st.backoff.reset()       # it worked for a while: a drop now is news, not a source turning us away
        st.retry_at = now + st.backoff.next()
        logger.info("event=watch_lost account=%s reason=%r retry_in=%.0fs", st.address, ended.reason,
                    st.retry_at - now)

    def _poll(self, st: _State, dom) -> None:
        self._connect(st, dom, 1, "poll_at", lambda user, password, gen: self._poll_open(
            st, dom, user, password, gen))

    def _poll_open(self, st: _State, dom, user, password, gen: int) -> None:
        marks: list[Mark] = []
        proto = self.opener(self.reactor, dom.source, user, password, "status", on_mark=marks.append)
        proto.ended.addCallback(self._polled, st, dom, gen, marks)

    def _polled(self, ended: conn.Ended, st: _State, dom, gen: int, marks: list[Mark]) -> None:
        self.scheduler.release_watch_connection(dom.source)
        st.busy = False
        if gen != st.generation:
            return
        for mark in marks:
            # only now, with the poll's connection closed and back in the budget: a source allowing one
            # connection per user would refuse the focused pass's login while the poll still held it
            self._seen(st, mark, gen, baseline=True)
        now = self.reactor.seconds()
        if ended.established:
            st.poll_backoff.reset()
            st.poll_at = now + st.interval.after(st.noticed is not None)
        else:
            first = st.poll_backoff.failures == 0
            st.poll_at = now + max(st.interval.current, st.poll_backoff.next())
            if first:
                logger.warning("event=watch_poll_failed account=%s stage=%s reason=%r", st.address, ended.stage,
                               ended.reason)

    # -- changes and the passes that copy them -----------------------------------------------------
    def _seen(self, st: _State, mark: Mark, gen: int, *, baseline: bool, folder: str | None = "INBOX") -> None:
        """A look at INBOX (``baseline``: compare with the last one), or news of new mail in ``folder``
        (NOTIFY: another folder; None: one whose name the source sent in a form we do not take)."""
        if gen != st.generation:
            return
        if folder != "INBOX":
            self._noticed(st, folder)
            return
        if st.mode == IDLE and st.proto is not None and baseline:
            # no backoff reset here: a source that answers EXAMINE and then says BYE must not get a reconnect
            # every 5 s (_idle_ended resets it once a connection has lasted)
            logger.info("event=watch_idle account=%s messages=%s", st.address, mark.messages)
        if not baseline or changed(st.mark, mark):
            self._noticed(st, "INBOX")
        st.mark = _merge(st.mark, mark)

    def _noticed(self, st: _State, folder: str | None) -> None:
        """New mail in ``folder`` (None: a folder whose name the source sent in a form we do not take)."""
        if st.noticed is None:
            st.noticed = self.reactor.seconds()
        if folder in st.pending or None in st.pending:
            return                    # already on its way (a whole pass takes every folder)
        if len(st.pending) >= MAX_PENDING:
            folder = None             # a flood of names, made up or not: a whole pass finds them, memory stays put
        logger.info("event=watch_change account=%s via=%s folder=%s", st.address, st.mode,
                    shown(folder, 80) if folder is not None else "?")
        self._ask(st, folder)

    def _ask(self, st: _State, folder: str | None) -> None:
        """Copy ``folder`` (None: a whole pass) when the account's PassGate lets the watch's news through."""
        st.pending.add(folder)
        if st.gate_call is not None and st.gate_call.active():
            return
        st.gate_call = None
        if self.stopping or self.states.get(st.address) is not st:
            st.pending.clear()        # no longer watched: the scheduler's passes take over
            return
        delay = st.gate.wait(self.reactor.seconds())
        if delay > 0:
            st.gate_call = self.reactor.callLater(delay, self._let_through, st)
            return
        pending, st.pending = st.pending, set()
        for f in sorted(pending, key=lambda f: (f is None, f or "")):
            if f is None:
                self._whole_pass(st)
                continue
            # that folder next: into the running pass's queue, or a focused pass now (within the budgets)
            d = self.scheduler.focus(st.address, f, reason="watch")
            d.addCallback(self._focused, st, f)
            d.addErrback(lambda fail: logger.error("event=watch_error account=%s error=%r", st.address,
                                                   fail.getErrorMessage()))

    def _let_through(self, st: _State) -> None:
        st.gate_call = None
        if st.pending:
            self._ask(st, next(iter(st.pending)))

    def _whole_pass(self, st: _State) -> None:
        if st.address in self.scheduler.running:
            st.rerun = True           # the running pass may have listed the folders before the message came
        st.whole = True
        self.scheduler.sync_now(st.address)

    def _focused(self, result, st: _State, folder: str) -> None:
        if result.state == "done":
            if result.copied:
                st.gate.refund(self.reactor.seconds())    # real mail, not made-up news
            self._copied(st)
        elif result.state == "absent" and self.states.get(st.address) is st:
            self._ask(st, None)       # not a source path as the store knows it: let a whole pass find it
        # failed or stopped: the scheduler retries the account; the next change or pass tells

    def _copied(self, st: _State) -> None:
        if st.noticed is None:
            return                    # an earlier notice's copy already counted
        st.latency = self.reactor.seconds() - st.noticed
        st.noticed = None
        self.latencies.observe(st.latency)
        if st.mode == POLL and st.interval is not None:
            st.interval.after(True)
        logger.info("event=new_mail_copied account=%s latency=%.1fs via=%s", st.address, st.latency, st.mode)

    def pass_ended(self, address: str, res) -> None:
        """The scheduler ended a pass of ``address`` (``res``: its PassResult or None): what a whole pass
        was asked for (``_whole_pass``) is copied once a pass that began after the notice ends well."""
        st = self.states.get(address)
        if st is None or not st.whole or res is None or res.error is not None:
            return
        if st.rerun:
            st.rerun = False
            self.scheduler.sync_now(address)
            return
        st.whole = False
        self._copied(st)

    # -- views ------------------------------------------------------------------------------------
    def view(self) -> dict[str, dict]:
        """Per watched account: ``watching`` (idle|poll) and ``new_mail_latency`` (seconds, or None)."""
        return {a: {"watching": st.mode, "new_mail_latency": None if st.latency is None else round(st.latency, 1),
                    "watch_fallback": st.fallback[0] if st.fallback else None}
                for a, st in self.states.items()}

    def summary(self) -> dict:
        modes = [st.mode for st in self.states.values()]
        return {"watch_idle": modes.count(IDLE), "watch_poll": modes.count(POLL),
                "watch_connections": sum(1 for st in self.states.values() if st.proto is not None)}
