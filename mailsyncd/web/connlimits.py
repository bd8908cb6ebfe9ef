"""How many HTTP connections may be open: per client address and in total.  Pure bookkeeping.

The total is also kept below the process's open-file limit (RLIMIT_NOFILE): a flood must make the
web listener refuse connections, not make the daemon fail to open its database, its sockets to the
mail servers or its log.  The web listener takes at most half of it; the rest is the IMAP side's
and the daemon's own.
"""

from __future__ import annotations

import resource

NOFILE_SHARE = 2          # the web listener may use 1/NOFILE_SHARE of RLIMIT_NOFILE


def nofile_cap(share: int = NOFILE_SHARE) -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1 << 20
    return max(1, soft // share)


class ConnectionLimits:
    def __init__(self, per_ip: int, total: int):
        self.per_ip, self.total = per_ip, total
        self._open: dict[str, int] = {}
        self.count = 0

    def admit(self, ip: str | None) -> str | None:
        """Count a new connection; None if it may stay, else why not ("total" or "per_ip").

        ``ip`` None: counted in the total only (a trusted proxy carries many clients)."""
        if self.count >= self.total:
            return "total"
        if ip is not None:
            n = self._open.get(ip, 0)
            if n >= self.per_ip:
                return "per_ip"
            self._open[ip] = n + 1
        self.count += 1
        return None

    def release(self, ip: str | None) -> None:
        """A connection :meth:`admit` let in has ended."""
        self.count -= 1
        if ip is not None:
            n = self._open.get(ip, 0) - 1
            if n > 0:
                self._open[ip] = n
            else:
                self._open.pop(ip, None)
