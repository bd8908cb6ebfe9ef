"""The dashboard's frame and the pieces its pages share; the overview page (GET /admin).

Functions of the request, the signed-in context and the status document (mailsyncd.status, schema 1)
that return HTML; the routes, sessions and actions are web/admin.py's.  Elements that admin.js updates
from /admin/status.json carry ``data-*`` attributes (:func:`live_attrs`).  No inline script or style: the CSP
allows neither.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from ... import cutover
from .. import i18n
from ..i18n import w
from ..sessions import Session
from ..site import AUTO, esc
from .format import account_url, duration, fact, num, rate, sparkline, when

POLL_SECONDS = 5               # the pages' script asks /admin/status.json this often
NOSCRIPT_REFRESH = 30          # without JavaScript, the overview and account pages reload this often
FAILED_SHOWN = 10
POSTPONE_HOURS = (1, 6, 24, 72, 168)
PHASES = ("failed", "syncing", "waiting", "tailing", "cutover")


@dataclass
class Ctx:
    """What a page knows about the request."""
    lang: str
    session: Session
    password: bool          # signed in with the password (so: a sign-out button)


def _this_page(request, drop: bytes, add: tuple[str, str]) -> str:
    """This page's URL with the query argument ``drop`` replaced by ``add``."""
    args = [(k.decode("utf-8", "replace"), v[0].decode("utf-8", "replace"))
            for k, v in request.args.items() if k != drop and v]
    path = request.path.split(b"?", 1)[0].decode("ascii", "replace")
    return path + "?" + urlencode(args + [add])


def page(request, ctx: Ctx | None, lang: str, title: str, body: str, *, nav: str | None = None,
         status_url: str | None = None, chart: bool = False, refresh: bool = False) -> bytes:
    other = "zh" if lang == "en" else "en"
    head = ['<!DOCTYPE html>\n',
            f'<html lang="{i18n.HTML_LANG[lang]}"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="referrer" content="no-referrer">',
            f'<title>{esc(title)} · mailsyncd</title>',
            '<link rel="icon" href="/admin/static/favicon.svg" type="image/svg+xml">']
    if refresh:
        again = esc(_this_page(request, AUTO.encode(), (AUTO, "1")))  # a reload, not activity (AUTO)
        head.append(f'<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH};url={again}"></noscript>')
    if chart:
        head.append('<link rel="stylesheet" href="/admin/static/uPlot.min.css">'
                    '<script src="/admin/static/uPlot.iife.min.js" defer></script>')
    head.append('<link rel="stylesheet" href="/admin/static/admin.css">')
    if status_url:
        head.append('<script src="/admin/static/admin.js" defer></script>')
    words = {k: w(lang, k) for k in ("none", "never", "per_min", "h", "min", "s", "d", "live", "updated",
                                      "stale", "expired", "running_now")}
    words["phases"] = {p: w(lang, f"phase_{p}") for p in PHASES}
    words["stages"] = {s: w(lang, f"stage_{s}") for s in i18n.STAGE_LABELS[lang]}
    words["watch"] = {m: w(lang, f"watch_{m}") for m in i18n.WATCH_LABELS[lang]}
    body_attrs = f' data-lang="{lang}" data-words="{esc(json.dumps(words, ensure_ascii=False))}"'
    if status_url:
        body_attrs += f' data-status="{esc(status_url)}" data-poll="{POLL_SECONDS}"'
    if chart:
        body_attrs += ' data-series="/admin/series.json"'
    top = ['<header class="top"><a class="brand" href="/admin">mailsyncd</a>']
    if ctx is not None:
        top.append('<nav>')
        for key, href in (("overview", "/admin"), ("accounts", "/admin/accounts"), ("report", "/admin/report")):
            current = ' aria-current="page"' if nav == key else ""
            top.append(f'<a href="{href}"{current}>{esc(w(lang, key))}</a>')
        top.append('</nav>')
    top.append(f'<div class="tools"><a href="{esc(_this_page(request, b"lang", ("lang", other)))}" '
               f'hreflang="{i18n.HTML_LANG[other]}" lang="{i18n.HTML_LANG[other]}">{esc(w(lang, "switch"))}</a>')
    if ctx is not None and ctx.password:
        top.append('<form method="post" action="/admin/logout" class="inline">'
                   f'<input type="hidden" name="csrf" value="{esc(ctx.session.csrf)}">'
                   f'<button type="submit" class="link">{esc(w(lang, "sign_out"))}</button></form>')
    top.append('</div></header>')
    flash = ""
    if ctx is not None and ctx.session.flash:
        kind, text = ctx.session.flash
        ctx.session.flash = None
        flash = f'<p class="flash {esc(kind)}" role="status">{esc(text)}</p>'
    live = '<p class="live" id="live" hidden></p>' if status_url else ""
    doc = ("".join(head) + f"</head><body{body_attrs}>" + "".join(top) + "<main>" + flash
           + f"<h1>{esc(title)}</h1>" + body + live + "</main></body></html>\n")
    return doc.encode("utf-8")


