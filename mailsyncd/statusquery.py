"""Which accounts a status view asks for: filters, a page size and an opaque cursor (pure).

Shared by ``/api/status``, ``mailsyncctl status`` and the dashboard, so that they accept the same
words and refuse bad ones with the same specific message.  The store applies the filters and the page in
its query (store/progress.py), never Python after loading every account.

Pages are keyset pages in address order: the cursor carries the last address of the previous page, so
accounts added or removed meanwhile never make a page repeat or skip another account.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace

from .status import PHASES

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_CURSOR_PREFIX = "a:"


class QueryError(ValueError):
    """A filter or page parameter that cannot be used; the message names it (for a 400 / exit 2)."""


@dataclass(frozen=True)
class Query:
    domain: str | None = None
    user: str | None = None
    phase: str | None = None        # a user-visible phase word (status.PHASES)
    q: str | None = None            # substring of the address or the source address, any case
    limit: int | None = DEFAULT_LIMIT   # None: every account (mailsyncctl status --all); 0: totals only
    after: str | None = None        # the address the previous page ended with (the decoded cursor)

    def next_page(self, last_address: str) -> Query:
        return replace(self, after=last_address)


def encode_cursor(address: str) -> str:
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + address).encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(text: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        value = ""
    if not value.startswith(_CURSOR_PREFIX) or len(value) > 330 or "/" in value:
        raise QueryError("cursor: not a cursor this server gave (use the 'next' of the previous page)")
    return value[len(_CURSOR_PREFIX):]


def like_pattern(q: str) -> str:
    """``q`` as a LIKE pattern matching it anywhere, its own % _ and \\ taken literally (ESCAPE '\\')."""
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def parse(get, *, allow_all: bool = False) -> Query:
    """A Query from named text parameters: ``get(name)`` returns the text given, or None when absent.
    Names: domain, user, phase, q, limit, cursor.  Raises QueryError naming the bad parameter."""
    def text(name: str, longest: int) -> str | None:
        value = get(name)
        if value is None:
            return None
        value = value.strip()
        if len(value) > longest:
            raise QueryError(f"{name}: longer than {longest} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7f for c in value):
            raise QueryError(f"{name}: control characters are not allowed")
        return value or None

    domain = text("domain", 255)
    user = text("user", 320)
    phase = text("phase", 20)
    if phase is not None:
        phase = phase.lower()
        if phase not in PHASES:
            raise QueryError(f"phase: {phase!r} is not one of {', '.join(PHASES)}")
    q = text("q", 200)
    limit_text = text("limit", 10)
    limit: int | None = DEFAULT_LIMIT
    if limit_text is not None:
        if limit_text == "all" and allow_all:
            limit = None
        else:
            try:
                limit = int(limit_text)
            except ValueError:
                raise QueryError(f"limit: {limit_text!r} is not a whole number") from None
            if not 1 <= limit <= MAX_LIMIT:
                raise QueryError(f"limit: {limit} is out of range (1 to {MAX_LIMIT})")
    cursor = text("cursor", 500)
    return Query(domain=domain and domain.lower(), user=user and user.lower(), phase=phase,
                 q=q and q.lower(), limit=limit, after=None if cursor is None else decode_cursor(cursor))


def read(store, query: Query, running=(), *, totals: bool = True) -> dict:
    """In the state thread: what status.build_page needs for ``query``, read by the store's own queries.
    ``running``: the addresses with a pass running now (the daemon's live view); ``totals=False``: the page
    only (``groups`` empty), for a caller walking every page of one filter."""
    running = sorted(running)
    filters = {"domain": query.domain, "user": query.user, "phase": query.phase,
               "like": None if query.q is None else like_pattern(query.q)}
    rows, next_cursor = [], None
    if query.limit != 0:
        # one more than asked: whether there is a next page, without counting the rest
        rows = store.progress_page(limit=None if query.limit is None else query.limit + 1, after=query.after,
                                   running=running, **filters)
        if query.limit is not None and len(rows) > query.limit:
            rows = rows[:query.limit]
            next_cursor = encode_cursor(rows[-1]["address"])
    return {"rows": rows, "groups": store.progress_totals(running=running, **filters) if totals else [],
            "running_domains": store.running_domains(running, **filters), "next_cursor": next_cursor}
