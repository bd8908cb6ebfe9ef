"""The folder the user opens goes next: one pass's queue of folders to copy before its planned order.

Shared by two threads: the scheduler (reactor) pushes folders, the pass's workers (sync threads)
take them before their planned order and post what they learn back: how many messages each folder
still lacks once the pass has planned, and when a folder is done.  ``notify`` is called (from the
pass's threads) after each change; the scheduler reads the answers on the reactor.  When every
worker is busy with a long folder, ``grant`` (reactor) has the pass start one more worker that
copies only queued folders (the scheduler counts its connection against the host's budget).

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


class FocusQueue:
    def __init__(self, keys: Iterable = (), *, only: bool = False, notify: Callable[[], None] | None = None):
        self.only = only                    # a focused pass: copy nothing but the queued folders
        self.notify = notify or (lambda: None)
        self._lock = threading.Lock()
        self._wanted: list = list(dict.fromkeys(keys))
        self._targets: dict[str, str] | None = None   # target name -> source path, once planned
        self._paths: set[str] = set()
        self._left: dict[str, int] = {}     # source path -> messages this pass expects to copy
        self._finished: dict[str, str | None] = {}    # source path -> error (None: copied)
        self._spawn: Callable[[], bool] | None = None  # the pass's: start one more worker for this queue

    # -- the reactor's side ----------------------------------------------------------
    def push(self, key) -> None:
        with self._lock:
            if key in self._wanted:
                self._wanted.remove(key)
            self._wanted.insert(0, key)     # the latest opened folder is the one the user looks at

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

    def finished(self, path: str) -> tuple[bool, str | None]:
        with self._lock:
            return path in self._finished, self._finished.get(path)

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

    def plan(self, targets: dict[str, str], left: dict[str, int]) -> None:
        """The pass has planned: ``targets`` maps every planned target name to its source path."""
        with self._lock:
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

    def take(self, pending: dict):
        """The next queued folder's job out of ``pending`` (source path -> job), or None."""
        with self._lock:
            while self._wanted:
                key = self._wanted.pop(0)
                path = self._resolve(key)
                if path is not None and path in pending:
                    return pending.pop(path)
                # already taken by a worker, done, or no source folder: the scheduler answers its waiters
        return None

    def done(self, path: str, error: str | None) -> None:
        with self._lock:
            self._finished[path] = error
            if error is None:
                self._left[path] = 0
        self.notify()
