"""BulkTLS (proxy/tlsrelay.py): a large write leaves as ONE socket write, byte-exact for the peer."""

import os

import pytest
from OpenSSL import SSL
from twisted.internet import protocol, ssl
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailsyncd.proxy import tls
from mailsyncd.proxy.tlsrelay import BulkTLSFactory
from mailsyncd.testing import make_test_cert


class Collect(protocol.Protocol):
    def __init__(self):
        self.got = bytearray()

    def dataReceived(self, data):
        self.got += data


class CountingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


def _pump(a, b):
    """Move bytes both ways until neither side has anything left to say."""
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.transport.value()
            if data:
                src.transport.clear()
                dst.dataReceived(data)
                moved = True


@pytest.fixture
def pair(tmp_path):
    cert, key = make_test_cert(str(tmp_path))
    addr = IPv4Address("TCP", "127.0.0.1", 1)
    server = BulkTLSFactory(tls.server_options(cert, key), False, protocol.Factory.forProtocol(Collect))
    client = TLSMemoryBIOFactory(ssl.CertificateOptions(verify=False), True, protocol.Factory.forProtocol(Collect))
    clock = Clock()
    server._clock = client._clock = clock    # the small-write aggregator's next reactor turn
    s, c = server.buildProtocol(addr), client.buildProtocol(addr)
    s.makeConnection(CountingTransport())
    c.makeConnection(CountingTransport())
    _pump(c, s)
    assert s._handshakeDone and c._handshakeDone
    return s, c, clock


# Above the 64,000 bytes that Twisted's write aggregator holds for the next reactor turn.
@pytest.mark.parametrize("size", [64_001, 2 ** 18 + 7, 3 * 2 ** 20])
def test_large_write_is_one_socket_write_and_byte_exact(pair, size):
    s, c, _ = pair
    payload = os.urandom(size)
    s.transport.writes = 0
    s.write(payload)
    assert s.transport.writes == 1           # Twisted's own class: one per 16 KB record
    wire = s.transport.value()
    assert len(wire) > size                  # encrypted: record headers and tags added
    _pump(s, c)
    assert bytes(c.wrappedProtocol.got) == payload


def test_both_directions_after_bulk_writes(pair):
    s, c, clock = pair
    for k in range(3):
        s.write(bytes([k]) * 100_000)
        s.write(b"* small %d\r\n" % k)       # <= 16 KB: Twisted's own path, after the next reactor turn
        c.write(b"A%d NOOP\r\n" % k)
        clock.advance(0)
        _pump(s, c)
    assert bytes(c.wrappedProtocol.got) == b"".join(bytes([k]) * 100_000 + b"* small %d\r\n" % k for k in range(3))
    assert bytes(s.wrappedProtocol.got) == b"A0 NOOP\r\nA1 NOOP\r\nA2 NOOP\r\n"


def test_write_after_peer_closed_does_not_raise(pair):
    s, c, _ = pair
    s._tlsConnection.set_shutdown(SSL.SENT_SHUTDOWN)
    s._lostTLSConnection = True
    s.write(b"x" * 100_000)                  # dropped, as Twisted's own class does
    assert s.transport.value() == b""
