"""``sync:`` (global, and per domain key by key): how the copy engine paces and bounds itself."""

import re
from dataclasses import dataclass, field

from ._base import _choice, _Errors, _int_range, _Invalid, _positive, _Section


@dataclass(frozen=True, slots=True)
class DeleteLimit:
    """At most this many expunges per folder and pass: ``percent`` of the messages we copied into
    the folder (rounded down) and/or ``count``; the smaller applies where both are set."""
    percent: float | None
    count: int | None

    def of(self, copied: int) -> int:
        limits = [int(copied * self.percent // 100)] if self.percent is not None else []
        if self.count is not None:
            limits.append(self.count)
        return min(limits)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    connections: int = 4
    batch_messages: int = 200
    batch_bytes: int = 2 * 1024**2
    retries: int = 5
    retry_backoff: float = 1.0
    flag_rescan: float = 3600.0
    deletions: str = "keep"          # "mirror": expunge on the target what the source expunged
    max_delete: DeleteLimit = field(default_factory=lambda: DeleteLimit(5.0, 500))
    max_message_size: int = 64 * 1024**2   # larger messages are skipped and recorded, never read
    recent_first: int = 30           # days: a first copy starts with INBOX's and Sent's mail this recent; 0: off



_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2,
          "g": 1024**3, "gib": 1024**3}


def _size(v):
    n = None
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", v)
        if m and m[2].lower() in _UNITS:  # "MB" is refused: it is ambiguous (10^6 or 2^20)
            n = int(m[1]) * _UNITS[m[2].lower()]
    if n is None or not 64 * 1024 <= n <= 1024**3:
        raise _Invalid("must be a size from 64KiB to 1GiB: bytes, or like '512KiB', '16MiB', '16M', '1GiB'")
    return n


def _delete_limit(v):
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return DeleteLimit(None, v)
    if isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", v)
        if m and 0 < float(m[1]) <= 100:
            return DeleteLimit(float(m[1]), None)
    raise _Invalid("must be a count of messages >= 0 (like 200) or a percent of the folder, "
                   "above 0% and at most 100% (like '5%')")


_SYNC_CHECKS = {
    "connections": _int_range(1, 16),
    "batch_messages": _int_range(1, 5000),
    "batch_bytes": _size,
    "retries": _int_range(0, 100),
    "retry_backoff": _positive(60),  # the backoff is capped at 60 s, so a larger start is meaningless
    "flag_rescan": _positive(),
    "deletions": _choice("keep", "mirror"),
    "max_delete": _delete_limit,
    "max_message_size": _size,
    "recent_first": _int_range(0, 36500),
}


def _sync(errs: _Errors, node: object, path: str, base: SyncSettings) -> SyncSettings:
    # Keys missing here inherit from ``base``: a per-domain section overrides the
    # global one key by key.
    s = _Section(errs, node, path, tuple(_SYNC_CHECKS))
    return SyncSettings(**{k: s.get(k, check, getattr(base, k)) for k, check in _SYNC_CHECKS.items()})


