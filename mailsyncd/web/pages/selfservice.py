"""The self-service page's HTML: its frame, the form (GET /) and the progress page (GET /progress).

Plain HTML, no JavaScript: the progress page reloads itself (``?auto=1``, which does not keep the
session alive).  Every text goes through :func:`esc`; the words are i18n.MESSAGES.
"""

from __future__ import annotations

import time

from ...status import phase_of, size_text, stage_of
from .. import i18n
from ..i18n import t
from ..site import AUTO, esc

REFRESH_SECONDS = 5


def page(lang: str, title: str, body: str, *, switch_to: str, refresh: bool = False) -> bytes:
    other = "zh" if lang == "en" else "en"
    head_refresh = (f'<meta http-equiv="refresh" content="{REFRESH_SECONDS};url=/progress?{AUTO}=1">'
                    if refresh else "")
    # the one script, only where there are times to show in the viewer's zone
    script = '<script src="/static/localtime.js" defer></script>' if "<time " in body else ""
    doc = (
        "<!DOCTYPE html>\n"
        f'<html lang="{i18n.HTML_LANG[lang]}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"{head_refresh}<title>{esc(title)}</title>"
        f'<link rel="stylesheet" href="/static/style.css">{script}</head><body><main>'
        f'<header><h1>{esc(title)}</h1>'
        f'<a href="{esc(switch_to)}?lang={other}" hreflang="{i18n.HTML_LANG[other]}" '
        f'lang="{i18n.HTML_LANG[other]}">{esc(t(lang, "switch"))}</a></header>'
        f"{body}</main></body></html>\n")
    return doc.encode("utf-8")

def message(lang: str, key: str) -> bytes:
    body = (f'<p class="error" role="alert">{esc(t(lang, key))}</p>'
            f'<p><a href="/">{esc(t(lang, "back"))}</a></p>')
    return page(lang, t(lang, "title"), body, switch_to="/")

def form_page(lang: str, csrf: str, *, rename: bool, error: str | None = None, address: str = "",
              new_address: str = "", error_text: str | None = None) -> bytes:
    """GET /: the form; ``rename``: some domain lets the employee choose a new address."""
    parts = [f'<p>{esc(t(lang, "intro"))}</p>']
    if error:
        parts.append(f'<p class="error" role="alert">{esc(error_text or t(lang, error))}</p>')
    parts.append(
        '<form method="post" action="/start" autocomplete="on">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        f'<input type="hidden" name="lang" value="{esc(lang)}">'
        f'<label for="address">{esc(t(lang, "old_address"))}</label>'
        f'<input type="text" inputmode="email" id="address" name="address" value="{esc(address)}" '
        'autocomplete="username" autocapitalize="none" spellcheck="false" required maxlength="254">'
        f'<label for="password">{esc(t(lang, "old_password"))}</label>'
        '<input type="password" id="password" name="password" autocomplete="current-password" '
        'required maxlength="1024">')
    if rename:
        parts.append(
            f'<label for="new_address">{esc(t(lang, "new_address"))}</label>'
            f'<input type="text" inputmode="email" id="new_address" name="new_address" '
            f'value="{esc(new_address)}" autocomplete="off" autocapitalize="none" spellcheck="false" '
            f'maxlength="254" aria-describedby="new_address_note">'
            f'<p class="note" id="new_address_note">{esc(t(lang, "new_address_note"))}</p>')
    parts.append(f'<button type="submit">{esc(t(lang, "submit"))}</button></form>'
                 f'<p class="note">{esc(t(lang, "privacy"))}</p>')
    return page(lang, t(lang, "title"), "".join(parts), switch_to="/")


def _current_folders(live) -> set[str]:
    """The folders a running pass works on (a set the sync threads change under their lock)."""
    if live is None:
        return set()
    lock = getattr(live, "_lock", None)
    if lock is None:
        return set(live.current)
    with lock:
        return set(live.current)


def _size(n: int | None) -> str:
    return size_text(n)


