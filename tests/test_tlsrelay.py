"""BulkTLS (proxy/tlsrelay.py): a large write leaves as ONE socket write, byte-exact for the peer."""

import os
import select
import socket

import pytest
from OpenSSL import SSL
from twisted.internet import protocol, ssl, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailsyncd.proxy import tls
from mailsyncd.proxy.tlsrelay import BulkTLS, BulkTLSFactory
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


# -- STARTTLS on a real TCP connection (the front door's 143 port) ------------------------------------

class _Wire:
    """A real loopback TCP connection whose server end is Twisted's tcp.Server, moved by hand:
    no reactor runs, the test calls doRead/doWrite (MemoryReactor only records the fd set)."""

    def __init__(self, protocol_, clock):
        self.clock = clock
        lsn = socket.create_server(("127.0.0.1", 0))
        self.peer = socket.create_connection(lsn.getsockname())
        sock, addr = lsn.accept()
        lsn.close()
        sock.setblocking(False)
        self.peer.setblocking(False)
        port = type("Port", (), {"_realPortNumber": 143})()
        self.server = tcp.Server(sock, protocol_, addr, port, 1, MemoryReactor())
        self.server.sends = 0
        send = self.server.socket.send

        def counted(data):
            self.server.sends += 1
            return send(data)
        self.server.socket = _SendCounter(self.server.socket, counted)
        protocol_.makeConnection(self.server)

    def flush_server(self) -> bytes:
        """Everything the server has written so far, as the client socket receives it."""
        self.clock.advance(0)                      # BufferingTLSTransport's small writes: the next turn
        out = bytearray()
        while self.server.dataBuffer[self.server.offset:] or self.server._tempDataBuffer or self._readable():
            if self.server.dataBuffer[self.server.offset:] or self.server._tempDataBuffer:
                self.server.doWrite()
            try:
                while chunk := self.peer.recv(1 << 20):
                    out += chunk
            except BlockingIOError:
                pass
        return bytes(out)

    def _readable(self) -> bool:
        return bool(select.select([self.peer], [], [], 0.05)[0])

    def to_server(self, data: bytes) -> None:
        self.peer.sendall(data)
        select.select([self.server.socket], [], [], 1.0)
        self.server.doRead()

    def close(self) -> None:
        self.peer.close()
        self.server.socket.close()


class _SendCounter:
    def __init__(self, sock, send):
        self._sock, self.send = sock, send

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_starttls_runs_through_bulk_tls_and_drops_pipelined_plaintext(tmp_path):
    from test_frontdoor_policy import Env
    cert, key = make_test_cert(str(tmp_path))
    env = Env(tmp_path, plaintext=False, tls_options=tls.server_options(cert, key))
    proto = env.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    proto.callLater = env.reactor.callLater
    wire = _Wire(proto, env.reactor)
    try:
        assert b"STARTTLS" in wire.flush_server()
        wire.to_server(b"a STARTTLS\r\nb LOGIN alice@example.com injected\r\n")
        assert wire.flush_server() == b"a OK Begin TLS negotiation now.\r\n"
        assert type(wire.server.protocol) is BulkTLS        # Twisted's own class before: 16 KB per write
        client = TLSMemoryBIOFactory(ssl.CertificateOptions(verify=False), True,
                                     protocol.Factory.forProtocol(Collect), env.reactor).buildProtocol(None)
        client.makeConnection(StringTransport())
        for _ in range(10):                                   # the handshake
            if client.transport.value():
                data = client.transport.value()
                client.transport.clear()
                wire.to_server(data)
            if data := wire.flush_server():
                client.dataReceived(data)
        assert client._handshakeDone
        client.write(b"c CAPABILITY\r\n")
        env.reactor.advance(0)
        wire.to_server(client.transport.value())
        client.transport.clear()
        client.dataReceived(wire.flush_server())
        caps = bytes(client.wrappedProtocol.got)
        assert caps.endswith(b"c OK Pre-login capabilities listed.\r\n") and b"AUTH=PLAIN" in caps
        assert env.gate.calls == []                           # the plaintext LOGIN never ran
        # A relayed read from the target: one socket send, byte-exact at the client.
        client.wrappedProtocol.got.clear()
        payload = os.urandom(300_000)
        wire.server.sends = 0
        proto.transport.write(payload)
        client.dataReceived(wire.flush_server())
        assert bytes(client.wrappedProtocol.got) == payload
        assert wire.server.sends <= 3                         # <= SEND_LIMIT pieces, not one per record
    finally:
        wire.close()
