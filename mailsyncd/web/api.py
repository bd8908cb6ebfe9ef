"""The JSON API (``/api/...``) and ``/metrics``: every account's progress, for the admin only.

Mounted on the self-service site (``listen.http``) through ``SelfService.extra`` by :func:`mount`,
which ``selfservice.make_site`` calls.  The numbers are the status document's (mailsyncd.status,
schema 1, documented in docs/status.md), so they agree with ``mailsyncctl status`` and the dashboard.

Routes (GET and HEAD only; JSON answers carry ``Cache-Control: no-store``):

* ``GET /api/status[?domain=D][&user=ADDRESS]``  the status document (``Daemon.status``).
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
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from twisted.internet import defer, threads
from twisted.web import resource, server

from ..text import json_text
from . import metrics
from .access import Access

logger = logging.getLogger("mailsyncd.web")

SKIPPED_LIMIT = 10_000         # skipped messages listed per account (skipped_total has the count)
__all__ = ["ApiResource", "MetricsResource", "mount"]


def mount(page, daemon) -> None:
    """Mount /api/ and /metrics on the self-service page (``page.extra``, see selfservice.make_site)."""
    access = page.access
    page.extra[b"/api/"] = ApiResource(daemon, access)
    page.extra[b"/metrics"] = MetricsResource(daemon, access)


@dataclass
class Reply:
    code: int
    body: bytes
    ctype: bytes = b"application/json"
    headers: dict[bytes, bytes] = field(default_factory=dict)


def json_reply(code: int, doc: dict, **headers: bytes) -> Reply:
    # Server strings keep their exact value; their control characters travel as \u escapes only.
    body = json_text(doc, separators=(",", ":")).encode("utf-8") + b"\n"
    return Reply(code, body, headers={k.replace("_", "-").encode(): v for k, v in headers.items()})


def error(code: int, message: str, **headers: bytes) -> Reply:
    return json_reply(code, {"error": message, "status": code}, **headers)


# ---------------------------------------------------------------------------- resources

class _Guarded(resource.Resource):
    """GET/HEAD only, admin access checked first; ``handle(request)`` returns a :class:`Reply`."""

    isLeaf = True
    methods = (b"GET", b"HEAD")

    def __init__(self, daemon, access: Access):
        super().__init__()
        self.daemon, self.access = daemon, access

    def render(self, request):
        if request.method not in self.methods:
            self._write(request, error(405, "method not allowed", Allow=b", ".join(self.methods)))
            return server.NOT_DONE_YET
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _f: gone.append(True))
        d = defer.ensureDeferred(self._serve(request))
        d.addErrback(self._crashed, request)
        d.addCallback(lambda reply: None if gone else self._write(request, reply))
        d.addErrback(lambda f: logger.error("event=web_error error=%r", f.getErrorMessage()))
        return server.NOT_DONE_YET

    async def _serve(self, request) -> Reply:
        refused = await self.access.api(request)
        if refused is not None:
            reply = error(refused.code, refused.message)
            reply.headers.update(refused.headers)
            return reply
        return await self.handle(request)

    async def handle(self, request) -> Reply:
        raise NotImplementedError

    def _crashed(self, failure, request) -> Reply:
        logger.error("event=web_error path=%r error=%r", request.path[:100], failure.getErrorMessage())
        return error(500, "internal error (see the daemon's log)")

    @staticmethod
    def _write(request, reply: Reply) -> None:
        request.setResponseCode(reply.code)
        request.setHeader(b"Content-Type", reply.ctype)
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Vary", b"Authorization, Cookie")
        for k, v in reply.headers.items():
            request.setHeader(k, v)
        request.setHeader(b"Content-Length", b"%d" % len(reply.body))
        if request.method != b"HEAD":
            request.write(reply.body)
        request.finish()

    @staticmethod
    def _arg(request, name: bytes) -> str | None:
        raw = (request.args.get(name) or [None])[0]
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8").strip().lower()
        except UnicodeDecodeError:
            return None
        return text[:320] or None

    def _blocking(self, fn, *args):
        return threads.deferToThreadPool(self.daemon.reactor, self.daemon.state_pool, fn, *args)


class ApiResource(_Guarded):
    """/api/status and /api/accounts/ADDRESS (JSON)."""

    async def handle(self, request) -> Reply:
        path = request.path
        if path == b"/api/status":
            return await self._status(request)
        if path.startswith(b"/api/accounts/"):
            raw = unquote_to_bytes(path[len(b"/api/accounts/"):])
            try:
                address = raw.decode("utf-8").strip().lower()
            except UnicodeDecodeError:
                return error(400, "the address is not UTF-8")
            if not address or "/" in address or len(address) > 320:
                return error(404, "no such account")
            return await self._account(address)
        return error(404, "no such API route; see docs/status.md")

    async def _status(self, request) -> Reply:
        domain, user = self._arg(request, b"domain"), self._arg(request, b"user")
        doc = await self.daemon.status(domain=domain, user=user)
        if domain is not None and domain not in self.daemon.current().domains and not doc["accounts"]:
            return error(404, f"no such domain: {domain}")
        return json_reply(200, doc)

    async def _account(self, address: str) -> Reply:
        doc = await self.daemon.status(user=address)
        entry = next((a for a in doc["accounts"] if a["address"] == address), None)
        if entry is None:
            return error(404, f"no such account: {address}")
        details = await self._blocking(_read_details, self.daemon.store, address)
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

    async def handle(self, request) -> Reply:
        if request.path != b"/metrics":
            return error(404, "not found")
        doc = await self.daemon.status()
        body = metrics.render(doc, metrics.counters_of(self.daemon))
        return Reply(200, body, metrics.CONTENT_TYPE_LATEST.encode("ascii"))
