"""Server-side web sessions, in the store, for the self-service page and the dashboard.

Kept in the store's ``web_sessions`` table (store/websessions.py), so any node on the same database
accepts a session made on another (behind a load balancer), and a restart signs nobody out.  Only a
SHA-256 of the cookie's token is stored, so a copy of the database, a memory dump or a log cannot
replay it.  Each site has its own sessions (``site``): a self-service cookie never opens the
dashboard.  Sessions end after ``idle`` seconds without a request or ``max_age`` after sign-in (both
asked of ``ages()`` each time, so a reload applies at once); beyond ``limit`` sessions the least
recently seen end first.  A flash message (shown once, after a dashboard action) lives in the row
too, as the next page may be served by another node.

Every method blocks on the store: call them in the daemon's ``state`` pool (``Shell.blocking``).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Session:
    who: str                 # self-service: the address; dashboard: "admin:<fingerprint>" or "loopback"
    csrf: str                # for the forms shown while signed in
    created: float
    seen: float
    flash: tuple[str, str] | None = None     # (kind, text) shown once, after an action
    key: str = ""            # the token's SHA-256 (hex): the row's key


class Sessions:
    def __init__(self, store, site: str, clock: Callable[[], float], ages: Callable[[], tuple[float, float]],
                 limit: int):
        self.store, self.site = store, site
        self.clock, self.ages, self.limit = clock, ages, limit

    def __len__(self) -> int:
        return self.store.session_count(self.site)

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()

    def create(self, who: str) -> tuple[str, Session]:
        now = self.clock()
        token = secrets.token_urlsafe(32)
        s = Session(who, secrets.token_urlsafe(32), now, now, key=self._key(token))
        self.store.session_create(self.site, s.key, who, s.csrf, now, *self.ages(), self.limit)
        return token, s

    def get(self, token: str | None, *, touch: bool = True, take_flash: bool = False) -> Session | None:
        """The live session for ``token``; ``touch=False`` for polls that must not keep it alive;
        ``take_flash``: a page that shows the flash message, which is then gone."""
        if not token or len(token) > 128:
            return None
        row = self.store.session_get(self.site, self._key(token), self.clock(), *self.ages(), touch=touch,
                                     take_flash=take_flash)
        if row is None:
            return None
        flash = (row["flash_kind"], row["flash_text"]) if row["flash_kind"] is not None else None
        return Session(row["who"], row["csrf"], row["created"], row["seen"], flash, row["token_hash"])

    def flash(self, s: Session, kind: str, text: str) -> None:
        """A message for the session's next page, whichever node serves it."""
        self.store.session_flash(self.site, s.key, kind, text)

    def drop(self, token: str | None) -> None:
        if token:
            self.store.session_drop(self.site, self._key(token))
