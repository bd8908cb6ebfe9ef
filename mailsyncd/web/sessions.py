"""Server-side web sessions, in memory, shared by the self-service page and the dashboard.

Only a SHA-256 of the cookie's token is kept, so a memory dump or a log cannot
replay it.  Sessions end after ``idle`` seconds without a request or ``max_age``
after sign-in (both asked of ``ages()`` each time, so a reload applies at once);
beyond ``limit`` sessions the least recently seen end first.  A restart signs
everybody out, which costs a password entry.
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


class Sessions:
    def __init__(self, clock: Callable[[], float], ages: Callable[[], tuple[float, float]], limit: int):
        self.clock, self.ages, self.limit = clock, ages, limit
        self._s: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._s)

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode("ascii", "replace")).digest()

    def _expired(self, s: Session, now: float) -> bool:
        idle, max_age = self.ages()
        return now - s.seen > idle or now - s.created > max_age

    def create(self, who: str) -> tuple[str, Session]:
        now = self.clock()
        for k in [k for k, s in self._s.items() if self._expired(s, now)]:
            del self._s[k]
        if len(self._s) >= self.limit:
            by_age = sorted(self._s, key=lambda k: self._s[k].seen)
            for k in by_age[:len(self._s) - self.limit + 1]:
                del self._s[k]
        token = secrets.token_urlsafe(32)
        s = Session(who, secrets.token_urlsafe(32), now, now)
        self._s[self._key(token)] = s
        return token, s

    def get(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The live session for ``token``; ``touch=False`` for polls that must not keep it alive."""
        if not token or len(token) > 128:
            return None
        key = self._key(token)
        s = self._s.get(key)
        if s is None:
            return None
        now = self.clock()
        if self._expired(s, now):
            del self._s[key]
            return None
        if touch:
            s.seen = now
        return s

    def drop(self, token: str | None) -> None:
        if token:
            self._s.pop(self._key(token), None)
