"""The progress numbers, one model for every view: `mailsyncctl status`, /api, /metrics, the dashboard,
the self-service page and the [ALERT] at login: one phase word each, one size format.

Pure: it takes the store's per-account rows of one page, the database's sums of the whole filter
(store/progress.py, via statusquery.read) and the daemon's live view (which passes run, how fast)
and returns plain dicts.  The JSON schema (version 1) is
documented in docs/status.md; add fields, never rename or remove them.

Phases, as users see them:
  waiting  -- known (imported) but no password yet: starts at the user's first login
  syncing  -- a pass is running or the first complete pass has not happened yet
  tailing  -- in sync; following new mail with incremental passes
  failed   -- the last pass failed; ``reason`` says why
  cutover  -- the domain's migration has ended
The store keeps fewer, internal phases (new, synced, failed, cutover): ``phase_of`` maps them; pages
label the phases above, keyed by these words (web/i18n.py ``phase_*``).
"""

from __future__ import annotations

import time

SCHEMA = 1
PHASES = ("failed", "syncing", "waiting", "tailing", "cutover")
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size_text(n: float | None, unknown: str = "?") -> str:
    """Bytes for people, in binary units labelled as such (5.3 MiB): the one size format of every view."""
    if n is None:
        return unknown
    f = float(n)
    for unit in _UNITS[:-1]:
        if abs(f) < 1024:
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{f:.1f} {_UNITS[-1]}"


def alert_text(progress) -> str | None:
    """The [ALERT] a client shows at login while the user's migration runs (``progress``: sync.Progress)."""
    if progress is None:
        return None
    if not progress.total:
        return "Mailbox migration in progress: counting your old mail; it will appear here shortly."
    pct = int(100 * progress.done / progress.total)
    return (f"Mailbox migration in progress: {progress.done:,} of {progress.total:,} messages ({pct}%); "
            "older mail is still arriving.")


def folder_alert_text(left: int) -> str:
    """The [ALERT] when a client opens a folder whose older mail is still being copied."""
    many = left != 1
    return (f"Mailbox migration in progress: {left:,} older message{'s' if many else ''} of this folder "
            f"{'are' if many else 'is'} still arriving.")


def phase_of(row: dict, running: bool) -> str:
    stored = row.get("phase") or "new"
    if stored == "cutover":
        return "cutover"
    if running:
        return "syncing"
    if stored == "failed":
        return "failed"
    if stored == "synced":
        return "tailing"
    if not row.get("has_password"):
        return "waiting"
    return "syncing"


def stage_of(phase: str, live_stage: str | None, running: bool) -> str | None:
    """Recent mail first (sync/recent.py): the running pass's "recent" -> "rest" -> "done"; "done" for an
    account in sync; None when not known."""
    return live_stage if running else ("done" if phase in ("tailing", "cutover") else None)


def account_view(row: dict, live: dict | None, pass_interval: float, now: float, watch: dict | None = None) -> dict:
    """One account.  ``row``: Store.progress_rows(); ``live``: the daemon's entry while a pass runs;
    ``watch``: the daemon's watch of the account's source INBOX (mailsyncd.watch), if any."""
    running = live is not None
    source = int(row.get("source_messages") or 0)
    on_target = int(row.get("target_messages") or 0)
    skipped = int(row.get("skipped") or 0)
    rate = eta = None
    current: list[str] = []
    if running:
        rate = float(live.get("rate") or 0.0)
        left = max(0, int(live.get("total") or 0) - int(live.get("done") or 0))
        eta = left / rate if rate > 0 else None
        current = sorted(live.get("current") or [])
    done = min(source, on_target + skipped) if source else on_target + skipped
    percent = 100.0 if source == 0 and done == 0 and row.get("last_pass_ok") else (
        100.0 * done / source if source else 0.0)
    phase = phase_of(row, running)
    last = row.get("last_pass_finished")
    next_pass = None
    if phase == "tailing" and last:
        next_pass = last + pass_interval
    elif phase in ("syncing", "failed") and not running:
        next_pass = now
    return {
        "address": row["address"], "domain": row["domain"], "plan": row.get("plan"),
        "source_address": row.get("source_address") or row["address"],
        "phase": phase, "reason": row.get("last_error") if phase == "failed" else None, "running": running,
        # False until a pass has counted the source (its STATUS): source_messages 0 then means "unknown"
        "source_known": bool(row.get("source_known", True)),
        "source_messages": source, "source_bytes": row.get("source_bytes"),
        "target_messages": on_target, "skipped": skipped,
        "bytes": int(row.get("bytes") or 0), "percent": round(min(percent, 100.0), 1),
        "behind": max(0, source - on_target - skipped),
        "rate": None if rate is None else round(rate, 1), "eta_seconds": None if eta is None else round(eta),
        "current_folders": current,
        # recent mail first (sync/recent.py): "recent" -> "rest" -> "done"
        "stage": stage_of(phase, live.get("stage") if running else None, running),
        "last_pass": last, "last_pass_ok": row.get("last_pass_ok"), "next_pass": next_pass,
        "watching": (watch or {}).get("watching") or "off",
        "new_mail_latency": (watch or {}).get("new_mail_latency"),
    }


