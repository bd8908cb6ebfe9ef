"""prefetched(): one batch read ahead of the one being written, never more (issue 16: flat memory).

Pure and in-process.  The writer of each batch waits until the reader has gone as far as it may:
it holds three batches (the bound broken), it is done, or it is blocked on a queue that cannot let it go on
(empty to take from, or full to put into).  No sleeps decide anything; a hang fails on the deadline.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from types import SimpleNamespace

import pytest

from mailsyncd.sync import appender
from mailsyncd.sync.appender import prefetched

NAME = "fetch test"


def test_at_most_one_batch_is_read_ahead_of_the_one_written(monkeypatch):
    cond = threading.Condition()
    held: set[int] = set()
    most = [0]
    blocked_on: list = [None]      # (operation, queue) the reader is in, while it is in one

    def reader_is(op, q):
        if threading.current_thread().name == NAME:
            with cond:
                blocked_on[0] = (op, q) if op else None
                cond.notify_all()

    class Watched(queue.Queue):
        def get(self, *a, **kw):
            reader_is("get", self)
            try:
                return super().get(*a, **kw)
            finally:
                reader_is(None, None)

        def put(self, item, *a, **kw):
            reader_is("put", self)
            try:
                return super().put(item, *a, **kw)
            finally:
                reader_is(None, None)

    monkeypatch.setattr(appender, "queue", SimpleNamespace(Queue=Watched, Full=queue.Full))

    def read(b):
        with cond:
            held.add(b)
            most[0] = max(most[0], len(held))
            cond.notify_all()
        return b

    def stuck() -> bool:
        if not any(t.name == NAME and t.is_alive() for t in threading.enumerate()):
            return True     # the reader is done
        if blocked_on[0] is None:
            return False
        op, q = blocked_on[0]
        return q.empty() if op == "get" else q.full()

    written = []

    def write(b):
        deadline = time.monotonic() + 30
        with cond:
            while len(held) < 3 and not stuck():
                assert time.monotonic() < deadline, "the reader neither read ahead nor waited"
                cond.wait(0.05)
            held.discard(b)
        written.append(b)

    prefetched(iter(range(1, 9)), read, write, threading.Event(), NAME)
    assert written == list(range(1, 9))
    assert most[0] == 2, f"{most[0]} batches held at once"


def test_a_written_batch_is_let_go_before_the_next_is_waited_for(monkeypatch):
    """A source slower than the target: the writer waits for the next batch; the one it wrote (message
    bodies, up to sync.batch_bytes a connection) is no longer held meanwhile."""
    class Batch:
        def __init__(self, n):
            self.n = n

    writer = threading.current_thread()
    last: list = []         # a weak reference to the batch written last
    held_while_waiting = []

    class Watched(queue.Queue):
        def get(self, *a, **kw):
            if threading.current_thread() is writer and last:
                held_while_waiting.append(last[-1]() is not None)
            return super().get(*a, **kw)

    monkeypatch.setattr(appender, "queue", SimpleNamespace(Queue=Watched, Full=queue.Full))
    written = []

    def write(batch):
        written.append(batch.n)
        last.append(weakref.ref(batch))

    prefetched(iter(range(1, 6)), Batch, write, threading.Event(), NAME)
    assert written == [1, 2, 3, 4, 5]
    assert held_while_waiting == [False] * 5


def test_a_failing_read_stops_the_writer_and_is_raised():
    def read(b):
        if b == 3:
            raise ValueError("source went away")
        return b
    written = []
    with pytest.raises(ValueError, match="went away"):
        prefetched(iter(range(1, 6)), read, written.append, threading.Event(), NAME)
    assert written == [1, 2]


def test_a_failing_write_stops_the_reader():
    reads = []

    def read(b):
        reads.append(b)
        return b

    def write(b):
        raise OSError("target went away")
    with pytest.raises(OSError, match="target went away"):
        prefetched(iter(range(1, 100)), read, write, threading.Event(), NAME)
    assert len(reads) <= 2
