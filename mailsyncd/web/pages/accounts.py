"""The dashboard's account pages: the list (GET /admin/accounts) and one account (GET /admin/accounts/<address>)."""

from __future__ import annotations

import functools
from urllib.parse import urlencode

from ...statusquery import DEFAULT_LIMIT, encode_cursor
from ..i18n import w
from ..site import esc
from .dashboard import (PHASES, Ctx, action_form, bar, latency_text, live_attrs, page, phase_badge, stage_text,
                        watch_text)
from .format import account_url, duration, fact, num, rate, byte_size, table_head, when

def _link(query, **change) -> str:
    """/admin/accounts with ``query``'s filters (statusquery.Query), some changed; a new filter starts at the
    first page."""
    args = {"q": query.q, "phase": query.phase, "domain": query.domain, "cursor": None,
            "limit": None if query.limit == DEFAULT_LIMIT else query.limit, **change}
    return "/admin/accounts" + ("?" + urlencode({k: v for k, v in args.items() if v}) if any(args.values()) else "")


def accounts_page(request, ctx: Ctx, doc: dict | None, query, domains: list[str], error: str | None = None) -> bytes:
    """GET /admin/accounts: the filter form (search, status, domain), the totals of the filter by status, then
    one page of it (``doc``: Daemon.status for ``query``, address order) and the link to the next page.
    Plain links and a GET form: it works without JavaScript."""
    lang = ctx.lang
    here = request.uri.decode("ascii", "replace")
    out = ['<form method="get" action="/admin/accounts" class="search" role="search">',
           (f'<span class="field grow"><label for="q">{esc(w(lang, "search_label"))}</label>'
            f'<input type="search" id="q" name="q" value="{esc(query.q or "")}" maxlength="200" autocomplete="off" '
            'spellcheck="false" autocapitalize="none"></span>'),
           (f'<span class="field"><label for="phase">{esc(w(lang, "phase_label"))}</label>'
            f'<select id="phase" name="phase"><option value="">{esc(w(lang, "any_phase"))}</option>')]
    for p in PHASES:
        selected = " selected" if p == query.phase else ""
        out.append(f'<option value="{p}"{selected}>{esc(w(lang, "phase_" + p))}</option>')
    out.append(f'</select></span><span class="field"><label for="domain">{esc(w(lang, "domain_label"))}</label>'
               f'<select id="domain" name="domain"><option value="">{esc(w(lang, "any_domain"))}</option>')
    for d in domains:
        selected = " selected" if d == query.domain else ""
        out.append(f'<option value="{esc(d)}"{selected}>{esc(d)}</option>')
    out.append(f'</select></span><button type="submit">{esc(w(lang, "search"))}</button></form>')
    if error is not None or doc is None:
        out.append(f'<p class="error" role="alert">{esc(w(lang, "bad_filter", error=error or ""))}</p>')
        return page(request, ctx, lang, w(lang, "accounts"), "".join(out), nav="accounts")
    totals = doc["totals"]
    out.append('<ul class="phases">')
    for p in PHASES:
        n = totals["phases"].get(p, 0)
        out.append(f'<li class="phase-{p}{"" if n else " zero"}"><a href="{esc(_link(query, phase=p))}">'
                   f'{esc(w(lang, "phase_" + p))}: <b>{n:,}</b></a></li>')
    out.append('</ul>')
    shown = doc["accounts"]
    showing = w(lang, "showing", shown=num(len(shown)), total=num(totals["accounts"]))
    out.append(f'<p class="muted small">{esc(showing)} {esc(w(lang, "in_address_order"))}</p>')
    if not shown:
        out.append(f'<p class="muted">{esc(w(lang, "no_accounts"))}</p>')
    else:
        out.append('<div class="scroll"><table class="accounts"><thead><tr>'
                   f'<th>{esc(w(lang, "col_address"))}</th><th>{esc(w(lang, "col_phase"))}</th>'
                   f'<th>{esc(w(lang, "col_progress"))}</th>'
                   f'<th class="num">{esc(w(lang, "col_counts"))}</th>'
                   f'<th class="num opt">{esc(w(lang, "behind"))}</th>'
                   f'<th class="num opt">{esc(w(lang, "skipped"))}</th>'
                   f'<th class="opt">{esc(w(lang, "col_last_pass"))}</th>'
                   f'<th class="opt">{esc(w(lang, "stage"))}</th>'
                   f'<th class="opt">{esc(w(lang, "watching"))}</th>'
                   f'<th class="num opt">{esc(w(lang, "new_mail_latency"))}</th><th></th></tr></thead><tbody>')
        for a in shown:
            addr = a["address"]
            live = functools.partial(live_attrs, "a", addr)
            reason = (f'<div class="reason" {live("reason", "text")}>{esc(a["reason"])}</div>'
                      if a["phase"] == "failed" and a["reason"] else
                      f'<div class="reason" {live("reason", "text")}></div>')
            button = (action_form(ctx, "retry", addr, here, w(lang, "retry"), cls="small")
                      if a["phase"] == "failed" else
                      action_form(ctx, "sync_now", addr, here, w(lang, "sync_now"), cls="small secondary")
                      if a["phase"] != "cutover" else "")
            out.append(f'<tr data-row="{esc(addr)}">'
                       f'<td class="addr"><a href="{esc(account_url(addr))}">{esc(addr)}</a></td>'
                       f'<td>{phase_badge(lang, a)}{reason}</td>'
                       f'<td class="prog">{bar("a", addr, a)} '
                       f'<span {live("percent", "pct")}>{a["percent"]:.1f}%</span></td>'
                       f'<td class="num"><span {live("target_messages")}>{num(a["target_messages"])}</span> / '
                       f'<span {live("source_messages")}>{num(a["source_messages"])}</span></td>'
                       f'<td class="num opt" {live("behind")}>{num(a["behind"])}</td>'
                       f'<td class="num opt" {live("skipped")}>{num(a["skipped"])}</td>'
                       f'<td class="opt" {live("last_pass", "when")}>{esc(when(a["last_pass"], lang))}</td>'
                       f'<td class="opt" {live("stage", "stage")}>{esc(stage_text(lang, a["stage"]))}</td>'
                       f'<td class="opt" {live("watching", "watch")}>{esc(watch_text(lang, a["watching"]))}</td>'
                       f'<td class="num opt" {live("new_mail_latency", "latency")}>'
                       f'{esc(latency_text(lang, a["new_mail_latency"]))}</td>'
                       f'<td>{button}</td></tr>')
        out.append('</tbody></table></div>')
    pager = []
    if query.after is not None:
        pager.append(f'<a href="{esc(_link(query))}" rel="first">{esc(w(lang, "first_page"))}</a>')
    if doc.get("next"):
        pager.append(f'<a href="{esc(_link(query, cursor=doc["next"]))}" rel="next">'
                     f'{esc(w(lang, "next_page"))} →</a>')
    if pager:
        out.append('<p class="pager">' + " · ".join(pager) + '</p>')
    # the page's script polls the numbers of the accounts on this page, not of every account
    status = _link(query, cursor=query.after and encode_cursor(query.after)).replace("/admin/accounts",
                                                                                      "/admin/status.json", 1)
    return page(request, ctx, lang, w(lang, "accounts"), "".join(out), nav="accounts", status_url=status)


