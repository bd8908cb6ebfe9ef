"""/metrics: the progress numbers for Prometheus, per domain -- never per user.

The numbers come from the status document (mailsyncd.status, schema 1; ``Daemon.status()``), which
the caller computes first (its store reads run in the daemon's state thread); :func:`render` then
builds the metric families from it at scrape time, plus the daemon's counters (the gate's logins,
the scheduler's passes).  A fresh registry per scrape: nothing is kept between scrapes.

Every series carries the ``node`` label (node.name, default the host name): several nodes behind one load
balancer each answer for themselves, and their scrapes stay apart.  The document is the totals-only one
(no account rows, ``limit=0``): the database sums 50,000 accounts, a scrape never walks them.

Labels are the node, domains, phases, cutover states, results and watch modes only.  An address never appears here:
a scrape must not list the company's mailboxes, and per-user series would grow without bound.
The metric names are documented in docs/status.md; like the JSON, they are added, never renamed.
"""

from __future__ import annotations

import socket

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from ..cutover import STATES as CUTOVER_STATES
from ..status import PHASES

__all__ = ["CONTENT_TYPE_LATEST", "CUTOVER_STATES", "StatusCollector", "counters_of", "node_name", "render"]


def node_name(config) -> str:
    """This node's name: ``node.name`` from the config (issue 13's lease work adds it), else the host name."""
    return getattr(getattr(config, "node", None), "name", None) or socket.gethostname()


def counters_of(daemon) -> dict:
    """The daemon's own counters, read on the reactor thread (where they change)."""
    gate = dict(daemon.gate.counts)
    sched = dict(daemon.scheduler.counts)
    watches = daemon.watches
    return {"logins_ok": gate.get("ok", 0), "logins_failed": gate.get("failed", 0),
            "source_checks": gate.get("source_checks", 0),
            "passes_ok": sched.get("passes", 0), "passes_failed": sched.get("failed_passes", 0),
            "throttled": sched.get("throttled", 0), "watch": watches.summary(),
            "latency": (watches.latencies.cumulative(), watches.latencies.sum)}


