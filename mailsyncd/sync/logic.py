"""Pure decisions of the copy engine: fingerprints, batching, flag filtering and merging."""

from __future__ import annotations

import hashlib
import heapq
import re
import threading
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Sequence

from ..imap.flags import is_flag

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
_SYSTEM_BY_LOWER = {f.lower(): f for f in SYSTEM_FLAGS}


def fingerprint(raw: bytes) -> bytes:
    """A content fingerprint that survives a target normalising line ends.

    Messages without a Message-ID are common (drafts, old imports), and byte-identical
    duplicates are legitimate: the fingerprint identifies content, and matching is by
    multiset so two copies stay two copies.
    """
    h = hashlib.sha256()
    if not _BARE_CR.search(raw):
        # Every CR starts a CRLF (nearly every message): mapping line ends is deleting the CRs, which
        # replace() does 10x faster than mapping CRLF to LF (memchr and memcpy; issue 16: CPU per byte).
        if len(raw) <= _FP_CHUNK:
            lf = raw.replace(b"\r", b"")
            h.update(memoryview(lf)[:_rstripped_len(lf)])
        else:
            end = _rstripped_len(raw)   # trailing whitespace is still whitespace once line ends are mapped
            view = memoryview(raw)
            for start in range(0, end, _FP_CHUNK):
                h.update(view[start:min(start + _FP_CHUNK, end)].tobytes().replace(b"\r", b""))
        return h.digest()[:16]
    end = _rstripped_len(raw)
    # A large message is hashed a piece at a time: the same digest, without two copies of it.
    view = memoryview(raw)
    start = 0
    while start < end:
        stop = min(start + _FP_CHUNK, end)
        if stop < end and raw[stop - 1] == 13:  # keep a CR with the LF that may follow it
            stop -= 1
        h.update(_lf(view[start:stop].tobytes()))
        start = stop
    return h.digest()[:16]


_FP_CHUNK = 256 * 1024
_BARE_CR = re.compile(rb"\r(?!\n)")


def _lf(b: bytes) -> bytes:
    return b.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _rstripped_len(raw: bytes) -> int:
    """len(raw.rstrip()) without copying raw: only a tail is looked at (longer while it is all blank)."""
    tail = 4096
    while True:
        t = raw[-tail:]
        kept = len(t.rstrip())
        if kept or tail >= len(raw):
            return len(raw) - len(t) + kept
        tail *= 16


def normalise_flag(flag: str | bytes) -> str | None:
    """Canonical spelling; None for flags that cannot be carried (\\Recent is session state)."""
    if isinstance(flag, bytes):
        flag = flag.decode("utf-8", "replace")
    low = flag.lower()
    if low == "\\recent" or not flag:
        return None
    return _SYSTEM_BY_LOWER.get(low, flag)


def source_flags(flags: Iterable[str | bytes]) -> tuple[str, ...]:
    return tuple(sorted({f for f in (normalise_flag(x) for x in flags) if f}))