def message(request, lang: str, key: str) -> bytes:
    body = (f'<p class="error" role="alert">{esc(w(lang, key))}</p>'
            f'<p><a href="/admin">{esc(w(lang, "overview"))}</a></p>')
    return page(request, None, lang, w(lang, "title"), body)


def forbidden(request, lang: str) -> bytes:
    body = (f'<p class="error" role="alert">{esc(w(lang, "forbidden"))}</p>'
            f'<p>{esc(w(lang, "forbidden_how"))}</p>'
            '<pre><code>mailsyncctl hash-password\n\n'
            '# mailsyncd.yaml\nadmin:\n  password_hash: "$argon2id$v=19$m=65536,t=3,p=4$…"\n\n'
            'mailsyncctl reload</code></pre>')
    return page(request, None, lang, w(lang, "forbidden_title"), body)


def login_form(request, lang: str, csrf: str, next_: str, error: str | None = None) -> bytes:
    """``next_`` must be safe already (admin.safe_back)."""
    parts = []
    if error:
        parts.append(f'<p class="error" role="alert">{esc(w(lang, error))}</p>')
    parts.append(
        '<form method="post" action="/admin/login" class="login">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        f'<input type="hidden" name="next" value="{esc(next_)}">'
        f'<label for="username">{esc(w(lang, "user"))}</label>'
        '<input type="text" id="username" name="username" value="admin" readonly autocomplete="username">'
        f'<label for="password">{esc(w(lang, "password"))}</label>'
        '<input type="password" id="password" name="password" autocomplete="current-password" required '
        'autofocus maxlength="1024">'
        f'<button type="submit">{esc(w(lang, "sign_in"))}</button></form>')
    return page(request, None, lang, w(lang, "sign_in_title"), "".join(parts))


def live_attrs(kind: str, key: str, field: str, fmt: str = "num") -> str:
    """Attributes admin.js uses to update an element from /admin/status.json."""
    return f'data-{kind}="{esc(key)}" data-f="{esc(field)}" data-fmt="{fmt}"'


def bar(kind: str, key: str, item: dict) -> str:
    total = item["source_messages"]
    if total:
        done = min(total, item["target_messages"] + item["skipped"])
    else:                   # nothing at the source: full once a pass has said so
        total, done = 1, 1 if item["percent"] >= 100 else 0
    return (f'<progress class="bar" {live_attrs(kind, key, "bar", "bar")} value="{done}" max="{total}">'
            f'{item["percent"]:.1f}%</progress>')


def stage_text(lang: str, stage: str | None) -> str:
    """Recent mail first (status ``stage``): which slice the pass copies, or nothing to show."""
    return w(lang, f"stage_{stage}") if stage in i18n.STAGE_LABELS[lang] else w(lang, "none")


def watch_text(lang: str, mode: str) -> str:
    return w(lang, f"watch_{mode}") if mode in i18n.WATCH_LABELS[lang] else mode


def latency_text(lang: str, seconds: float | None) -> str:
    """The last new-mail latency, as admin.js's "latency" format shows it."""
    return w(lang, "none") if seconds is None else f"{seconds:.1f}{'' if lang == 'zh' else ' '}{w(lang, 's')}"


def phase_badge(lang: str, a: dict) -> str:
    return (f'<span class="phase phase-{esc(a["phase"])}" {live_attrs("a", a["address"], "phase", "phase")}>'
            f'{esc(w(lang, "phase_" + a["phase"]))}</span>')


def action_form(ctx: Ctx, action: str, target: str, back: str, label: str, *,
                cls: str = "", extra: str = "") -> str:
    return ('<form method="post" action="/admin/action" class="inline">'
            f'<input type="hidden" name="csrf" value="{esc(ctx.session.csrf)}">'
            f'<input type="hidden" name="action" value="{esc(action)}">'
            f'<input type="hidden" name="target" value="{esc(target)}">'
            f'<input type="hidden" name="back" value="{esc(back)}">{extra}'
            f'<button type="submit" class="{esc(cls)}">{esc(label)}</button></form>')