class StatusCollector:
    """Metric families from one status document and one set of counters (see :func:`counters_of`)."""

    def __init__(self, doc: dict, counters: dict, node: str):
        self.doc = doc
        self.counters = counters
        self.node = node

    def collect(self):
        doc, c, node = self.doc, self.counters, self.node
        domains = doc.get("domains") or []

        accounts = GaugeMetricFamily(
            "mailsyncd_accounts",
            "Accounts by migration phase: failed (the last pass failed), syncing (copying, or the first "
            "complete pass has not happened yet), waiting (imported, no password yet: starts at the user's "
            "first login), tailing (in sync, following new mail), cutover (the domain's migration has ended).",
            labels=["node", "domain", "phase"])
        for d in domains:
            phases = d.get("phases") or {}
            for phase in PHASES:
                accounts.add_metric([node, d["name"], phase], phases.get(phase, 0))
        yield accounts

        per_domain = (
            ("mailsyncd_source_messages", "source_messages",
             "Messages in the old mailboxes (the source's last count, summed over the domain's accounts)."),
            ("mailsyncd_target_messages", "target_messages",
             "Messages copied to the new server, or found already there, and recorded (summed over the domain)."),
            ("mailsyncd_skipped_messages", "skipped",
             "Messages the new server refused (too big, empty...): not copied, each listed with its reason "
             "in mailsyncctl report and /api/accounts/ADDRESS."),
            ("mailsyncd_copied_bytes", "bytes", "Size in bytes of the messages on the new server (summed over the domain)."),
            ("mailsyncd_behind_messages", "behind",
             "Messages still to copy: source - target - skipped, summed over the domain's accounts."),
            ("mailsyncd_sync_rate_messages_per_second", "rate",
             "Messages per second being copied right now by the domain's running passes (0 when idle)."),
        )
        for name, key, text in per_domain:
            g = GaugeMetricFamily(name, text, labels=["node", "domain"])
            for d in domains:
                g.add_metric([node, d["name"]], float(d.get(key) or 0))
            yield g

        cut = GaugeMetricFamily(
            "mailsyncd_cutover_state",
            "The domain's cutover state: 1 for the current one, 0 for the others. none: no cutover planned; "
            "scheduled: planned (see the document's cutover.at); cancelled; final_pass: the last pass per "
            "account runs; done: the migration of the domain has ended.",
            labels=["node", "domain", "state"])
        for d in domains:
            state = ((d.get("cutover") or {}).get("state")) or "none"
            states = CUTOVER_STATES if state in CUTOVER_STATES else CUTOVER_STATES + (state,)
            for s in states:
                cut.add_metric([node, d["name"], s], 1.0 if s == state else 0.0)
        yield cut

        yield _by_result(
            node, "mailsyncd_logins", "Logins decided by the front door and the self-service page since the daemon "
            "started, by result (a failed one is a wrong password, an unknown user, throttling...).",
            c["logins_ok"], c["logins_failed"])
        yield _by_result(
            node, "mailsyncd_passes", "Sync passes finished since the daemon started, by result (failed: see "
            "mailsyncd_accounts{phase=\"failed\"} and the account's reason in /api/status).",
            c["passes_ok"], c["passes_failed"])
        for name, key, text in (
                ("mailsyncd_source_checks", "source_checks", "Passwords checked against the old server (logins "
                 "the daemon could not decide itself) since the daemon started."),
                ("mailsyncd_source_throttled", "throttled", "Times the old server pushed back (too many "
                 "connections or commands) and the daemon lowered its connection limit for that host.")):
            yield _one(CounterMetricFamily(name, text, labels=["node"]), node, c[key])

        watch = c.get("watch") or {}
        modes = GaugeMetricFamily(
            "mailsyncd_watched_accounts",
            "Accounts this node watches for new mail at the source between passes, by mode (sync.watch): idle "
            "(an IDLE connection on INBOX), poll (STATUS polls of INBOX).  Accounts not counted here are off.",
            labels=["node", "mode"])
        for mode in ("idle", "poll"):
            modes.add_metric([node, mode], float(watch.get(f"watch_{mode}", 0)))
        yield modes
        yield _one(GaugeMetricFamily(
            "mailsyncd_watch_connections", "Source connections this node's watches hold open now (IDLE).",
            labels=["node"]), node, float(watch.get("watch_connections", 0)))
        buckets, total = c.get("latency") or ([("+Inf", 0)], 0.0)
        latency = HistogramMetricFamily(
            "mailsyncd_new_mail_latency_seconds",
            "Seconds from a watch noticing new mail at the source to the end of the copy of that folder, "
            "per notice since the daemon started (the status document's new_mail_latency, for every account).",
            labels=["node"])
        latency.add_metric([node], buckets, total)
        yield latency

        info = doc.get("daemon") or {}
        for name, key, text in (
                ("mailsyncd_sessions_open", "sessions", "IMAP client connections open at the front door now."),
                ("mailsyncd_sessions_relayed", "relayed",
                 "Front-door connections logged in and relayed to the new server now."),
                ("mailsyncd_config_generation", "generation",
                 "Configuration generation: 1 at start, +1 for every successful reload (SIGHUP)."),
                ("mailsyncd_passes_running", "passes_running", "Sync passes running now."),
                ("mailsyncd_start_time_seconds", "started", "When the daemon started, in seconds since the epoch.")):
            yield _one(GaugeMetricFamily(name, text, labels=["node"]), node, float(info.get(key) or 0))
        yield _one(GaugeMetricFamily(
            "mailsyncd_reload_failed", "1 while the last reload failed (the daemon keeps the previous config); "
            "the reason is in /api/status daemon.reload_error.", labels=["node"]), node,
            1.0 if info.get("reload_error") else 0.0)


def _by_result(node: str, name: str, text: str, ok: int, failed: int) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=["node", "result"])
    family.add_metric([node, "ok"], ok)
    family.add_metric([node, "failed"], failed)
    return family


def _one(family, node: str, value: float):
    family.add_metric([node], value)
    return family


def render(doc: dict, counters: dict, node: str) -> bytes:
    """The Prometheus text exposition of one status document (see :class:`StatusCollector`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(doc, counters, node))
    return generate_latest(registry)
