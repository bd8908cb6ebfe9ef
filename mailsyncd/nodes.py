"""The cluster's nodes as `mailsyncctl status --nodes` and /api/nodes show them (pure: the store's rows in)."""

from __future__ import annotations


def nodes_view(nodes: list[dict], leases: list[dict], now: float) -> list[dict]:
    """Each node: name, host, pid, version, started, last heartbeat and its age, and the accounts whose
    lease it holds now (an expired lease is no one's: another node may take it)."""
    held: dict[str, list[str]] = {}
    for lease in leases:
        if lease["node"] is not None and lease["expires"] > now:
            held.setdefault(lease["node"], []).append(lease["account"])
    return [{"name": n["name"], "host": n["host"], "pid": n["pid"], "version": n["version"],
             "started": n["started"], "heartbeat": n["heartbeat"],
             "heartbeat_age": round(max(0.0, now - n["heartbeat"]), 1),
             "leases": sorted(held.get(n["name"], []))} for n in nodes]


def read_nodes(store, now: float) -> list[dict]:
    return nodes_view(store.nodes(), store.leases(), now)


def lines(view: list[dict]) -> list[str]:
    out = [f"nodes: {len(view)}"]
    for n in view:
        syncing = ", ".join(n["leases"][:5]) + (f" (+{len(n['leases']) - 5})" if len(n["leases"]) > 5 else "")
        out.append(f"  {n['name']:<16} {n['host']} pid {n['pid']}, heartbeat {n['heartbeat_age']:.0f}s ago, "
                   f"{len(n['leases'])} leases" + (f": {syncing}" if syncing else ""))
    return out
