"""The JSON API (``/api/...``) and ``/metrics``: every account's progress, for the admin only.

Mounted at /api/ and /metrics on the web listener (``listen.http``) by web/app.py.  The numbers are the status document's (mailsyncd.status,
schema 1, documented in docs/status.md), so they agree with ``mailsyncctl status`` and the dashboard.

Routes (GET and HEAD only; JSON answers carry ``Cache-Control: no-store``):

* ``GET /api/status[?domain=D][&user=ADDRESS][&phase=P][&q=TEXT][&limit=N][&cursor=C]``  the status
                                                 document (``Daemon.status``): one page of accounts
                                                 (address order), the totals of the whole filter,
                                                 ``next`` for the next page; 400 for a bad parameter.
* ``GET /api/nodes``                             the nodes sharing the database: heartbeat, leases held.
* ``GET /api/accounts/ADDRESS``                  one account: its entry in the document, its folders
                                                 (the last pass's report), its skipped messages with
                                                 the reasons, and its last pass.  404 when unknown.
* ``GET /metrics``                               Prometheus text format (mailsyncd.web.metrics).

Access: ``access.Access.api`` (mailsyncd/web/access.py), the same rules and the same password throttle
as the admin dashboard: without ``admin.password_hash`` loopback clients only (403); with it, HTTP Basic
``admin:<password>`` or a valid dashboard session, else 401 (429 while the client is throttled).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote_to_bytes

from ..statusquery import Query, QueryError, parse
from .. import nodes
from ..text import json_text
from . import metrics
from .site import Reply, Shell, plain

logger = logging.getLogger("mailsyncd.web")

SKIPPED_LIMIT = 10_000         # skipped messages listed per account (skipped_total has the count)
__all__ = ["ApiResource", "MetricsResource"]


def json_reply(code: int, doc: dict, **headers: bytes) -> Reply:
    # Server strings keep their exact value; their control characters travel as \u escapes only.
    body = json_text(doc, separators=(",", ":")).encode("utf-8") + b"\n"
    return Reply(code, body, b"application/json",
                 headers={k.replace("_", "-").encode(): v for k, v in headers.items()})


def error(code: int, message: str, **headers: bytes) -> Reply:
    return json_reply(code, {"error": message, "status": code}, **headers)


# what the shell's refusals say here (site.Shell.message)
_MESSAGES = {"err_csrf": "cross-site request refused", "err_internal": "internal error (see the daemon's log)",
             "err_generic": "method not allowed", "not_found": "not found"}


class _Guarded(Shell):
    """GET/HEAD only, admin access checked first (access.Access.api); ``serve(request)`` returns a Reply."""

    csp = b"default-src 'none'; frame-ancestors 'none'"
    vary = b"Authorization, Cookie"

    def message(self, request, code: int, key: str) -> Reply:
        return error(code, _MESSAGES.get(key, key))

    async def handle(self, request) -> Reply:
        if request.method not in (b"GET", b"HEAD"):
            return self.not_allowed(request, b"GET, HEAD")
        refused = await self.access.api(request)
        if refused is not None:
            return error(refused.code, refused.message, **{k.decode(): v for k, v in refused.headers})
        return await self.serve(request)

    async def serve(self, request) -> Reply:
        raise NotImplementedError


def status_query(request) -> Query:
    """The filters and the page of a status request (statusquery.parse); QueryError names a bad one."""
    def get(name: str) -> str | None:
        values = request.args.get(name.encode())
        if not values:
            return None
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise QueryError(f"{name}: not UTF-8") from None
    return parse(get)


class ApiResource(_Guarded):
    """/api/status and /api/accounts/ADDRESS (JSON)."""

    async def serve(self, request) -> Reply:
        path = request.path
        if path == b"/api/status":
            return await self._status(request)
        if path == b"/api/nodes":
            return json_reply(200, {"nodes": await self.blocking(nodes.read_nodes, self.daemon.store, time.time())})
        if path.startswith(b"/api/accounts/"):
            raw = unquote_to_bytes(path[len(b"/api/accounts/"):])
            try:
                address = raw.decode("utf-8").strip().lower()
            except UnicodeDecodeError:
                return error(400, "the address is not UTF-8")
            if not address or "/" in address or len(address) > 320 or not plain(address):
                return error(404, "no such account")
            return await self._account(address)
        return error(404, "no such API route; see docs/status.md")

    async def _status(self, request) -> Reply:
        try:
            query = status_query(request)
        except QueryError as e:
            return error(400, str(e))
        domain = query.domain
        doc = await self.daemon.status(query=query)
        if domain is not None and domain not in self.daemon.current().domains and not doc["totals"]["accounts"]:
            if (query.phase, query.q, query.user) == (None, None, None) or not (
                    await self.daemon.status(query=Query(domain=domain, limit=0)))["totals"]["accounts"]:
                return error(404, f"no such domain: {domain}")
        return json_reply(200, doc)

    async def _account(self, address: str) -> Reply:
        doc = await self.daemon.status(user=address)
        entry = next((a for a in doc["accounts"] if a["address"] == address), None)
        if entry is None:
            return error(404, f"no such account: {address}")
        details = await self.blocking(_read_details, self.daemon.store, address)
        return json_reply(200, {"schema": doc["schema"], "generated": doc["generated"], "account": entry,
                                **details})


def _read_details(store, address: str) -> dict:
    """In the state thread: the last pass's per-folder report, the skipped messages, the last pass."""
    folders = [{"path": r.path, "target": r.target_name,
                "source_messages": r.source_count, "target_messages": r.target_count,
                "copied": r.copied, "present": r.present, "skipped": r.skipped, "bytes": r.bytes,
                "seconds": r.seconds, "error": r.error, "finished": r.finished}
               for r in store.reports(address)]
    skipped = store.skipped(address)
    last = store.last_pass(address)
    if last is not None:
        last = dict(last, ok=None if last.get("ok") is None else bool(last["ok"]))
    return {"folders": folders,
            "skipped": [{"folder": p, "uid": uid, "size": size, "reason": reason}
                        for p, uid, size, reason in skipped[:SKIPPED_LIMIT]],
            "skipped_total": len(skipped), "last_pass": last}


class MetricsResource(_Guarded):
    """/metrics (Prometheus text format)."""

    async def serve(self, request) -> Reply:
        if request.path != b"/metrics":
            return error(404, "not found")
        doc = await self.daemon.status(query=Query(limit=0))
        body = metrics.render(doc, metrics.counters_of(self.daemon), metrics.node_name(self.daemon.current()))
        return Reply(200, body, metrics.CONTENT_TYPE_LATEST.encode("ascii"))