def _cutover_text(lang: str, cut: dict | None) -> str:
    state = cutover.state_of(cut)
    text = w(lang, f"cut_{state}", at=when((cut or {}).get("at"), lang)) if state in cutover.STATES else state
    return text + (f" ({cut['note']})" if cut and cut.get("note") else "")


def _cutover_forms(ctx: Ctx, dom: dict) -> str:
    lang, name = ctx.lang, dom["name"]
    state = cutover.state_of(dom.get("cutover"))
    offered = cutover.admin_events(state)
    out = []
    if cutover.SCHEDULE in offered:
        opts = "".join(f'<option value="{h}">{esc(w(lang, f"hours_{h}"))}</option>' for h in POSTPONE_HOURS)
        label = w(lang, "postpone") if state == cutover.SCHEDULED else w(lang, "schedule_in")
        fid = "at-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        extra = (f'<select name="hours" aria-label="{esc(label)}">{opts}</select>'
                 f'<label for="{fid}" class="small">{esc(w(lang, "or_at"))}</label>'
                 f'<input type="text" id="{fid}" name="at" inputmode="text" maxlength="40" '
                 'placeholder="2026-12-31T18:00+08:00" autocomplete="off" spellcheck="false">')
        out.append('<form method="post" action="/admin/action" class="cutform">'
                   f'<input type="hidden" name="csrf" value="{esc(ctx.session.csrf)}">'
                   '<input type="hidden" name="action" value="postpone">'
                   f'<input type="hidden" name="target" value="{esc(name)}">'
                   '<input type="hidden" name="back" value="/admin">'
                   f'<span class="small">{esc(label)}</span> {extra}'
                   f'<button type="submit" class="secondary">{esc(w(lang, "apply"))}</button></form>')
        cid = "confirm-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        out.append('<form method="post" action="/admin/action" class="cutform">'
                   f'<input type="hidden" name="csrf" value="{esc(ctx.session.csrf)}">'
                   '<input type="hidden" name="action" value="cutover_now">'
                   f'<input type="hidden" name="target" value="{esc(name)}">'
                   '<input type="hidden" name="back" value="/admin">'
                   f'<label class="check"><input type="checkbox" id="{cid}" name="confirm" value="yes" required> '
                   f'{esc(w(lang, "cutover_confirm"))}</label>'
                   f'<button type="submit" class="danger">{esc(w(lang, "cutover_now"))}</button></form>')
    if cutover.CANCEL in offered:
        out.append(action_form(ctx, "cancel_cutover", name, "/admin", w(lang, "cancel_cutover"),
                                     cls="secondary"))
    return "".join(out)


def reload_banner(lang: str, daemon: dict | None, now: float | None = None) -> str:
    """The failed reload, first on the overview: the daemon's words, and which config it still runs."""
    if not daemon or not daemon.get("reload_error"):
        return ""
    now = time.time() if now is None else now
    facts = (fact(w(lang, "uptime"), esc(duration(now - daemon["started"], lang)))
             + fact(w(lang, "generation"), esc(str(daemon["generation"])))
             + fact(w(lang, "config_path"), f'<code>{esc(daemon.get("config_path") or "")}</code>'))
    return ('<section class="banner bad" id="reload-failed" role="alert">'
            f'<h2>{esc(w(lang, "reload_failed"))}</h2>'
            f'<pre class="reload-error">{esc(daemon["reload_error"])}</pre>'
            f'<p>{esc(w(lang, "reload_failed_how", generation=daemon["generation"]))}</p>'
            f'<dl class="facts">{facts}</dl></section>')


NODE_LEASES_SHOWN = 5


