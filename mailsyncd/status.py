"""The progress numbers, one model for every view: `mailsyncctl status`, /api, /metrics, the dashboard,
the self-service page and the [ALERT] at login: one phase word each, one size format.

Pure: it takes the store's per-account rows and the daemon's live view (which
passes run, how fast) and returns plain dicts.  The JSON schema (version 1) is
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


def account_view(row: dict, live: dict | None, pass_interval: float, now: float) -> dict:
    """One account.  ``row``: Store.progress_rows(); ``live``: the daemon's entry while a pass runs."""
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
        "stage": live.get("stage") if running else ("done" if phase in ("tailing", "cutover") else None),
        "last_pass": last, "last_pass_ok": row.get("last_pass_ok"), "next_pass": next_pass,
    }


def _totals(accounts: list[dict]) -> dict:
    phases = {p: 0 for p in PHASES}
    for a in accounts:
        phases[a["phase"]] += 1
    source = sum(a["source_messages"] for a in accounts)
    target = sum(a["target_messages"] for a in accounts)
    skipped = sum(a["skipped"] for a in accounts)
    rate = sum(a["rate"] or 0.0 for a in accounts)
    behind = sum(a["behind"] for a in accounts)
    known = [a["source_bytes"] for a in accounts if a["source_bytes"] is not None]
    return {"accounts": len(accounts), "phases": phases, "source_messages": source,
            "source_known": bool(accounts) and all(a["source_known"] for a in accounts),
            "source_bytes": sum(known) if known else None, "target_messages": target,
            "skipped": skipped, "bytes": sum(a["bytes"] for a in accounts),
            "percent": round(100.0 * min(source, target + skipped) / source, 1) if source else 0.0,
            "behind": behind, "rate": round(rate, 1),
            "eta_seconds": round(behind / rate) if rate > 0 and behind else None}


def sort_key(a: dict) -> tuple:
    """Failed first, then by how far behind, then by address."""
    return (PHASES.index(a["phase"]), -a["behind"], a["address"])


def build(rows: list[dict], *, config, live: dict | None = None, cutovers: dict | None = None,
          daemon: dict | None = None, domain: str | None = None, user: str | None = None,
          now: float | None = None) -> dict:
    """The whole status document (schema 1)."""
    now = time.time() if now is None else now
    live = live or {}
    interval = config.scheduler.pass_interval
    accounts = [account_view(r, live.get(r["address"]), interval, now) for r in rows
                if (domain is None or r["domain"] == domain) and (user is None or r["address"] == user)]
    accounts.sort(key=sort_key)
    domains = []
    for name in sorted(config.domains if domain is None else [domain]):
        mine = [a for a in accounts if a["domain"] == name]
        row = (cutovers or {}).get(name)
        cut = ({"state": row["state"], "at": row["at"], "note": row.get("note")} if row else
               ({"state": "scheduled", "at": config.domains[name].cutover, "note": "from the config"}
                if name in config.domains and config.domains[name].cutover else None))
        domains.append({"name": name, "cutover": cut, **_totals(mine)})
    return {"schema": SCHEMA, "generated": now, "daemon": daemon, "totals": _totals(accounts),
            "domains": domains, "accounts": accounts}
