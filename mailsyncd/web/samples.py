"""The dashboard's throughput chart: every domain's messages on the new server, sampled in memory.

A sample every ``SAMPLE_EVERY`` seconds from ``Daemon.status()``, the last hour kept; a restart starts
the chart afresh (it is a view of the last minutes, not a record).
"""

from __future__ import annotations

import collections
import logging

from twisted.internet import defer, task

from ..statusquery import Query

logger = logging.getLogger("mailsyncd.web")

SAMPLE_EVERY = 10.0            # seconds between throughput samples
SAMPLES = 360                  # ... kept: the last hour


def series_rates(t: list[float], values: list[int]) -> list[float | None]:
    """Messages per minute between consecutive samples (never negative); None for the first."""
    out: list[float | None] = [None] if values else []
    for i in range(1, len(values)):
        dt = t[i] - t[i - 1]
        out.append(round(max(0, values[i] - values[i - 1]) * 60.0 / dt, 1) if dt > 0 else None)
    return out


class Throughput:
    """Samples while the reactor runs (stops before shutdown); :meth:`series` for /admin/series.json."""

    def __init__(self, daemon, *, sample_every: float = SAMPLE_EVERY):
        self.daemon = daemon
        self.sample_every = sample_every
        self.samples: collections.deque[tuple[float, dict[str, int]]] = collections.deque(maxlen=SAMPLES)
        self._sampling = False
        reactor = daemon.reactor
        self._sampler = task.LoopingCall(self._sample)
        self._sampler.clock = reactor
        when_running = getattr(reactor, "callWhenRunning", None)
        if when_running is not None:                 # a test's fake reactor may have neither
            when_running(self._start)
        trigger = getattr(reactor, "addSystemEventTrigger", None)
        if trigger is not None:
            trigger("before", "shutdown", self.stop)

    def _start(self) -> None:
        if not self._sampler.running:
            self._sampler.start(self.sample_every, now=True)

    def stop(self) -> None:
        if self._sampler.running:
            self._sampler.stop()

    def _sample(self) -> None:
        if self._sampling:             # the previous status() has not answered yet
            return
        self._sampling = True
        d = defer.maybeDeferred(self.daemon.status, query=Query(limit=0))     # the domains' totals only
        d.addCallback(self.record)
        d.addErrback(lambda f: logger.warning("event=admin_sample_error error=%r", f.getErrorMessage()))
        d.addBoth(lambda _: setattr(self, "_sampling", False))

    def record(self, doc: dict) -> None:
        self.samples.append((float(doc["generated"]),
                             {d["name"]: int(d["target_messages"]) for d in doc["domains"]}))

    def series(self) -> dict:
        t = [s[0] for s in self.samples]
        names = sorted(set(self.daemon.current().domains) | {n for s in self.samples for n in s[1]})
        out = {}
        for name in names:
            values = [s[1].get(name, 0) for s in self.samples]
            out[name] = {"target": values, "rate": series_rates(t, values)}
        return {"interval": self.sample_every, "t": t, "domains": out}
