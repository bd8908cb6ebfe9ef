"""Progress of one pass, shared by the folder workers.  Rendering is the CLI's business."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Progress:
    """Thread-safe counters; ``listener`` is called (from worker threads) after each change."""

    def __init__(self, listener: Callable[[Progress], None] | None = None):
        self._lock = threading.Lock()
        self.listener = listener
        self.total = 0          # messages this pass expects to handle
        self.done = 0           # handled: copied, skipped or gone
        self.present = 0        # found already on the target
        self.bytes = 0
        self.started = time.monotonic()
        self.current: set[str] = set()
        # recent-first (sync/recent.py): "recent" while the newest mail goes first, "rest", "done"; None: not used
        self.stage: str | None = None

    def _changed(self) -> None:
        if self.listener is not None:
            self.listener(self)

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n
        self._changed()

    def folder(self, path: str, active: bool) -> None:
        with self._lock:
            (self.current.add if active else self.current.discard)(path)
        self._changed()

    def set_stage(self, stage: str) -> None:
        with self._lock:
            if self.stage is None and stage != "recent":
                return      # a pass without a recent slice has no stages to show
            self.stage = stage
        self._changed()

    def advance(self, path: str, n: int, nbytes: int) -> None:
        with self._lock:
            self.done += n
            self.bytes += nbytes
        self._changed()

    def note_present(self, path: str, n: int) -> None:
        with self._lock:
            self.present += n
            self.done += n
        self._changed()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        e = self.elapsed
        return self.done / e if e > 0 else 0.0

    def line(self) -> str:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and self.rate > 0 and self.done < self.total:
            eta = f" eta={(self.total - self.done) / self.rate:.0f}s"
        return (f"progress messages={self.done}/{self.total}{pct} bytes={self.bytes}"
                f" rate={self.rate:.0f}/s{eta}{' newest-first' if self.stage == 'recent' else ''}")
