"""How the listener logs the peers it refuses (``event=proxy_untrusted``): a port scan must not fill the disk.

Per source address: its first refusal is logged at once; the refusals that follow are counted, and at the
end of each ``interval`` (60 s) one summary line says how many more there were.  An address refused
nothing in a whole interval is forgotten (its next refusal is a first one again), so memory follows the
addresses refused in the last minute, bounded by ``max_tracked``: beyond it, new addresses share the
entry ``*``.  Pure policy: the clock is the reactor given (a fake one in tests).
"""

from __future__ import annotations

from collections.abc import Callable

SUMMARY_INTERVAL = 60.0
MAX_TRACKED = 4096
OTHERS = "*"           # the refusals of addresses past max_tracked


class RefusalLog:
    def __init__(self, reactor, log: Callable[[str, int], None], *, interval: float = SUMMARY_INTERVAL,
                 max_tracked: int = MAX_TRACKED):
        self.reactor = reactor
        self.log = log                    # log(ip, 0): a first refusal; log(ip, n): n more in the interval
        self.interval = interval
        self.max_tracked = max_tracked
        self.pending: dict[str, int] = {}     # address -> refusals not logged in its current interval

    def refused(self, ip: str) -> None:
        if ip not in self.pending and len(self.pending) >= self.max_tracked:
            ip = OTHERS
        if ip in self.pending:
            self.pending[ip] += 1
            return
        self.pending[ip] = 0
        self.log(ip, 0)
        self.reactor.callLater(self.interval, self._summary, ip)

    def _summary(self, ip: str) -> None:
        n = self.pending.pop(ip)
        if n:
            self.log(ip, n)
            self.pending[ip] = 0
            self.reactor.callLater(self.interval, self._summary, ip)
