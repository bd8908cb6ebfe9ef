"""New-mail latencies as a Prometheus histogram: counts per bucket, kept by the watches, read at scrape time.

Pure: :class:`LatencyHistogram` only counts.  web/metrics.py turns it into ``mailsyncd_new_mail_latency_seconds``.
The buckets span what the watch modes give: about a second with IDLE, up to a poll interval (30 s and more)
with polling, minutes when a pass is slow.
"""

from __future__ import annotations

import bisect

BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class LatencyHistogram:
    def __init__(self, buckets: tuple[float, ...] = BUCKETS):
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)      # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations <= le) per bucket, +Inf last: what a Prometheus histogram exposes."""
        out, total = [], 0
        for bound, n in zip(self.bounds + (float("inf"),), self.counts):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out
