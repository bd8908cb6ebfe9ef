"""BulkTLS (proxy/tlsrelay.py): a large write leaves as ONE socket write, byte-exact for the peer."""

import os
import select
import socket
import ssl as ssl_

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


# -- on a real TCP connection: the socket layer under BulkTLS ----------------------------------------

class _Wire:
    """A real loopback TCP connection whose server end is Twisted's tcp.Server, moved by hand: no
    reactor runs, the test calls doRead/doWrite (MemoryReactor only records which fds it watches)."""

    def __init__(self, protocol_, clock, sndbuf: int | None = None):
        self.clock = clock
        lsn = socket.create_server(("127.0.0.1", 0))
        self.peer = socket.create_connection(lsn.getsockname())
        sock, addr = lsn.accept()
        lsn.close()
        if sndbuf:                                  # a client that is slow to read: little room in flight
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        sock.setblocking(False)
        self.peer.setblocking(False)
        self.reactor = MemoryReactor()
        port = type("Port", (), {"_realPortNumber": 143})()
        self.server = tcp.Server(sock, protocol_, addr, port, 1, self.reactor)
        self.server.sends = 0
        self.server.socket = _SendCounter(self.server, self.server.socket)
        protocol_.makeConnection(self.server)

    def queued(self) -> int:
        """Bytes the server transport holds that the socket has not taken."""
        s = self.server
        return len(s.dataBuffer) - s.offset + s._tempDataLen

    def flush_server(self) -> bytes:
        """Everything the server has written so far, as the client socket receives it."""
        self.clock.advance(0)                      # BufferingTLSTransport's small writes: the next turn
        out = bytearray()
        while self.queued() or select.select([self.peer], [], [], 0.05)[0]:
            if self.queued():
                self.server.doWrite()
            try:
                while chunk := self.peer.recv(1 << 20):
                    out += chunk
            except BlockingIOError:
                pass
        return bytes(out)

    def to_server(self, data: bytes) -> None:
        self.peer.sendall(data)
        select.select([self.server.socket], [], [], 1.0)
        self.server.doRead()

    def close(self) -> None:
        self.peer.close()
        self.server.socket.close()


class _SendCounter:
    def __init__(self, server, sock):
        self._server, self._sock = server, sock

    def send(self, data):
        self._server.sends += 1
        return self._sock.send(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _tls_client(clock):
    client = TLSMemoryBIOFactory(ssl.CertificateOptions(verify=False), True,
                                 protocol.Factory.forProtocol(Collect), clock).buildProtocol(None)
    client.makeConnection(StringTransport())
    return client


def _handshake(wire, client) -> None:
    for _ in range(10):
        if client.transport.value():
            data = client.transport.value()
            client.transport.clear()
            wire.to_server(data)
        if data := wire.flush_server():
            client.dataReceived(data)
    assert client._handshakeDone


def _implicit(tmp_path, **wire):
    cert, key = make_test_cert(str(tmp_path))
    clock = Clock()
    server = BulkTLSFactory(tls.server_options(cert, key), False, protocol.Factory.forProtocol(Collect), clock)
    w = _Wire(server.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000)), clock, **wire)
    client = _tls_client(clock)
    _handshake(w, client)
    return w, client


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
        client = _tls_client(env.reactor)
        _handshake(wire, client)
        client.write(b"c CAPABILITY\r\n")
        env.reactor.advance(0)
        wire.to_server(client.transport.value())
        client.transport.clear()
        client.dataReceived(wire.flush_server())
        caps = bytes(client.wrappedProtocol.got)
        assert caps.endswith(b"c OK Pre-login capabilities listed.\r\n") and b"AUTH=PLAIN" in caps
        assert env.gate.calls == []                           # the plaintext LOGIN never ran
        # A relayed read from the target: in the socket at once, byte-exact at the client.
        client.wrappedProtocol.got.clear()
        payload = os.urandom(200_000)
        wire.server.sends = 0
        proto.transport.write(payload)
        assert wire.server.sends == 1 and wire.queued() == 0
        assert wire.server not in wire.reactor.getWriters()  # nothing left for the reactor's next turn
        client.dataReceived(wire.flush_server())
        assert bytes(client.wrappedProtocol.got) == payload
    finally:
        wire.close()