def _when(ts: float) -> str:
    """HTML: the time in UTC, which /static/localtime.js turns into the viewer's own zone."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return f'<time datetime="{iso}" data-local>{esc(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)))}</time>'


def progress(lang: str, address: str, data: dict, live, csrf: str, watch: dict | None = None) -> str:
    """``live``: the running pass's sync.Progress, if any; ``watch``: the daemon's watch of the account
    (Watches.view()), if any."""
    acct = data["account"] or {}
    reports = data["reports"]
    mapped, _nbytes, skipped_n = data["counts"]
    phase = phase_of({**acct, "has_password": True}, live is not None)   # signed in: the password is stored
    out = ['<dl>',
           f'<dt>{esc(t(lang, "mailbox"))}</dt><dd>{esc(address)}</dd>']
    if acct.get("source_address"):
        out.append(f'<dt>{esc(t(lang, "copied_from"))}</dt><dd>{esc(acct["source_address"])}</dd>')
    out.append(f'<dt>{esc(t(lang, "status"))}</dt><dd class="phase-{esc(phase)}">{esc(t(lang, "phase_" + phase))}</dd>')
    last = data["last_pass"]
    last_html = _when(last["finished"]) if last and last.get("finished") else esc(t(lang, "never"))
    out.append(f'<dt>{esc(t(lang, "last_pass"))}</dt><dd>{last_html}</dd>')
    stage = stage_of(phase, getattr(live, "stage", None), live is not None)
    if stage in ("recent", "rest", "done"):
        out.append(f'<dt>{esc(t(lang, "newest_first"))}</dt><dd id="stage">{esc(t(lang, "stage_" + stage))}</dd>')
    mode = (watch or {}).get("watching") or "off"
    out.append(f'<dt>{esc(t(lang, "new_mail"))}</dt><dd id="watching">{esc(t(lang, "watch_" + mode))}</dd>')
    latency = (watch or {}).get("new_mail_latency")
    if latency is not None:
        out.append(f'<dt>{esc(t(lang, "new_mail_latency"))}</dt>'
                   f'<dd id="new-mail-latency">{esc(t(lang, "seconds", n=f"{latency:.1f}"))}</dd>')
    out.append('</dl>')

    # the overall bar: the running pass when there is one, else what the store knows
    if live is not None and live.total:
        done, total = min(live.done, live.total), live.total
        label = t(lang, "overall_pass", done=f"{done:,}", total=f"{total:,}", size=size_text(live.bytes))
    else:
        total = sum(r.source_count or 0 for r in reports) or \
            sum(f.messages or 0 for f in data["folders"].values())
        done = min(mapped, total)
        label = t(lang, "overall", done=f"{done:,}", total=f"{total:,}") if total else ""
    if total:
        out.append(f'<p><progress id="overall" value="{done}" max="{total}">{done}/{total}</progress>'
                   f'<br><span class="overall">{esc(label)}</span></p>')
    elif live is not None or phase == "new":
        out.append(f'<p><progress id="overall"></progress><br>{esc(t(lang, "counting"))}</p>')
    if skipped_n:
        out.append(f'<p>{esc(t(lang, "skipped_count", n=f"{skipped_n:,}"))}</p>')
    if phase == "failed":
        out.append(f'<p class="error">{esc(t(lang, "failed_note"))}</p>')

    # per folder
    active = _current_folders(live)
    rows = {r.path: r for r in reports}
    out.append(f'<h2>{esc(t(lang, "folders"))}</h2>')
    paths = sorted(set(rows) | active)
    if not paths:
        out.append(f'<p class="muted">{esc(t(lang, "no_folders"))}</p>')
    else:
        out.append('<table><thead><tr>'
                   f'<th>{esc(t(lang, "col_folder"))}</th><th class="num">{esc(t(lang, "col_old"))}</th>'
                   f'<th class="num">{esc(t(lang, "col_new"))}</th>'
                   f'<th class="num opt">{esc(t(lang, "col_skipped"))}</th>'
                   f'<th>{esc(t(lang, "col_state"))}</th></tr></thead><tbody>')
        for path in paths:
            r = rows.get(path)
            if path in active:
                state = "folder_active"
            elif r is None:
                state = "folder_waiting"
            else:
                state = "folder_error" if r.error else "folder_ok"
            shown = path if r is None or r.target_name in (path, None) else f"{path} → {r.target_name}"

            def num(v):
                return "" if v is None else f"{v:,}"

            out.append(f'<tr><td class="path">{esc(shown)}</td>'
                       f'<td class="num">{num(r.source_count) if r else ""}</td>'
                       f'<td class="num">{num(r.target_count) if r else ""}</td>'
                       f'<td class="num opt">{num(r.skipped) if r else ""}</td>'
                       f'<td>{esc(t(lang, state))}</td></tr>')
        out.append('</tbody></table>')

    # skipped messages, with the reasons
    if data["skipped"]:
        out.append(f'<h2>{esc(t(lang, "skipped_title"))}</h2><table><thead><tr>'
                   f'<th>{esc(t(lang, "col_folder"))}</th><th class="num">{esc(t(lang, "col_size"))}</th>'
                   f'<th>{esc(t(lang, "col_reason"))}</th></tr></thead><tbody>')
        for path, _uid, size, reason in data["skipped"]:
            out.append(f'<tr><td class="path">{esc(path)}</td><td class="num">{esc(_size(size))}</td>'
                       f'<td>{esc(reason)}</td></tr>')
        out.append('</tbody></table>')
        more = data["skipped_total"] - len(data["skipped"])
        if more > 0:
            out.append(f'<p class="muted">{esc(t(lang, "skipped_more", n=f"{more:,}"))}</p>')

    out.append(f'<p class="note">{esc(t(lang, "refresh_note"))}</p>'
               '<form method="post" action="/logout">'
               f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
               f'<button type="submit" class="secondary">{esc(t(lang, "logout"))}</button></form>')
    return "".join(out)
