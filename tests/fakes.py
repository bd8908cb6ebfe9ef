"""In-process stand-ins for the reactor's clock, its thread pools and a client's socket.

Policy (throttles, deadlines, caps, the scheduler's timers) is tested with these instead of real
sleeps and threads: time moves only when a test calls ``advance``, and "thread" work runs at once,
in order (Synapse's tests/server.py ThreadPool, simplified), so a test sees every step.
"""

from __future__ import annotations

from twisted.internet import address, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure


class FakeReactor(task.Clock):
    """A fake clock that is also enough of a reactor for ``threads.deferToThreadPool``."""

    def callFromThread(self, f, *args, **kw):
        f(*args, **kw)


class SyncPool:
    """Runs "thread" work at once; with ``hold`` set it queues the work until ``release``."""

    def __init__(self):
        self.hold = False
        self.queue: list = []

    def callInThread(self, fn, *args, **kw):
        self.callInThreadWithCallback(None, fn, *args, **kw)

    def callInThreadWithCallback(self, on_result, fn, *args, **kw):
        def run():
            try:
                res = fn(*args, **kw)
            except BaseException:
                ok, res = False, Failure()
            else:
                ok = True
            if on_result is not None:
                on_result(ok, res)
        if self.hold:
            self.queue.append(run)
        else:
            run()

    def release(self):
        self.hold = False
        while self.queue:
            self.queue.pop(0)()


class HeldPool:
    """Keeps every piece of work until the test ends it with ``result_for(first argument)`` (a sync pass)."""

    def __init__(self, result_for):
        self.result_for = result_for
        self.held: list = []      # (on_result, the work's first argument)

    def callInThreadWithCallback(self, on_result, fn, *args, **kw):
        self.held.append((on_result, args[0]))

    def finish(self) -> list:
        """End every held piece; returns their first arguments."""
        done, self.held = self.held, []
        for on_result, first in done:
            on_result(True, self.result_for(first))
        return [first for _, first in done]


class ClientTransport(StringTransport):
    """A client's connection as the server side sees it: bytes written, pause/close and STARTTLS recorded."""

    def __init__(self, ip: str = "203.0.113.7", port: int = 50000):
        super().__init__(peerAddress=address.IPv4Address("TCP", ip, port),
                         hostAddress=address.IPv4Address("TCP", "127.0.0.1", 143))
        self.tls_started = None

    def startTLS(self, options):
        self.tls_started = options

    def lines(self) -> list[bytes]:
        return self.value().split(b"\r\n")[:-1]