def test_implicit_tls_large_write_goes_to_the_socket_at_once(tmp_path):
    wire, client = _implicit(tmp_path)
    try:
        tls_layer = wire.server.protocol
        payload = os.urandom(200_000)
        wire.server.sends = 0
        tls_layer.write(payload)
        assert wire.server.sends == 1 and wire.queued() == 0     # before: queued, sent at the next turn
        assert wire.server not in wire.reactor.getWriters()
        client.dataReceived(wire.flush_server())
        assert bytes(client.wrappedProtocol.got) == payload
    finally:
        wire.close()


class _Target:
    """The relay's other side as a push producer: it counts its pauses."""
    paused = False

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False

    def stopProducing(self):
        pass


def test_slow_client_pauses_the_target_and_order_is_kept(tmp_path):
    """The socket takes part of a write and the rest queues; later writes queue behind it, in order,
    and the queue stays bounded: over the transport's mark the target is paused (backpressure)."""
    wire, client = _implicit(tmp_path, sndbuf=16384)
    try:
        tls_layer, target = wire.server.protocol, _Target()
        wire.server.bufferSize = MARK = 2 ** 19           # frontdoor.CLIENT_BUFFER
        tls_layer.registerProducer(target, True)
        chunks, written = [], 0
        while not target.paused:                          # the target reads 256 KB at a time while let
            chunks.append(os.urandom(2 ** 18))
            tls_layer.write(chunks[-1])
            written += len(chunks[-1])
            assert written < 50 * 2 ** 20, "never paused: the daemon would buffer the whole FETCH"
        assert MARK < wire.queued() <= MARK + 2 ** 18 + 2 ** 16     # the mark plus one read and its records
        chunks.append(b"* small tail\r\n")
        tls_layer.write(chunks[-1])
        wire.clock.advance(0)
        got = bytearray()
        while wire.queued() or len(got) < written:
            wire.server.doWrite()
            client.dataReceived(wire.flush_server())
            got = client.wrappedProtocol.got
        assert not target.paused                          # resumed once the queue drained
        assert bytes(got) == b"".join(chunks)
    finally:
        wire.close()


# -- what one bulk write and one socket read cost (session 5) ---------------------------------------

def test_a_large_write_is_encrypted_by_one_ssl_write(pair):
    """Partial writes off: OpenSSL loops over the 16 KB records in C (before: a Python call per record)."""
    s, c, _ = pair
    conn, calls = s._tlsConnection, []
    real = conn.send
    conn.send = lambda buf, flags=0: (calls.append(len(buf)), real(buf, flags))[1]
    payload = os.urandom(2 ** 18 + 7)
    s.write(payload)
    assert calls == [len(payload)]
    _pump(s, c)
    assert bytes(c.wrappedProtocol.got) == payload


def test_an_upload_over_tls_goes_up_as_one_delivery_per_socket_read(tmp_path):
    """What one socket read decrypts to reaches the protocol at once (before: once per 16 KB record,
    and relayed to the target each would be a socket write of its own)."""
    wire, client = _implicit(tmp_path)
    try:
        app, deliveries = wire.server.protocol.wrappedProtocol, []
        real = app.dataReceived
        app.dataReceived = lambda data: (deliveries.append(len(data)), real(data))
        wire.server.bufferSize = 2 ** 20
        payload = os.urandom(100_000)                    # 7 records
        client.write(payload)
        wire.clock.advance(0)
        data = client.transport.value()
        wire.peer.sendall(data)
        while len(wire.server.socket.recv(2 ** 20, socket.MSG_PEEK)) < len(data):
            select.select([wire.server.socket], [], [], 0.05)
        wire.server.doRead()
        assert deliveries == [len(payload)] and bytes(app.got) == payload
    finally:
        wire.close()


def test_the_plaintext_relay_writes_straight_into_both_sockets(tmp_path):
    """After login, a plaintext session's relayed reads go into the other side's socket at once, in
    both directions (tlsrelay.write_now; before: queued for the reactor's next turn), byte-exact."""
    from test_frontdoor_policy import Env

    from mailsyncd.proxy.backend import TargetProtocol
    env = Env(tmp_path)
    proto = env.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    proto.callLater = env.reactor.callLater
    client = _Wire(proto, env.reactor)
    target = TargetProtocol(None, None)
    server = _Wire(target, env.reactor)                  # the target's connection: a real socket too
    try:
        assert client.flush_server().startswith(b"* OK")
        proto.splice(target, b"")
        down = os.urandom(200_000)
        client.server.sends = 0
        target.dataReceived(down)                        # a read from the target
        assert client.server.sends == 1 and client.queued() == 0
        assert client.server not in client.reactor.getWriters()
        assert client.flush_server() == down
        up = os.urandom(200_000)
        server.server.sends = 0
        proto.dataReceived(up)                           # a read from the client (an APPEND's literal)
        assert server.server.sends == 1 and server.queued() == 0
        assert server.server not in server.reactor.getWriters()
        assert server.flush_server() == up
    finally:
        client.close()
        server.close()