def account_page(request, ctx: Ctx, a: dict, data: dict) -> bytes:
    """GET /admin/accounts/<address>: ``a`` is its status entry, ``data`` what admin.read_account found."""
    lang, address = ctx.lang, a["address"]
    live = functools.partial(live_attrs, "a", address)
    back = account_url(address)
    out = ['<div class="actions">']
    if a["phase"] != "cutover":
        out.append(action_form(ctx, "retry" if a["phase"] == "failed" else "sync_now", address, back,
                                     w(lang, "retry" if a["phase"] == "failed" else "sync_now")))
    out.append('</div>')
    out.append(f'<p class="big"><span {live("percent", "pct")}>{a["percent"]:.1f}%</span></p>')
    out.append(bar("a", address, a))
    out.append('<p class="counts">' + esc(w(lang, "on_target", done="{done}", total="{total}"))
               .replace("{done}", f'<b id="target-count" {live("target_messages")}>'
                                 f'{num(a["target_messages"])}</b>')
               .replace("{total}", f'<b id="source-count" {live("source_messages")}>'
                                 f'{num(a["source_messages"])}</b>')
               + '</p>')
    out.append('<dl class="facts">')
    none = w(lang, "none")
    out.append(fact(w(lang, "col_phase"), phase_badge(lang, a)))
    out.append(fact(w(lang, "reason"), esc(a["reason"] or none), live("reason", "reason")))
    if a["source_address"] != address:
        out.append(fact(w(lang, "copied_from"), esc(a["source_address"])))
    out.append(fact(w(lang, "plan"), esc(a["plan"] or none)))
    out.append(fact(w(lang, "skipped"), num(a["skipped"]), live("skipped")))
    out.append(fact(w(lang, "behind"), num(a["behind"]), live("behind")))
    out.append(fact(w(lang, "rate"), esc(rate(a["rate"], lang)), live("rate", "rate")))
    out.append(fact(w(lang, "eta"), esc(duration(a["eta_seconds"], lang)), live("eta_seconds", "eta")))
    out.append(fact(w(lang, "current_folders"), esc(", ".join(a["current_folders"]) or none),
                     live("current_folders", "list")))
    out.append(fact(w(lang, "last_pass"), esc(when(a["last_pass"], lang)), live("last_pass", "when")))
    next_text = when(a["next_pass"], lang) if a["next_pass"] else w(lang, "running_now") if a["running"] else none
    out.append(fact(w(lang, "next_pass"), esc(next_text), live("next_pass", "next")))
    out.append(fact(w(lang, "stage"), esc(stage_text(lang, a["stage"])), live("stage", "stage")))
    out.append(fact(w(lang, "watching"), esc(watch_text(lang, a["watching"])), live("watching", "watch")))
    out.append(fact(w(lang, "new_mail_latency"), esc(latency_text(lang, a["new_mail_latency"])),
                    live("new_mail_latency", "latency")))
    out.append('</dl>')

    # folders (the last pass's report)
    rows = [_row(("path", r.path if r.target_name in (r.path, None) else f"{r.path} → {r.target_name}"),
                 ("num", num(r.source_count)), ("num", num(r.target_count)), ("num opt", num(r.copied)),
                 ("num", num(r.skipped)), ("num opt", byte_size(r.bytes)), ("opt", when(r.finished, lang)),
                 ("reason", r.error or ""))
            for r in data["reports"]]
    out.append(_section(lang, "folders", "no_folders", rows, ("col_folder", ""), ("col_old", "num"),
                        ("col_new", "num"), ("col_copied", "num opt"), ("skipped", "num"),
                        ("col_size", "num opt"), ("col_when", "opt"), ("col_error", "")))

    # skipped messages
    rows = [_row(("path", path), ("num opt", uid), ("num", byte_size(size)), ("reason", reason))
            for path, uid, size, reason in data["skipped"]]
    out.append(_section(lang, "skipped_title", "no_skipped", rows, ("col_folder", ""), ("col_uid", "num opt"),
                        ("col_size", "num"), ("col_reason", "")))
    if data["skipped_total"] > len(data["skipped"]):
        more = w(lang, "skipped_more", shown=num(len(data["skipped"])), total=num(data["skipped_total"]))
        out.append(f'<p class="muted small">{esc(more)}</p>')

    # recent passes
    rows = []
    for p in data["passes"]:
        result = ("pass_running" if not p.get("finished") else "pass_ok" if p.get("ok") else "pass_failed")
        secs = (p["finished"] - p["started"]) if p.get("finished") and p.get("started") else None
        rows.append(_row(("", when(p.get("started"), lang)), (result, w(lang, result)), ("num", num(p.get("copied"))),
                         ("num opt", num(p.get("skipped"))), ("num opt", byte_size(p.get("bytes"))),
                         ("num opt", duration(secs, lang) if secs is not None else ""),
                         ("reason", p.get("error") or "")))
    out.append(_section(lang, "passes", "no_passes", rows, ("col_when", ""), ("col_result", ""),
                        ("col_copied", "num"), ("skipped", "num opt"), ("col_size", "num opt"),
                        ("col_seconds", "num opt"), ("col_error", "")))

    # errors, all in one place
    errors = []
    if data["account"].get("last_error"):
        errors.append(data["account"]["last_error"])
    errors += [f"{r.path}: {r.error}" for r in data["reports"] if r.error]
    out.append(f'<h2>{esc(w(lang, "errors"))}</h2>')
    if errors:
        out.append('<ul class="errors">' + "".join(f'<li class="reason">{esc(e)}</li>' for e in errors) + '</ul>')
    else:
        out.append(f'<p class="muted">{esc(w(lang, "no_errors"))}</p>')
    title = w(lang, "account_title", address=address)
    return page(request, ctx, lang, title, "".join(out), nav="accounts",
                status_url="/admin/status.json?" + urlencode({"user": address}), refresh=True)


def _row(*cells: tuple[str, object]) -> str:
    """A table row of (class, text) cells; the text is escaped here."""
    return "<tr>" + "".join(f'<td class="{cls}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>"
                            for cls, text in cells) + "</tr>"


def _section(lang: str, title: str, empty: str, rows: list[str], *cols: tuple[str, str]) -> str:
    """A heading, then a table of ``rows`` under ``cols`` (see format.table_head), or the ``empty`` words."""
    head = f'<h2>{esc(w(lang, title))}</h2>'
    if not rows:
        return head + f'<p class="muted">{esc(w(lang, empty))}</p>'
    return head + table_head(lang, *cols) + "".join(rows) + '</tbody></table></div>'
