"""Several connections ("lanes") copying one large folder: its UID windows, handed out in UID order.

The folder's own FolderSync (lane 0) makes the folder's ``Windows`` and offers it to the pass
(``Offers``); a worker of the pass with no folder left joins as another lane, on its own
connections, and takes the next window each time it has written the last.  Exactly-once holds
as with one lane: each lane journals its own batch (store ``inflight``, one row per lane); a
window's lowest UID is reserved in the shared ``logic.Mark`` when it is handed out, so the mark
never passes a window not listed yet; and a mark is recorded only together with the batch that
let it move (``commit_lock``), so a recorded mark never covers a batch another lane has not
recorded.  A lane that fails stops the others after their batch; the folder's own FolderSync then
waits for them and raises, and its retry recovers every lane's batch (appender.recover).
"""

from __future__ import annotations

import threading

from .logic import MAX_UID, Mark, next_span


class Windows:
    """The UID windows above a folder's mark, for the lanes copying it (one lane: in order, as listed)."""

    def __init__(self, lo: int, uidnext: int | None, mark: Mark, commit_lock: threading.Lock, want: int):
        self._cond = threading.Condition()
        self.lo, self.uidnext, self.mark, self.want = lo, uidnext, mark, want
        self.commit_lock = commit_lock
        self.span = want
        self.ended = False          # the last window ("lo:*") was handed out
        self.closed = False         # the folder's own lane is done: no lane joins any more
        self.failed: BaseException | None = None
        self.helpers = 0            # other lanes at work
        self._next_lane = 1
        self.copied = self.nbytes = self.altered = 0    # the other lanes' figures

    def take(self) -> tuple[int, int, bool] | None:
        """(lo, hi, last) of the next window, reserved in the mark; None: none left, or a lane failed."""
        with self._cond:
            if self.ended or self.failed is not None or self.lo > MAX_UID:
                return None
            lo = self.lo
            hi = min(lo + self.span - 1, MAX_UID)
            last = not self.uidnext or hi >= self.uidnext - 1 or hi == MAX_UID
            self.mark.reserve(lo)
            self.lo, self.ended = hi + 1, last
            return lo, hi, last

    def listed(self, lo: int, hi: int, count: int) -> None:
        """A window was listed: later windows hold about ``want`` messages at its density."""
        with self._cond:
            self.span = next_span(hi - lo + 1, count, self.want)

    def left(self) -> int:
        """About how many windows are still to hand out (0: none)."""
        with self._cond:
            if self.ended or self.closed or self.failed is not None:
                return 0
            return max(1, ((self.uidnext or self.lo) - self.lo) // max(self.span, 1) + 1)

    def join(self) -> int | None:
        """A lane number for another lane, or None if there is nothing to share any more."""
        with self._cond:
            if self.left() < 2:      # the folder's own lane takes the last one itself
                return None
            self.helpers += 1
            self._next_lane += 1
            return self._next_lane - 1

    def leave(self, copied: int, nbytes: int, altered: int) -> None:
        with self._cond:
            self.helpers -= 1
            self.copied += copied
            self.nbytes += nbytes
            self.altered += altered
            self._cond.notify_all()

    def fail(self, e: BaseException) -> None:
        with self._cond:
            if self.failed is None:
                self.failed = e

    def close(self) -> None:
        """No lane joins from now on; returns once the lanes at work have left."""
        with self._cond:
            self.closed = True
            while self.helpers:
                self._cond.wait()


class Offers:
    """The folders of a pass whose copy other workers may join (account.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Windows, object]] = {}

    def offer(self, path: str, windows: Windows, job: object) -> None:
        with self._lock:
            self._open[path] = (windows, job)

    def withdraw(self, path: str) -> None:
        with self._lock:
            self._open.pop(path, None)

    def pick(self) -> tuple[Windows, object, int] | None:
        """(windows, job, lane) of the folder with the most windows left, joined; None: nothing to join."""
        with self._lock:
            for w, job in sorted(self._open.values(), key=lambda o: -o[0].left()):
                lane = w.join()
                if lane is not None:
                    return w, job, lane
        return None
