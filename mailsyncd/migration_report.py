"""The migration report handed to the customer: per account and per folder, messages and bytes at the
source and on the target, every skipped or altered message with the server's words, and totals.

One model (:func:`build`, from the store) and its two forms: CSV (:func:`write_csv`) and printable HTML
(:func:`html_body` inside the dashboard's frame at /admin/report, :func:`html_document` as a file).
Everything that came from a server is hostile: shown() makes hidden characters visible, HTML is
escaped, and a CSV cell that a spreadsheet would run as a formula is defused.
"""

from __future__ import annotations

import csv
import html
import time

from .status import size_text
from .text import shown

CSV_COLUMNS = ["record", "account", "folder", "target_folder", "source_messages", "target_messages",
               "source_bytes", "target_bytes", "copied", "skipped", "altered", "uid", "size", "detail"]
_SUMMED = ("source_messages", "target_messages", "source_bytes", "target_bytes", "copied", "skipped", "altered")


def build(store, domain: str | None = None, *, address: str | None = None, now: float | None = None) -> dict:
    """The report's model.  ``source_bytes``: the source's STATUS=SIZE where it had it, else the bytes of
    the messages copied and skipped; ``target_bytes``: the messages this migration put there."""
    accounts = []
    for a in store.accounts(domain):
        if address is not None and a["address"] != address:
            continue
        addr = a["address"]
        totals = store.folder_totals(addr)
        skipped = store.skipped(addr)
        skipped_bytes: dict[str, int] = {}
        for path, _uid, size, _reason in skipped:
            skipped_bytes[path] = skipped_bytes.get(path, 0) + (size or 0)
        folders = []
        for r in store.reports(addr):
            size, copied, copied_bytes = totals.get(r.path, (None, 0, 0))
            folders.append({"folder": r.path, "target_folder": r.target_name, "source_messages": r.source_count or 0,
                            "target_messages": r.target_count or 0,
                            "source_bytes": size if size is not None else copied_bytes + skipped_bytes.get(r.path, 0),
                            "target_bytes": copied_bytes, "copied": copied, "skipped": r.skipped,
                            "altered": r.altered, "error": r.error})
        accounts.append({
            "account": addr, "source_account": a["source_address"] or addr, "phase": a["phase"],
            "folders": folders, "totals": {k: sum(f[k] for f in folders) for k in _SUMMED},
            "skipped_messages": [{"folder": p, "uid": u, "size": s, "reason": why} for p, u, s, why in skipped],
            "altered_messages": [{"folder": p, "uid": u, "size": s, "reason": why}
                                 for p, u, s, why in store.altered(addr)],
            "folders_not_copied": [{"folder": p, "reason": why} for p, why in store.skipped_folders(addr)],
        })
    return {"domain": domain, "generated": time.time() if now is None else now, "accounts": accounts,
            "totals": {"accounts": len(accounts),
                       **{k: sum(a["totals"][k] for a in accounts) for k in _SUMMED}}}