def storable(flags: Iterable[str], permanent: frozenset[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split flags into (kept, dropped) by the target's PERMANENTFLAGS.

    None means the target did not say: keep every RFC 3501 flag and let it refuse.
    ``\\*`` allows any keyword.
    """
    lower = {p.lower() for p in permanent} if permanent is not None else set()
    any_keyword = "\\*" in lower
    kept, dropped = [], []
    for f in flags:
        # never anything but an atom: a flag is sent unquoted, so a CRLF in it would end the command
        ok = is_flag(f) and (permanent is None or f.lower() in lower or (any_keyword and not f.startswith("\\")))
        (kept if ok else dropped).append(f)
    return tuple(kept), tuple(dropped)


def merge_flags(base: Iterable[str], source: Iterable[str], target: Iterable[str]) -> set[str]:
    """Three-way merge: what the target should hold now.

    Per flag: if the user changed it on the target since the last agreed state
    (target differs from base) the user's choice stands; otherwise the source's
    current state is carried over.
    """
    base_s, src_s, tgt_s = set(base), set(source), set(target)
    out = set()
    for f in base_s | src_s | tgt_s:
        user_changed = (f in tgt_s) != (f in base_s)
        if (f in tgt_s) if user_changed else (f in src_s):
            out.add(f)
    return out


def batches(sizes: Sequence[tuple[int, int]], max_count: int, max_bytes: int) -> Iterator[list[tuple[int, int]]]:
    """Group (uid, size) pairs in UID order; a message larger than max_bytes travels alone."""
    cur: list[tuple[int, int]] = []
    cur_bytes = 0
    for uid, size in sizes:
        if cur and (len(cur) >= max_count or cur_bytes + size > max_bytes):
            yield cur
            cur, cur_bytes = [], 0
        cur.append((uid, size))
        cur_bytes += size
    if cur:
        yield cur


def match_fingerprints(wanted: Iterable[tuple[Hashable, bytes]],
                       found: Iterable[tuple[int, bytes]]) -> dict[Hashable, int]:
    """Pair each wanted (key, fp) with a distinct found (uid, fp); lowest UIDs first."""
    pool: dict[bytes, list[int]] = defaultdict(list)
    for uid, fp in sorted(found):
        pool[fp].append(uid)
    out = {}
    for key, fp in wanted:
        uids = pool.get(fp)
        if uids:
            out[key] = uids.pop(0)
    return out


class Mark:
    """A folder's mark (every source UID at or below it is done) when batches land in any order.

    ``listed``: the UIDs above the mark the source lists now; ``left``: those still to copy.  A
    listed UID that is not left is done already (mapped or skipped by an earlier, out-of-order
    pass); a UID the source does not list is a gap.  ``done(uids)`` says the new mark: just below
    the lowest UID still left, or the highest listed once nothing is.

    A folder is listed a UID window at a time (``extend``, each window above the ones before), by
    the fetching thread while the writing thread calls ``done``: hence the lock.  Only the UIDs of
    the windows listed and not yet done are held.
    """

    def __init__(self, mark: int, listed: Iterable[int] = (), left: Iterable[int] = ()):
        self._lock = threading.Lock()
        self._left: set[int] = set()
        self._heap: list[int] = []      # removed UIDs are skipped lazily
        self._top = mark
        self.mark = mark
        self.extend(listed, left)

    def reserve(self, lo: int) -> None:
        """A window from ``lo`` is handed out but not listed yet (several lanes list windows at once):
        the mark stays below ``lo`` until its ``extend(..., reserved=lo)``."""
        with self._lock:
            self._left.add(lo)
            heapq.heappush(self._heap, lo)

    def extend(self, listed: Iterable[int], left: Iterable[int], reserved: int | None = None) -> int:
        """Add a window's listing: the next one above every one listed before, or the one ``reserve``d
        from ``reserved`` (windows reserved in UID order may be listed in any order)."""
        new = set(left)
        top = max((u for u in listed if u > self.mark), default=0)
        with self._lock:
            if reserved is not None:
                self._left.discard(reserved)
            self._left |= new
            for u in sorted(new):
                heapq.heappush(self._heap, u)
            self._top = max(self._top, top)
            self.mark = self._now(self.mark)
            return self.mark

    def _now(self, mark: int) -> int:
        while self._heap and self._heap[0] not in self._left:
            heapq.heappop(self._heap)
        return max(mark, self._heap[0] - 1 if self._heap else self._top)

    def done(self, uids: Iterable[int]) -> int:
        with self._lock:
            self._left.difference_update(uids)
            self.mark = self._now(self.mark)
            return self.mark


MAX_UID = 2**32 - 1


def next_span(span: int, count: int, want: int) -> int:
    """The next UID window's width: about ``want`` messages at the density the last window (``span``
    UIDs, ``count`` messages) showed; at most 8x wider a step, so that a dense run after a sparse one
    stays near ``want``, and never narrower than ``want`` (``count`` <= ``span``)."""
    return max(want, min(span * 8, span * want // max(count, 1), MAX_UID))


def bounded_uids(uids: Iterable, uidnext: int | None) -> set[int]:
    """The UIDs of a source's SEARCH answer that can be real: integers in 1..UIDNEXT-1 (the source is hostile)."""
    hi = uidnext - 1 if uidnext else 2**32 - 1
    return {u for u in uids if isinstance(u, int) and not isinstance(u, bool) and 1 <= u <= hi}
