"""Twisted's TLS memory-BIO transport, with bulk writes: one BIO read and one socket write per write.

``TLSMemoryBIOProtocol._write`` hands OpenSSL 16 KB at a time and moves each record to the
socket on its own (a slice, a ``send``, a 32 KB ``bio_read``, a ``transport.write`` per 16 KB).
A relayed 64 KB socket read thus pays four times for the BIO and transport layers; here the
records stay in the memory BIO (which never blocks) until the whole write is encrypted, then
leave in one read, straight into the socket when nothing is queued before them.  The wire sees
the same 16 KB records.  Used by the implicit-TLS listeners (``BulkTLSFactory``) and by STARTTLS
(``start_tls``).
"""

from __future__ import annotations

from OpenSSL.SSL import Error, WantReadError
from twisted.internet import _newtls, tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides

RECORD = 2 ** 14
# Per 16 KB record at most: 5 header + 16 tag + 1 inner type (TLS 1.3) or 8 explicit nonce (TLS 1.2).
RECORD_OVERHEAD = 64


class BulkTLS(BufferingTLSTransport):
    _socket: tcp.Connection | None = None

    def _write(self, data) -> None:
        if len(data) <= RECORD:
            super()._write(data)
            return
        if self._lostTLSConnection:
            return
        view, done = memoryview(data), 0
        while done < len(data):
            try:
                # pyOpenSSL sets SSL_MODE_ENABLE_PARTIAL_WRITE: each call may take one record only.
                done += self._tlsConnection.send(view[done:])
            except WantReadError:
                # Mid-renegotiation: buffered like the base class does; resent by _unbufferPendingWrites.
                self._bufferedWrite(data[done:])
                break
            except Error:
                self._tlsShutdownFinished(Failure())
                return
        self._flushAllSendBIO(done + (done // RECORD + 1) * RECORD_OVERHEAD)

    def _flushAllSendBIO(self, expect: int) -> None:
        chunks = []
        while True:
            try:
                chunk = self._tlsConnection.bio_read(expect)
            except WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < expect:
                break
        if chunks:
            self._send(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def makeConnection(self, transport) -> None:
        self._socket = _socket_under(transport)
        super().makeConnection(transport)

    def _send(self, data: bytes) -> None:
        """``transport.write``, but into the socket at once when nothing is queued before it.

        Twisted's write only queues: the socket is written at the reactor's next turn, after an
        ``epoll_ctl`` to watch it and another to stop, and the queue's joins copy the bytes.  Per
        relayed read that was 1.7-2.4 sends, 2 epoll_ctl, 0.8-2.3 brk (bench/README.md, session 4).  What the socket
        does not take is queued as before, so order and the write-buffer mark (backpressure) hold.
        """
        fd = self._socket
        if (fd is not None and fd.connected and not fd.disconnecting and not fd._writeDisconnecting
                and not fd._tempDataBuffer and fd.offset == len(fd.dataBuffer)):
            try:
                sent = fd.socket.send(data)
            except OSError:         # EAGAIN; or a broken connection, which the queued write reports as usual
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self.transport.write(data)


class BulkTLSFactory(TLSMemoryBIOFactory):
    protocol = BulkTLS


def _socket_under(transport) -> tcp.Connection | None:
    """The TCP connection whose socket takes this layer's bytes unchanged, or None (then: write)."""
    if isinstance(transport, _newtls._BypassTLS):      # STARTTLS: the connection's raw path
        transport = transport._connection
        return transport if isinstance(transport, tcp.Connection) else None
    while isinstance(transport, ProtocolWrapper) and type(transport).write is ProtocolWrapper.write:
        transport = transport.transport               # a PROXY-header listener passes writes through
    # .TLS: a connection that was STARTTLSed writes through TLS; its raw socket is not ours to write
    return transport if isinstance(transport, tcp.Connection) and not transport.TLS else None


def start_tls(transport, options, clock=None) -> None:
    """Server-side STARTTLS on ``transport`` with BulkTLS as its TLS layer.

    ``transport.startTLS`` (twisted.internet._newtls.startTLS) builds Twisted's own class, named in
    its body; this is the same steps with our factory.  A transport that is not Twisted's TCP
    connection (another reactor's, a test's) gets its own ``startTLS``.  ``clock``: the reactor
    whose next turn sends the small writes aggregated meanwhile (None: the global reactor).
    """
    if not isinstance(transport, _newtls.ConnectionMixin):
        transport.startTLS(options)
        return
    producer, streaming = transport.producer, transport.streamingProducer
    if producer is not None:
        transport.unregisterProducer()
    factory = BulkTLSFactory(options, False, None, clock)
    tls = factory.protocol(factory, transport.protocol, False)   # False: the protocol is connected already
    transport.protocol = tls
    transport.getHandle = tls.getHandle
    transport.getPeerCertificate = tls.getPeerCertificate
    directlyProvides(transport, ISSLTransport)
    transport.TLS = True                        # write/loseConnection/registerProducer now go through tls
    tls.makeConnection(_newtls._BypassTLS(FileDescriptor, transport))
    if producer is not None:
        transport.registerProducer(producer, streaming)
