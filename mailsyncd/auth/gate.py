"""Who may log in: the front door's password check, on the reactor side.

Order of checks, cheapest and least harmful first:
1. the address must belong to a configured domain;
2. a login with the same credentials as one in progress shares its answer
   (a client opening five connections at once);
3. a token from the throttle (auth/throttle.py), before any password
   comparison at all: the in-memory caches and the argon2 verifier are
   comparisons too, and without this a guesser could test passwords locally
   at full speed while a verifier is fresh.  A right password gives it back;
4. a (user, password) pair that just failed fails again without asking anyone
   (a phone retrying a stale password must not lock its owner out: it costs
   no token either, as it teaches nothing);
5. a password verified at the source within ``verifier_ttl`` matches the
   slow-hash verifier, so a client opening five connections costs one check;
6. the source decides, over a connection from the source host's budget
   (``source.max_connections``, shared with the scheduler's passes).

Every answer that is not OK waits out the throttle's failure delay; a refused
password is NO [AUTHENTICATIONFAILED], and a refusal without comparing it
(throttled, too many checks in progress, the source busy or down) is
NO [UNAVAILABLE].  Blocking work (argon2, SQLite, the source login) runs in
the ``auth`` thread pool so a slow source never delays another user; the
throttle's transactions run in the ``state`` pool, never behind a source login.

Shared by every node on the same store: the throttle's buckets and failure
streaks, the verifiers, the known networks and the first-login record (a
compare-and-set: two nodes verifying a user's first login at once report ONE
first login).  Kept in each node's memory: the sharing of concurrent checks,
the 60 s positive cache and the negative cache of wrong passwords (keyed by an
HMAC whose key never leaves the process: a wrong password is often nearly the
right one, so no trace of it goes to the database).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass, replace

from twisted.internet import defer, task, threads

from ..config import UnknownDomain
from ..providers.quirks import APP_PASSWORD
from ..store.base import DatabaseUnavailable
from ..text import field
from . import source
from .throttle import Throttle, limits_for, network_of

logger = logging.getLogger("mailsyncd.auth")

_NEGATIVE_TTL = 900.0
_FAST_TTL = 60.0        # in-memory positive cache; the argon2 verifier covers the rest of verifier_ttl
_REMEMBER_EVERY = 3600.0  # write a known network's last_ok at most this often
_ADDRESS = re.compile(r"[^\s\x00-\x1f\x7f\"\\]{1,200}@[^\s\x00-\x1f\x7f\"\\@]{1,253}")


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    address: str
    reason: str                 # for the log, never a secret
    unavailable: bool = False   # a temporary failure: say so instead of AUTHENTICATIONFAILED
    checked_at_source: bool = False
    hint: str | None = None     # quirks.APP_PASSWORD: the source's own refusal asked for the app password
    domain: object = None       # the Domain it was decided for (from the login's config snapshot)
    free: bool = False          # the password was not really tried: the token goes back
    throttled: str | None = None  # the empty budget, when refused for that (auth/throttle.py names)


class Gate:
    def __init__(self, reactor, pool, config_ref, store, vault, on_login=None, cut_over=None,
                 source_slots=None, wall=time.time, state_pool=None):
        self.reactor = reactor
        self.state_pool = state_pool or pool  # the throttle's store transactions: short, never behind a source login
        self.source_slots = source_slots      # the per-source-host connection budget (Scheduler), or None
        self.wall = wall                      # wall clock, for the known networks kept in the store
        self.cut_over = cut_over or (lambda domain: False)   # (domain) -> the domain's cutover has run
        self.pool = pool
        self.config_ref = config_ref          # () -> Config, so a reload is seen by the next login
        self.store = store
        self.vault = vault
        self.on_login = on_login              # (address, domain, first: bool) after a source-verified login
        # in the store: every node on the same database spends from the same buckets
        self.throttle = Throttle(limits_for(config_ref().frontdoor), clock=reactor.seconds, state=store)
        self._key = os.urandom(32)            # in memory only: keys the negative cache
        self._recent_failures: dict[bytes, float] = {}
        self._app_password_failures: dict[bytes, float] = {}   # of those, refused with app-password words
        self._recent_ok: dict[bytes, float] = {}
        self._recent_ok_users: dict[str, set[bytes]] = {}
        self._pending: dict[bytes, list[defer.Deferred]] = {}
        self._in_flight: dict[str, int] = {}          # client network -> password checks in progress
        self._remembered: dict[tuple[str, str], float] = {}   # (user, network) -> last written to the store
        self.counts = {"ok": 0, "failed": 0, "source_checks": 0}

    def forget_recent(self, _domain: str | None = None) -> None:
        """Drop the in-memory positive cache (at cutover, the verifier alone decides from then on)."""
        self._recent_ok.clear()
        self._recent_ok_users.clear()

    def password_rejected(self, address: str) -> defer.Deferred:
        """The source refused the stored password: no cache may vouch for the old one any more."""
        for mark in self._recent_ok_users.pop(address, ()):
            self._recent_ok.pop(mark, None)
        return self._blocking(self.vault.expire_verifier, address)

    def reconfigure(self, config) -> None:
        self.throttle.update(limits_for(config.frontdoor))

    def _mark(self, address: str, password: str) -> bytes:
        return hmac.new(self._key, address.encode() + b"\0" + password.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def _blocking(self, fn, *args, **kw) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.pool, fn, *args, **kw)

    def _state(self, fn, *args, **kw) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.state_pool, fn, *args, **kw)

    # -- entry point -----------------------------------------------------------
    def authenticate(self, ip: str, user: str, password: str, *, plan: str = "login",
                     source_address: str | None = None, config=None) -> defer.Deferred:
        """Fires with a Verdict, after the failure delay when it is not OK.  Never errbacks.

        ``plan`` says how the account enters ("login": the front door; "self_service": the web
        page).  ``source_address``: the login at the source when it differs (a renaming migration).
        ``config``: the snapshot this login is decided with (default: the current one); the caller
        uses ``Verdict.domain`` from it afterwards, so a reload in between cannot split the two.
        """
        address = user.strip().lower()
        src = source_address.strip().lower() if source_address else None
        cfg = config if config is not None else self.config_ref()
        d = defer.ensureDeferred(self._decide(ip, address, password, plan, src if src != address else None, cfg))
        d.addErrback(self._crashed, address)
        d.addCallback(self._finish, ip)
        return d

    def _crashed(self, failure, address: str) -> Verdict:
        if failure.check(DatabaseUnavailable):      # the client is told [UNAVAILABLE]: try again later
            logger.error("event=database_unavailable user=%s error=%r", field(address), failure.getErrorMessage())
            return Verdict(False, field(address), "database unavailable", unavailable=True)
        logger.error("event=auth_error user=%s error=%r", field(address), failure.getErrorMessage())
        return Verdict(False, field(address), "internal error", unavailable=True)

    def _finish(self, v: Verdict, ip: str) -> defer.Deferred | Verdict:
        if v.ok:
            self.counts["ok"] += 1        # (its failure streak ended with the token's return, in _guarded)
            logger.info("event=login_ok ip=%s user=%s how=%r", ip, v.address, v.reason)
            return v
        self.counts["failed"] += 1
        # One fixed shape, for fail2ban: "event=login_failed ip=<HOST> ..."
        logger.warning("event=login_failed ip=%s user=%s reason=%r", ip, v.address, v.reason)
        if v.unavailable and not v.throttled:
            return v       # the user is not at fault: no need to slow them down
        d = self._state(self.throttle.failed, ip)
        d.addErrback(self._streak_unknown, v)
        d.addCallback(lambda delay: task.deferLater(self.reactor, delay, lambda: v))
        return d

    def _streak_unknown(self, failure, v: Verdict) -> float:
        """The store could not count the failure (the database is down): the longest delay."""
        logger.error("event=auth_error user=%s error=%r", v.address, failure.getErrorMessage())
        return self.throttle.limits.delay_max

    async def _decide(self, ip: str, address: str, password: str, plan: str, source_address: str | None,
                      cfg) -> Verdict:
        if not _ADDRESS.fullmatch(address):
            return Verdict(False, field(address), "not an email address")
        if source_address is not None and not _ADDRESS.fullmatch(source_address):
            return Verdict(False, address, f"old address {field(source_address)} is not an email address")
        if not password or any(c in password for c in "\r\n\0"):
            return Verdict(False, address, "empty password or one with control characters")
        try:
            domain = cfg.domain_for(address)
        except UnknownDomain as e:
            return Verdict(False, address, f"unknown domain {e.domain!r}")
        except ValueError:
            return Verdict(False, address, "not an email address")
        if plan != "login" and not domain.allows(plan):
            return Verdict(False, address, f"plan {plan!r} is not enabled for {domain.name} (plans: {', '.join(domain.plans)})")
        if source_address is not None and not domain.allow_rename:
            return Verdict(False, address, f"{domain.name} does not allow a new address different from the old one")
        mark = self._mark(address, password + "\0" + (source_address or "") + "\0" + plan)
        # Concurrent logins with the same credentials share one check: no new password is tried.
        waiters = self._pending.get(mark)
        if waiters is not None:
            mine: defer.Deferred = defer.Deferred()
            waiters.append(mine)
            return await mine
        net = network_of(ip)
        if self._in_flight.get(net, 0) >= cfg.frontdoor.max_pending_per_ip:
            return Verdict(False, address, f"too many password checks in progress from {net} "
                                           f"(max_pending_per_ip {cfg.frontdoor.max_pending_per_ip}); "
                                           "no password compared", unavailable=True, throttled="pending")
        self._pending[mark] = waiters = []
        self._in_flight[net] = self._in_flight.get(net, 0) + 1
        try:
            verdict = await defer.ensureDeferred(self._guarded(ip, net, address, password, domain, mark, cfg,
                                                               plan, source_address))
        except BaseException:
            verdict = Verdict(False, address, "internal error", unavailable=True)
            raise
        finally:
            n = self._in_flight.pop(net) - 1
            if n:
                self._in_flight[net] = n
            del self._pending[mark]
            shared = replace(verdict, reason=f"shared a concurrent check: {verdict.reason}",
                             checked_at_source=False)
            for w in waiters:
                w.callback(shared)
        return verdict

    async def _guarded(self, ip, net, address, password, domain, mark, cfg, plan, source_address) -> Verdict:
        """Take a token, compare the password (caches, verifier, source), give the token back if right."""
        known = await self._blocking(self.store.is_known_network, address, net, now=self.wall())
        empty = await self._state(self.throttle.take, net, address, known=known)
        if empty:
            return Verdict(False, address, f"throttled: budget={empty} empty for {net}; no password compared",
                           unavailable=True, throttled=empty)
        verdict = None
        try:
            verdict = await defer.ensureDeferred(self._compare(ip, address, password, domain, mark, cfg, plan,
                                                               source_address))
        finally:
            if verdict is None or verdict.ok or verdict.free:
                await self._state(self.throttle.give_back, net, address, known=known,
                                  ip=ip if verdict is not None and verdict.ok else None)
        if verdict.ok:
            verdict = replace(verdict, domain=domain)
            key = (address, net)
            if self._remembered.get(key, -_REMEMBER_EVERY) + _REMEMBER_EVERY <= self.reactor.seconds():
                if len(self._remembered) > 10000:
                    self._remembered.clear()
                self._remembered[key] = self.reactor.seconds()
                await self._blocking(self.store.remember_network, address, net, now=self.wall())
        return verdict

    async def _compare(self, ip, address, password, domain, mark, cfg, plan, source_address) -> Verdict:
        now = self.reactor.seconds()
        if self._recent_failures.get(mark, 0.0) > now:
            if self._app_password_failures.get(mark, 0.0) > now:   # the source's words still apply
                return Verdict(False, address, f"same wrong password as a recent attempt (source not asked); "
                                               f"hint: {APP_PASSWORD}", hint=APP_PASSWORD, free=True)
            return Verdict(False, address, "same wrong password as a recent attempt (source not asked)", free=True)
        if self._recent_ok.get(mark, 0.0) > now:
            # Checked at the source moments ago: skip even the argon2 verifier (a reconnect storm).
            return Verdict(True, address, "recently verified at the source")
        verdict = await defer.ensureDeferred(self._check(ip, address, password, domain, mark, cfg, plan,
                                                         source_address))
        if verdict.ok:
            self._forget_old(self._recent_ok)
            if len(self._recent_ok_users) > 10000:
                self._recent_ok_users.clear()      # only an index: entries still expire by time
            self._recent_ok[mark] = self.reactor.seconds() + min(cfg.frontdoor.verifier_ttl, _FAST_TTL)
            self._recent_ok_users.setdefault(address, set()).add(mark)
        return verdict

    async def _check(self, ip, address, password, domain, mark, cfg, plan, source_address) -> Verdict:
        fd = cfg.frontdoor
        if self.cut_over(domain.name):
            if plan != "login":
                return Verdict(False, address, f"{domain.name} is cut over: nothing left to migrate")
            # The source is history: the verifier of the last good password decides, at any age.
            if await self._blocking(self.vault.check_verifier, address, password, max_age=None):
                return Verdict(True, address, "cut over: last good password accepted")
            return Verdict(False, address, "cut over: not the last good password (or never logged in before)")
        if source_address is not None:
            # A rename must be the admin's (CSV import): else any old account could claim any new mailbox.
            row = await self._blocking(self.store.account, address)
            if row is None or row.get("source_address") != source_address:
                return Verdict(False, address, f"no rename from {source_address} to {address} was imported "
                                               "by the administrator", free=True)
        # Starting a migration on the web page always asks the source: it is done once, and may rename.
        if plan == "login" and await self._blocking(self.vault.check_verifier, address, password,
                                                    max_age=fd.verifier_ttl):
            return Verdict(True, address, "recently verified at the source")
        slots = self.source_slots
        if slots is not None and not await slots.acquire(domain.source, fd.source_wait):
            return Verdict(False, address, f"no free connection to the source within {fd.source_wait:g}s "
                                           "(source.max_connections); source not asked",
                           unavailable=True, free=True)
        try:
            self.counts["source_checks"] += 1
            result, why = await self._blocking(self._check_source, domain, address, password, source_address)
        finally:
            if slots is not None:
                slots.release(domain.source)
        if result == source.OK:
            if plan == "login" and not domain.allows("login"):
                logger.info("event=not_migrating user=%s reason='plan login is not enabled for %s'",
                            address, domain.name)
                return Verdict(True, address, "source accepted", checked_at_source=True)
            first = await self._blocking(self._remember, address, domain.name, password, plan, source_address)
            if self.on_login is not None:
                self.on_login(address, domain, first)
            return Verdict(True, address, "source accepted", checked_at_source=True)
        if result in (source.WRONG, source.APP_PASSWORD):
            self._forget_old(self._recent_failures)
            self._recent_failures[mark] = self.reactor.seconds() + _NEGATIVE_TTL
            if result == source.APP_PASSWORD:
                self._forget_old(self._app_password_failures)
                self._app_password_failures[mark] = self._recent_failures[mark]
                return Verdict(False, address, f"wrong password at the source, which asks for an app password "
                                               f"({why}); hint: {APP_PASSWORD}", hint=APP_PASSWORD)
            return Verdict(False, address, f"wrong password or unknown user at the source ({why})")
        # The source is down or throttling us: the user is not at fault, so the token goes back.
        if fd.accept_verifier_when_source_down and await self._blocking(
                self.vault.check_verifier, address, password, max_age=None):
            return Verdict(True, address, f"source unavailable, last good password accepted ({why})")
        return Verdict(False, address, f"source unavailable: {why}", unavailable=True, free=True)

    def _check_source(self, domain, address: str, password: str, source_address: str | None) -> tuple[str, str]:
        if source_address is None:
            source_address = (self.store.account(address) or {}).get("source_address")
        return source.check(domain.source, source_address or address, password)

    def _remember(self, address: str, domain: str, password: str, plan: str, source_address: str | None) -> bool:
        # one compare-and-set in the store: of two nodes verifying the same first login, one says first
        return self.vault.record_first_login(address, password, domain, plan, source_address)

    def _forget_old(self, cache: dict[bytes, float]) -> None:
        if len(cache) > 10000:
            now = self.reactor.seconds()
            for k in [k for k, t in cache.items() if t <= now]:
                del cache[k]
