"""The target's bytes that arrive between its login's OK and the splice to the client are kept, in order."""

from __future__ import annotations

from mailsyncd.imap.targetlogin import Done
from mailsyncd.proxy.backend import TargetProtocol


class _Login:
    def receive(self, data):
        return [Done("IMAP4rev1", b"* 1 EXISTS\r\n")]


class _Transport:
    def __init__(self):
        self.paused = self.resumed = 0

    def pauseProducing(self):
        self.paused += 1

    def resumeProducing(self):
        self.resumed += 1


def test_bytes_before_the_splice_are_kept_in_order_and_a_flood_pauses_the_target():
    p = TargetProtocol(_Login(), endpoint=None)
    p.transport = _Transport()
    got = []
    p.ready.addCallback(got.append)
    p.dataReceived(b"a OK logged in\r\n")
    assert got and got[0][2] == b"* 1 EXISTS\r\n"
    p.dataReceived(b"* 2 EXISTS\r\n")              # the old code: AttributeError on the dropped login
    p.dataReceived(b"* 3 EXISTS\r\n")
    assert p.take_early() == b"* 2 EXISTS\r\n* 3 EXISTS\r\n" and p.take_early() == b""
    p.dataReceived(b"x" * (2 << 20))
    assert p.transport.paused == 1
    p.take_early()
    assert p.transport.resumed >= 1