def _bio_handshake(server, client_do_handshake, client_in, client_out) -> None:
    for _ in range(10):
        for step in (client_do_handshake, server.do_handshake):
            try:
                step()
            except (SSL.WantReadError, ssl_.SSLWantReadError):
                pass
        if data := client_out():
            server.bio_write(data)
        try:
            client_in(server.bio_read(1 << 16))
        except SSL.WantReadError:
            pass
    assert server.get_cipher_name()


def _server(tmp_path):
    cert, key = make_test_cert(str(tmp_path))
    s = SSL.Connection(tls.server_options(cert, key).getContext(), None)
    s.set_accept_state()
    return s


def test_the_server_picks_aes128_gcm_and_chacha20_for_a_client_that_puts_it_first(tmp_path):
    """TLS 1.3 with a real client (Python's ssl, OpenSSL defaults): AES-128-GCM, the cheapest per byte
    with AES-NI (before: AES-256-GCM).  A client without AES hardware lists ChaCha20 first: it gets it."""
    ctx = ssl_.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl_.CERT_NONE
    inc, out = ssl_.MemoryBIO(), ssl_.MemoryBIO()
    std = ctx.wrap_bio(inc, out, server_hostname="localhost")
    server = _server(tmp_path)
    _bio_handshake(server, std.do_handshake, inc.write, out.read)
    assert std.version() == "TLSv1.3" and std.cipher()[0] == "TLS_AES_128_GCM_SHA256"
    assert server.get_cipher_name() == "TLS_AES_128_GCM_SHA256"

    cctx = SSL.Context(SSL.TLS_METHOD)
    cctx.set_tls13_ciphersuites(b"TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256")
    mobile = SSL.Connection(cctx, None)
    mobile.set_connect_state()
    server = _server(tmp_path)
    _bio_handshake(server, mobile.do_handshake, mobile.bio_write, lambda: _bio_drain(mobile))
    assert server.get_cipher_name() == mobile.get_cipher_name() == "TLS_CHACHA20_POLY1305_SHA256"

    ctx12 = ssl_.create_default_context()                # TLS 1.2: Twisted's AEAD list, unchanged
    ctx12.check_hostname, ctx12.verify_mode = False, ssl_.CERT_NONE
    ctx12.maximum_version = ssl_.TLSVersion.TLSv1_2
    inc, out = ssl_.MemoryBIO(), ssl_.MemoryBIO()
    old = ctx12.wrap_bio(inc, out, server_hostname="localhost")
    server = _server(tmp_path)
    _bio_handshake(server, old.do_handshake, inc.write, out.read)
    assert old.version() == "TLSv1.2" and ("GCM" in old.cipher()[0] or "CHACHA20" in old.cipher()[0])


def _bio_drain(conn) -> bytes:
    try:
        return conn.bio_read(1 << 16)
    except SSL.WantReadError:
        return b""


@pytest.mark.parametrize("size", [64_001, 3 * 2 ** 20])
def test_without_pyopenssls_private_handles_the_public_calls_still_give_one_socket_write(tmp_path, monkeypatch, size):
    """A later pyOpenSSL may drop ``OpenSSL._util`` or ``Connection._from_ssl``: BulkTLS then uses the
    public calls (a send per record), still byte-exact and still one socket write per write."""
    from mailsyncd.proxy import tlsrelay
    monkeypatch.setattr(tlsrelay, "_lib", None)
    cert, key = make_test_cert(str(tmp_path))
    addr = IPv4Address("TCP", "127.0.0.1", 1)
    server = BulkTLSFactory(tls.server_options(cert, key), False, protocol.Factory.forProtocol(Collect))
    client = TLSMemoryBIOFactory(ssl.CertificateOptions(verify=False), True, protocol.Factory.forProtocol(Collect))
    server._clock = client._clock = Clock()
    s, c = server.buildProtocol(addr), client.buildProtocol(addr)
    s.makeConnection(CountingTransport())
    c.makeConnection(CountingTransport())
    _pump(c, s)
    assert not s._one_call
    payload = os.urandom(size)
    s.transport.writes = 0
    s.write(payload)
    assert s.transport.writes == 1
    _pump(s, c)
    assert bytes(c.wrappedProtocol.got) == payload
