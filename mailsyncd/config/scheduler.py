"""``scheduler:``: how often accounts are synced and how many at once."""

from dataclasses import dataclass

from ._base import _Errors, _int_range, _positive, _Section


@dataclass(frozen=True, slots=True)
class Scheduler:
    pass_interval: float = 300.0          # seconds between incremental passes of one account
    max_accounts: int = 4                 # accounts synced at once, over all domains
    max_accounts_per_domain: int = 4
    failure_backoff: float = 60.0         # first wait after a failed pass; doubles, with jitter
    failure_backoff_max: float = 3600.0
    max_watches: int = 200                # IDLE connections held at once, over all accounts; the rest poll



_SCHEDULER_CHECKS = {
    "pass_interval": _positive(),
    "max_accounts": _int_range(1, 1000),
    "max_accounts_per_domain": _int_range(1, 1000),
    "failure_backoff": _positive(),
    "failure_backoff_max": _positive(),
    "max_watches": _int_range(0, 100000),
}
_SCHED_DEFAULTS = Scheduler()


def _scheduler(errs: _Errors, node: object) -> Scheduler:
    s = _Section(errs, node, "scheduler", tuple(_SCHEDULER_CHECKS))
    return Scheduler(**{k: s.get(k, check, getattr(_SCHED_DEFAULTS, k)) for k, check in _SCHEDULER_CHECKS.items()})