def _cell(value) -> object:
    """A text cell safe to print and to open in a spreadsheet (no formula from a hostile server)."""
    if value is None or isinstance(value, (int, float)):
        return "" if value is None else value
    text = shown(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csv(model: dict, out) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def row(**cells) -> None:
        w.writerow([_cell(cells.get(c)) for c in CSV_COLUMNS])
    for a in model["accounts"]:
        for f in a["folders"]:
            row(record="folder", account=a["account"], **{k: v for k, v in f.items() if k != "error"},
                detail=f["error"])
        for m in a["skipped_messages"]:
            row(record="skipped_message", account=a["account"], folder=m["folder"], uid=m["uid"], size=m["size"],
                detail=m["reason"])
        for m in a["altered_messages"]:
            row(record="altered_message", account=a["account"], folder=m["folder"], uid=m["uid"], size=m["size"],
                detail=m["reason"])
        for f in a["folders_not_copied"]:
            row(record="folder_not_copied", account=a["account"], folder=f["folder"], detail=f["reason"])
        row(record="account_total", account=a["account"], **a["totals"], detail=a["phase"])
    row(record="total", **{k: v for k, v in model["totals"].items() if k != "accounts"},
        detail=f"{model['totals']['accounts']} account{'' if model['totals']['accounts'] == 1 else 's'}")


def _e(value) -> str:
    return html.escape(shown(value), quote=True)


def _num(n) -> str:
    return f"{n:,}"


def html_body(model: dict) -> str:
    """The report as HTML without a frame: a totals table, then per account its folders and messages."""
    t = model["totals"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(model["generated"]))
    scope = f"domain {model['domain']}" if model["domain"] else "all domains"
    out = [f'<section class="report" id="migration-report"><p class="report-meta">{_e(scope)}, {_e(when)}</p>',
           '<table class="report-totals"><caption>Totals</caption><tbody>']
    for label, value in (("Accounts", _num(t["accounts"])),
                         ("Messages at the source", _num(t["source_messages"])),
                         ("Messages on the new server", _num(t["target_messages"])),
                         ("Size at the source", size_text(t["source_bytes"])),
                         ("Size copied", size_text(t["target_bytes"])),
                         ("Messages skipped", _num(t["skipped"])), ("Messages altered by the new server",
                                                                    _num(t["altered"]))):
        key = label.lower().replace(" ", "-")
        out.append(f'<tr data-total="{_e(key)}"><th scope="row">{_e(label)}</th><td>{_e(value)}</td></tr>')
    out.append("</tbody></table>")
    for a in model["accounts"]:
        src = "" if a["source_account"] == a["account"] else f' (from {_e(a["source_account"])})'
        out.append(f'<section class="report-account"><h2>{_e(a["account"])}{src}</h2>'
                   f'<p>Phase: {_e(a["phase"])}</p>'
                   '<table><thead><tr><th scope="col">Folder</th><th scope="col">On the new server as</th>'
                   '<th scope="col">Source</th><th scope="col">New server</th><th scope="col">Source size</th>'
                   '<th scope="col">Copied size</th><th scope="col">Skipped</th><th scope="col">Altered</th>'
                   '</tr></thead><tbody>')
        for f in a["folders"]:
            err = f'<br><span class="error">{_e(f["error"])}</span>' if f["error"] else ""
            out.append(f'<tr><td>{_e(f["folder"])}{err}</td><td>{_e(f["target_folder"])}</td>'
                       f'<td class="n">{_num(f["source_messages"])}</td><td class="n">{_num(f["target_messages"])}</td>'
                       f'<td class="n">{_e(size_text(f["source_bytes"]))}</td>'
                       f'<td class="n">{_e(size_text(f["target_bytes"]))}</td>'
                       f'<td class="n">{_num(f["skipped"])}</td><td class="n">{_num(f["altered"])}</td></tr>')
        at = a["totals"]
        out.append(f'</tbody><tfoot><tr><th scope="row" colspan="2">Total</th>'
                   f'<td class="n">{_num(at["source_messages"])}</td><td class="n">{_num(at["target_messages"])}</td>'
                   f'<td class="n">{_e(size_text(at["source_bytes"]))}</td>'
                   f'<td class="n">{_e(size_text(at["target_bytes"]))}</td>'
                   f'<td class="n">{_num(at["skipped"])}</td><td class="n">{_num(at["altered"])}</td></tr>'
                   '</tfoot></table>')
        for key, title in (("skipped_messages", "Skipped messages"), ("altered_messages", "Altered messages")):
            if a[key]:
                out.append(f'<h3>{title}</h3><ul class="report-messages">')
                out += [f'<li>{_e(m["folder"])}, UID {m["uid"]}, {_e(size_text(m["size"]))}: '
                        f'<q>{_e(m["reason"])}</q></li>' for m in a[key]]
                out.append("</ul>")
        if a["folders_not_copied"]:
            out.append('<h3>Folders not copied</h3><ul class="report-messages">')
            out += [f'<li>{_e(f["folder"])}: {_e(f["reason"])}</li>' for f in a["folders_not_copied"]]
            out.append("</ul>")
        out.append("</section>")
    out.append("</section>")
    return "".join(out)


_PRINT_CSS = """body{font:11pt/1.4 system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #999;padding:.2em .5em;text-align:left}td.n{text-align:right}.error{color:#a00}
@media print{body{margin:0}.report-account{break-inside:avoid-page}}"""


def html_document(model: dict, title: str = "Mail migration report") -> str:
    """A standalone page (its style inline: a file has no CSP) to print or send."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_PRINT_CSS}</style></head><body><h1>{_e(title)}</h1>{html_body(model)}</body></html>\n")
