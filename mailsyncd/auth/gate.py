"""Who may log in: the front door's password check, on the reactor side.

Order of checks, cheapest and least harmful first:
1. the address must belong to a configured domain;
2. a (user, password) pair that just failed fails again without asking anyone
   (a phone retrying a stale password must not lock its owner out);
3. a password verified at the source within ``verifier_ttl`` matches the
   slow-hash verifier, so a client opening five connections costs one check;
4. the throttle must grant a token, then the source decides.

Every answer that is not OK waits out the throttle's failure delay, and every
refusal looks the same to the client.  Blocking work (argon2, SQLite, the
source login) runs in the ``auth`` thread pool so a slow source never delays
another user.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass, replace

from twisted.internet import defer, task, threads

from ..config import UnknownDomain
from ..quirks import APP_PASSWORD
from ..text import field
from . import source
from .throttle import Limits, Throttle

logger = logging.getLogger("mailsyncd.auth")

_NEGATIVE_TTL = 900.0
_FAST_TTL = 60.0        # in-memory positive cache; the argon2 verifier covers the rest of verifier_ttl
_ADDRESS = re.compile(r"[^\s\x00-\x1f\x7f\"\\]{1,200}@[^\s\x00-\x1f\x7f\"\\@]{1,253}")


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    address: str
    reason: str                 # for the log, never a secret
    unavailable: bool = False   # a temporary failure: say so instead of AUTHENTICATIONFAILED
    checked_at_source: bool = False
    hint: str | None = None     # quirks.APP_PASSWORD: the source's own refusal asked for the app password


class Gate:
    def __init__(self, reactor, pool, config_ref, store, vault, on_login=None, cut_over=None):
        self.reactor = reactor
        self.cut_over = cut_over or (lambda domain: False)   # (domain) -> the domain's cutover has run
        self.pool = pool
        self.config_ref = config_ref          # () -> Config, so a reload is seen by the next login
        self.store = store
        self.vault = vault
        self.on_login = on_login              # (address, domain, first: bool) after a source-verified login
        self.throttle = Throttle(_limits(config_ref().frontdoor), clock=reactor.seconds)
        self._key = os.urandom(32)            # in memory only: keys the negative cache
        self._recent_failures: dict[bytes, float] = {}
        self._app_password_failures: dict[bytes, float] = {}   # of those, refused with app-password words
        self._recent_ok: dict[bytes, float] = {}
        self._recent_ok_users: dict[str, set[bytes]] = {}
        self._pending: dict[bytes, list[defer.Deferred]] = {}
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
        self.throttle.update(_limits(config.frontdoor))

    def _mark(self, address: str, password: str) -> bytes:
        return hmac.new(self._key, address.encode() + b"\0" + password.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def _blocking(self, fn, *args, **kw) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.pool, fn, *args, **kw)

    # -- entry point -----------------------------------------------------------
    def authenticate(self, ip: str, user: str, password: str, *, plan: str = "login",
                     source_address: str | None = None) -> defer.Deferred:
        """Fires with a Verdict, after the failure delay when it is not OK.  Never errbacks.

        ``plan`` says how the account enters ("login": the front door; "self_service": the web
        page).  ``source_address``: the login at the source when it differs (a renaming migration).
        """
        address = user.strip().lower()
        src = source_address.strip().lower() if source_address else None
        d = defer.ensureDeferred(self._decide(ip, address, password, plan, src if src != address else None))
        d.addErrback(self._crashed, address)
        d.addCallback(self._finish, ip)
        return d

    def _crashed(self, failure, address: str) -> Verdict:
        logger.error("event=auth_error user=%s error=%r", field(address), failure.getErrorMessage())
        return Verdict(False, field(address), "internal error", unavailable=True)

    def _finish(self, v: Verdict, ip: str) -> defer.Deferred | Verdict:
        if v.ok:
            self.counts["ok"] += 1
            logger.info("event=login_ok ip=%s user=%s how=%r", ip, v.address, v.reason)
            return v
        self.counts["failed"] += 1
        # One fixed shape, for fail2ban: "event=login_failed ip=<HOST> ..."
        logger.warning("event=login_failed ip=%s user=%s reason=%r", ip, v.address, v.reason)
        if v.unavailable:
            return v
        return task.deferLater(self.reactor, self.throttle.failed(ip), lambda: v)

    async def _decide(self, ip: str, address: str, password: str, plan: str, source_address: str | None) -> Verdict:
        cfg = self.config_ref()
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
        now = self.reactor.seconds()
        if self._recent_failures.get(mark, 0.0) > now:
            if self._app_password_failures.get(mark, 0.0) > now:   # the source's words still apply
                return Verdict(False, address, f"same wrong password as a recent attempt (source not asked); "
                                               f"hint: {APP_PASSWORD}", hint=APP_PASSWORD)
            return Verdict(False, address, "same wrong password as a recent attempt (source not asked)")
        if self._recent_ok.get(mark, 0.0) > now:
            # Checked at the source moments ago: skip even the argon2 verifier (a reconnect storm).
            return Verdict(True, address, "recently verified at the source")
        # Concurrent logins with the same credentials share one check.
        waiters = self._pending.get(mark)
        if waiters is not None:
            mine: defer.Deferred = defer.Deferred()
            waiters.append(mine)
            return await mine
        self._pending[mark] = waiters = []
        try:
            verdict = await defer.ensureDeferred(self._check(ip, address, password, domain, mark, cfg, plan,
                                                             source_address))
        except BaseException:
            verdict = Verdict(False, address, "internal error", unavailable=True)
            raise
        finally:
            del self._pending[mark]
            shared = replace(verdict, reason=f"shared a concurrent check: {verdict.reason}",
                             checked_at_source=False)
            for w in waiters:
                w.callback(shared)
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
            return await self._after_cutover(ip, address, password)
        if source_address is not None:
            # A rename must be the admin's (CSV import): else any old account could claim any new mailbox.
            row = await self._blocking(self.store.account, address)
            if row is None or row.get("source_address") != source_address:
                return Verdict(False, address, f"no rename from {source_address} to {address} was imported "
                                               "by the administrator")
        # Starting a migration on the web page always asks the source: it is done once, and may rename.
        if plan == "login" and await self._blocking(self.vault.check_verifier, address, password,
                                                    max_age=fd.verifier_ttl):
            return Verdict(True, address, "recently verified at the source")
        refused = self.throttle.may_ask_source(ip, address)
        if refused:
            return Verdict(False, address, f"throttled ({refused} limit); source not asked")
        self.counts["source_checks"] += 1
        result, why = await self._blocking(self._check_source, domain, address, password, source_address)
        if result == source.OK:
            self.throttle.succeeded(ip, address)
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
        # The source is down or throttling us: the user is not at fault, so give the token back.
        self.throttle.succeeded(ip, address)
        if fd.accept_verifier_when_source_down and await self._blocking(
                self.vault.check_verifier, address, password, max_age=None):
            return Verdict(True, address, f"source unavailable, last good password accepted ({why})")
        return Verdict(False, address, f"source unavailable: {why}", unavailable=True)

    async def _after_cutover(self, ip: str, address: str, password: str) -> Verdict:
        # The source is history: the verifier of the last good password decides, at any age.
        refused = self.throttle.may_ask_source(ip, address)   # bounds the argon2 work a guesser causes
        if refused:
            return Verdict(False, address, f"throttled ({refused} limit) after cutover")
        if await self._blocking(self.vault.check_verifier, address, password, max_age=None):
            self.throttle.succeeded(ip, address)
            return Verdict(True, address, "cut over: last good password accepted")
        return Verdict(False, address, "cut over: not the last good password (or never logged in before)")

    def _check_source(self, domain, address: str, password: str, source_address: str | None) -> tuple[str, str]:
        if source_address is None:
            source_address = (self.store.account(address) or {}).get("source_address")
        return source.check(domain.source, source_address or address, password)

    def _remember(self, address: str, domain: str, password: str, plan: str, source_address: str | None) -> bool:
        first = self.store.account(address) is None or self.vault.source_password(address) is None
        self.store.ensure_account(address, domain, plan=plan)
        if source_address is not None:
            self.store.set_source_address(address, source_address)
        self.vault.remember_login(address, password)
        return first

    def _forget_old(self, cache: dict[bytes, float]) -> None:
        if len(cache) > 10000:
            now = self.reactor.seconds()
            for k in [k for k, t in cache.items() if t <= now]:
                del cache[k]


def _limits(fd) -> Limits:
    return Limits(fd.ip_burst, fd.ip_refill, fd.user_burst, fd.user_refill, fd.failure_delay, fd.failure_delay_max)
