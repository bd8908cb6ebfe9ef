"""The folder the user opens goes next: one pass's queue of folders to copy before its planned order.

Shared by two threads: the scheduler (reactor) pushes folders, the pass's workers (sync threads)
take them before their planned order and post what they learn back: how many messages each folder
still lacks once the pass has planned, and when a folder is done.  ``notify`` is called (from the
pass's threads) after each change; the scheduler reads the answers on the reactor.  When every
worker is busy with a long folder, ``grant`` (reactor) has the pass start one more worker that
copies only queued folders (the scheduler counts its connection against the host's budget).

A request is answered only by a copy whose source snapshot (the STATUS the job copies up to) was taken
after the request: mail may have arrived in between.  Requests and snapshots are ordered by one counter
(``_seq``), under the lock both threads share, so no clock is needed: a request's ticket is the counter
after it, a snapshot's the counter when it was taken; the snapshot is newer when its number is not smaller.
A folder the pass copied (or is copying) from an older snapshot is taken again, its STATUS asked anew
(``fresh``).

A key is a source path (str, what the copy plans by) or ``ByTarget(name)``: the name a client
SELECTs, which only the pass's plan can turn into a source path when no copy has recorded it yet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ByTarget:
    name: str

    def matches(self, target: str) -> bool:
        if self.name.upper() == "INBOX":
            return target.upper() == "INBOX"
        return self.name == target


@dataclass(frozen=True, slots=True)
class FocusResult:
    """What became of a focused folder: done, failed, stopped, or absent (no such source folder)."""
    state: str
    path: str | None = None
    detail: str | None = None
    copied: int | None = None      # messages the copy added (None: not known)


class FocusQueue:
    def __init__(self, keys: Iterable = (), *, only: bool = False, notify: Callable[[], None] | None = None):
        self.only = only                    # a focused pass: copy nothing but the queued folders
        self.notify = notify or (lambda: None)
        self._lock = threading.Lock()
        self._wanted: list = list(dict.fromkeys(keys))
        self._seq = 0                       # requests pushed so far (keys given at creation: 0)
        self._tickets: dict = {}            # key -> the ticket of its latest request
        self._snap: int | None = None       # the pass's LIST-STATUS snapshot
        self._snaps: dict[str, int] = {}    # source path -> snapshot of its latest job taken here
        self._fresh: set[str] = set()       # paths taken again: their job must ask STATUS anew
        self._targets: dict[str, str] | None = None   # target name -> source path, once planned
        self._paths: set[str] = set()
        self._left: dict[str, int] = {}     # source path -> messages this pass expects to copy
        self._finished: dict[str, tuple] = {}   # source path -> (error or None: copied, snapshot, messages copied)
        self._spawn: Callable[[], bool] | None = None  # the pass's: start one more worker for this queue

    # -- the reactor's side ----------------------------------------------------------
    def push(self, key) -> int:
        """Queue ``key``; returns the request's ticket (for ``finished``)."""
        with self._lock:
            if key in self._wanted:
                self._wanted.remove(key)
            self._wanted.insert(0, key)     # the latest opened folder is the one the user looks at
            self._seq += 1
            self._tickets[key] = self._seq
            return self._seq

    def grant(self) -> bool:
        """One more connection for this queue: the pass starts a worker that copies only queued folders.
        False when the pass takes no more workers (not started yet, or ending)."""
        with self._lock:
            spawn = self._spawn
        return spawn() if spawn is not None else False   # not under our lock: the worker takes it

    @property
    def planned(self) -> bool:
        with self._lock:
            return self._targets is not None

    def resolve(self, key) -> str | None:
        """The source path of ``key``; None before the pass has planned or when no source folder is it."""
        with self._lock:
            return self._resolve(key)

    def left(self, path: str) -> int | None:
        with self._lock:
            return self._left.get(path)

    def finished(self, path: str, ticket: int = 0) -> tuple[bool, str | None]:
        """Has a copy of ``path`` whose snapshot is not older than the request ``ticket`` finished?"""
        with self._lock:
            error, snap, _n = self._finished.get(path, (None, -1, None))
            return snap >= ticket, error

    def copied(self, path: str) -> int | None:
        """Messages the latest finished copy of ``path`` added (None: none finished)."""
        with self._lock:
            return self._finished.get(path, (None, -1, None))[2]

    # -- the pass's side -----------------------------------------------------------------
    def _resolve(self, key) -> str | None:
        if self._targets is None:
            return None
        if isinstance(key, ByTarget):
            for target, path in self._targets.items():
                if key.matches(target):
                    return path
            return None
        return key if key in self._paths else None

    def names(self, path: str, target: str) -> bool:
        """Is the planned folder ``path`` (copied to ``target``) one of the queued?"""
        with self._lock:
            return any(k == path if isinstance(k, str) else k.matches(target) for k in self._wanted)

    def snapshot(self) -> None:
        """The pass is about to LIST-STATUS the source: requests made after this need a newer STATUS."""
        with self._lock:
            self._snap = self._seq

    def plan(self, targets: dict[str, str], left: dict[str, int]) -> None:
        """The pass has planned: ``targets`` maps every planned target name to its source path."""
        with self._lock:
            if self._snap is None:
                self._snap = self._seq
            self._targets = dict(targets)
            self._paths = set(targets.values())
            self._left.update(left)
        self.notify()

    def attach(self, spawn: Callable[[], bool] | None) -> None:
        with self._lock:
            self._spawn = spawn

    def waiting(self) -> bool:
        with self._lock:
            return bool(self._wanted)

    def take(self, pending: dict, planned: dict | None = None):
        """The next queued folder's job out of ``pending`` (source path -> job), or None.  A folder
        already copied from a snapshot older than its request comes again out of ``planned`` (every job
        of the pass); one being copied from such a snapshot stays queued until that copy ends."""
        with self._lock:
            busy = []
            job = None
            while self._wanted and job is None:
                key = self._wanted.pop(0)
                path = self._resolve(key)
                if path is None:
                    continue                # no source folder: the scheduler answers its waiters
                newer = self._tickets.get(key, 0) > self._snaps.get(path, self._snap or 0)
                if path in pending:
                    job = pending.pop(path)
                elif not newer:
                    continue                # copied, or being copied, from a snapshot after the request
                elif path in self._finished and planned is not None and path in planned:
                    job = planned[path]
                    del self._finished[path]
                else:
                    busy.append(key)        # its copy runs now: take it again once that ends
                    continue
                if newer:
                    self._snaps[path] = self._seq   # the job's STATUS comes after this
                    self._fresh.add(path)
            self._wanted[:0] = busy
        return job

    def fresh(self, path: str) -> bool:
        """Must the job just taken for ``path`` ask the source's STATUS anew (the plan's is too old)?"""
        with self._lock:
            if path in self._fresh:
                self._fresh.discard(path)
                return True
            return False

    def done(self, path: str, error: str | None, copied: int | None = None) -> None:
        with self._lock:
            self._finished[path] = (error, self._snaps.get(path, self._snap or 0), copied)
            if error is None:
                self._left[path] = 0
        self.notify()