def _nodes(lang: str, cluster: list[dict]) -> str:
    """The nodes sharing the database (nodes.nodes_view): shown once there is more than one."""
    if len(cluster) < 2:
        return ""
    rows = []
    for n in cluster:
        shown = ", ".join(n["leases"][:NODE_LEASES_SHOWN])
        more = len(n["leases"]) - NODE_LEASES_SHOWN
        syncing = f'{len(n["leases"]):,}' + (f": {shown}" if shown else "") + (f" (+{more:,})" if more > 0 else "")
        age = w(lang, "seconds_ago", n=f'{n["heartbeat_age"]:.0f}')
        rows.append(f'<tr data-node="{esc(n["name"])}"><td>{esc(n["name"])}</td><td>{esc(n["host"])}</td>'
                    f'<td>{esc(age)}</td>'
                    f'<td>{esc(syncing)}</td></tr>')
    head = "".join(f"<th>{esc(w(lang, k))}</th>" for k in ("node_name", "node_host", "node_heartbeat", "node_leases"))
    return (f'<h2>{esc(w(lang, "nodes"))} ({len(cluster)})</h2><table class="nodes"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def overview(request, ctx: Ctx, doc: dict, series: dict, cluster: list[dict] = ()) -> bytes:
    """GET /admin: a failed reload; per domain, its numbers, phases, throughput and cutover; the nodes
    (several on one database: their heartbeat and whom each syncs); then the failed accounts."""
    lang = ctx.lang
    out = [reload_banner(lang, doc.get("daemon"))]
    if not doc["domains"]:
        out.append(f'<p class="muted">{esc(w(lang, "no_domains"))}</p>')
    out.append('<div class="cards">')
    for dom in doc["domains"]:
        name = dom["name"]
        live = functools.partial(live_attrs, "d", name)
        total, done = dom["source_messages"], dom["target_messages"]
        out.append(f'<section class="card" data-domain-card="{esc(name)}"><h2>{esc(name)}</h2>')
        out.append(f'<p class="big"><span {live("percent", "pct")}>{dom["percent"]:.1f}%</span></p>')
        out.append(bar("d", name, dom))
        out.append('<p class="counts">' + esc(w(lang, "on_target", done="{done}", total="{total}"))
                   .replace("{done}", f'<b {live("target_messages")}>{num(done)}</b>')
                   .replace("{total}", f'<b {live("source_messages")}>{num(total)}</b>') + '</p>')
        out.append('<ul class="phases">')
        for p in PHASES:
            n = dom["phases"].get(p, 0)
            href = "/admin/accounts?" + urlencode({"phase": p})
            out.append(f'<li class="phase-{p}{"" if n else " zero"}"><a href="{esc(href)}">'
                       f'{esc(w(lang, "phase_" + p))}: <b {live("phases." + p)}>{n:,}</b></a></li>')
        out.append('</ul><dl class="facts">')
        out.append(fact(w(lang, "skipped"), num(dom["skipped"]), live("skipped")))
        out.append(fact(w(lang, "behind"), num(dom["behind"]), live("behind")))
        out.append(fact(w(lang, "rate"), esc(rate(dom["rate"], lang)), live("rate", "rate")))
        out.append(fact(w(lang, "eta"), esc(duration(dom["eta_seconds"], lang)), live("eta_seconds", "eta")))
        out.append(fact(w(lang, "cutover"), esc(_cutover_text(lang, dom.get("cutover")))))
        out.append('</dl>')
        rates = series["domains"].get(name, {}).get("rate", [])
        spark = sparkline(rates) or f'<p class="muted small">{esc(w(lang, "collecting"))}</p>'
        out.append(f'<h3>{esc(w(lang, "throughput"))}</h3>'
                   f'<div class="chart" data-domain="{esc(name)}" data-label="{esc(w(lang, "throughput"))}">'
                   f'{spark}</div>')
        forms = _cutover_forms(ctx, dom)
        if forms:
            out.append(f'<details class="cutover"><summary>{esc(w(lang, "cutover"))}</summary>{forms}</details>')
        out.append('</section>')
    out.append('</div>')
    out.append(_nodes(lang, list(cluster)))
    failed = [a for a in doc["accounts"] if a["phase"] == "failed"]     # the first page of them
    failed_total = doc["totals"]["phases"]["failed"]
    if failed:
        out.append(f'<h2>{esc(w(lang, "needs_attention"))} ({failed_total:,})</h2><ul class="failed">')
        for a in failed[:FAILED_SHOWN]:
            out.append(f'<li><a href="{esc(account_url(a["address"]))}">{esc(a["address"])}</a> '
                       f'<span class="reason">{esc(a["reason"] or "")}</span> '
                       + action_form(ctx, "retry", a["address"], "/admin", w(lang, "retry"), cls="small")
                       + '</li>')
        out.append('</ul>')
        if failed_total > len(failed):
            out.append(f'<p><a href="/admin/accounts?phase=failed">{esc(w(lang, "more_failed"))}</a></p>')
    body = "".join(out)
    return page(request, ctx, lang, w(lang, "overview"), body, nav="overview",
                status_url="/admin/status.json?accounts=none", chart=True, refresh=True)