def _totals(accounts: list[dict]) -> dict:
    phases = {p: 0 for p in PHASES}
    for a in accounts:
        phases[a["phase"]] += 1
    known = [a["source_bytes"] for a in accounts if a["source_bytes"] is not None]
    return _totals_dict(
        len(accounts), phases, sum(a["source_messages"] for a in accounts),
        bool(accounts) and all(a["source_known"] for a in accounts), sum(known) if known else None,
        sum(a["target_messages"] for a in accounts), sum(a["skipped"] for a in accounts),
        sum(a["bytes"] for a in accounts), sum(a["behind"] for a in accounts), sum(a["rate"] or 0.0 for a in accounts))


def _totals_dict(n: int, phases: dict, source: int, source_known: bool, source_bytes: int | None, target: int,
                 skipped: int, size: int, behind: int, rate: float) -> dict:
    return {"accounts": n, "phases": phases, "source_messages": source, "source_known": source_known,
            "source_bytes": source_bytes, "target_messages": target,
            "skipped": skipped, "bytes": size,
            "percent": round(100.0 * min(source, target + skipped) / source, 1) if source else 0.0,
            "behind": behind, "rate": round(rate, 1),
            "eta_seconds": round(behind / rate) if rate > 0 and behind else None}


def totals_of(groups: list[dict], rate: float) -> dict:
    """The totals of :func:`_totals`, from the database's sums (Store.progress_totals rows) instead of every
    account's entry; ``rate``: the summed (rounded) rates of the running passes among them."""
    phases = {p: 0 for p in PHASES}
    n = source = target = skipped = size = behind = known = 0
    source_bytes = None
    for g in groups:
        word = phase_of({"phase": g["stored"], "has_password": g["has_password"]}, bool(g["running"]))
        phases[word] += g["accounts"]
        n += g["accounts"]
        source += int(g["source_messages"] or 0)
        target += int(g["target_messages"] or 0)
        skipped += int(g["skipped"] or 0)
        size += int(g["bytes"] or 0)
        behind += int(g["behind"] or 0)
        known += int(g["source_known"] or 0)
        if g["source_bytes"] is not None:
            source_bytes = (source_bytes or 0) + int(g["source_bytes"])
    return _totals_dict(n, phases, source, n > 0 and known == n, source_bytes, target, skipped, size, behind, rate)


def sort_key(a: dict) -> tuple:
    """Failed first, then by how far behind, then by address."""
    return (PHASES.index(a["phase"]), -a["behind"], a["address"])


def _cutover(name: str, config, cutovers: dict | None) -> dict | None:
    row = (cutovers or {}).get(name)
    if row:
        return {"state": row["state"], "at": row["at"], "note": row.get("note")}
    if name in config.domains and config.domains[name].cutover:
        return {"state": "scheduled", "at": config.domains[name].cutover, "note": "from the config"}
    return None


def build_page(rows: list[dict], groups: list[dict], *, config, live: dict | None = None,
               running_domains: dict | None = None, cutovers: dict | None = None, daemon: dict | None = None,
               domain: str | None = None, next_cursor: str | None = None, now: float | None = None,
               watch: dict | None = None) -> dict:
    """The status document (schema 1) for one page of a filter (statusquery.read gives the arguments):
    ``accounts`` is the page, in address order; ``totals`` and ``domains`` cover the whole filter, from the
    database's sums; ``next`` is the cursor of the next page (null on the last).  ``watch``: the daemon's
    watches (mailsyncd.watch), by address."""
    now = time.time() if now is None else now
    live = live or {}
    interval = config.scheduler.pass_interval
    watch = watch or {}
    accounts = [account_view(r, live.get(r["address"]), interval, now, watch.get(r["address"])) for r in rows]
    rates: dict[str, float] = {}
    for address, name in (running_domains or {}).items():
        if address in live:     # as account_view rounds it, so the sums agree with the accounts'
            rates[name] = rates.get(name, 0.0) + round(float(live[address].get("rate") or 0.0), 1)
    domains = [{"name": name, "cutover": _cutover(name, config, cutovers),
                **totals_of([g for g in groups if g["domain"] == name], rates.get(name, 0.0))}
               for name in sorted(config.domains if domain is None else [domain])]
    return {"schema": SCHEMA, "generated": now, "daemon": daemon, "totals": totals_of(groups, sum(rates.values())),
            "domains": domains, "accounts": accounts, "next": next_cursor}
