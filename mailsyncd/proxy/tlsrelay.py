"""Twisted's TLS memory-BIO transport, with bulk writes: one SSL_write and one socket write per write.

``TLSMemoryBIOProtocol._write`` hands OpenSSL 16 KB at a time and moves each record to the
socket on its own (a slice, a ``send``, a 32 KB ``bio_read``, a ``transport.write`` per 16 KB).
Here a large write is encrypted by one ``SSL_write`` (partial writes off: OpenSSL loops over the
records in C; the memory BIO never blocks), and the records leave the BIO through one reused
buffer straight into the socket when nothing is queued before them: no Python call per record,
no bytes object per write.  The wire sees the same 16 KB records.  Used by the implicit-TLS
listeners (``BulkTLSFactory``) and by STARTTLS (``start_tls``).
"""

from __future__ import annotations

from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
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

try:    # pyOpenSSL's private cffi handles: without them (a later pyOpenSSL), the public calls below
    from OpenSSL._util import ffi as _ffi, lib as _lib
    # The records of one relayed read (frontdoor.TARGET_READ) and more; one buffer for every session:
    # the reactor runs one write at a time and each leaves this buffer before the next begins.
    _OUT = _ffi.new("char[]", 2 ** 20)
    _OUT_VIEW = memoryview(_ffi.buffer(_OUT))
except (ImportError, AttributeError):
    _lib = None


class BulkTLS(BufferingTLSTransport):
    _socket: tcp.Connection | None = None
    _one_call = False       # makeConnection: pyOpenSSL's private handles are there (one SSL_write per write)

    def _write(self, data) -> None:
        if len(data) <= RECORD:
            super()._write(data)
            return
        if self._lostTLSConnection:
            return
        if not self._one_call:
            self._write_per_record(data)
            return
        try:
            # Partial writes are off (makeConnection): all of data, or an exception.
            self._tlsConnection.send(data)
        except WantReadError:
            # Mid-renegotiation: buffered like the base class does; _unbufferPendingWrites resends
            # all of it and OpenSSL, which counted the records it already wrote, goes on after them.
            # Those records (and the handshake's) leave now.
            self._bufferedWrite(data)
        except Error:
            self._tlsShutdownFinished(Failure())
            return
        self._flushAllSendBIO()

    def _write_per_record(self, data) -> None:
        """The same with pyOpenSSL's public calls only: one ``send`` per record (partial writes on),
        the records read out of the BIO together, still one socket write."""
        view, done = memoryview(data), 0
        while done < len(data):
            try:
                done += self._tlsConnection.send(view[done:])
            except WantReadError:
                self._bufferedWrite(data[done:])
                break
            except Error:
                self._tlsShutdownFinished(Failure())
                return
        expect, chunks = done + (done // RECORD + 1) * RECORD_OVERHEAD, []
        while True:
            try:
                chunk = self._tlsConnection.bio_read(expect)
            except WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < expect:
                break
        if chunks:
            self._send(memoryview(chunks[0] if len(chunks) == 1 else b"".join(chunks)))

    def _flushAllSendBIO(self) -> None:
        n = _lib.BIO_read(self._tlsConnection._from_ssl, _OUT, len(_OUT_VIEW))
        if n <= 0:                         # empty (a memory BIO says so with -1 and "retry")
            return
        if n < len(_OUT_VIEW):
            self._send(_OUT_VIEW[:n])
            return
        chunks = [bytes(_OUT_VIEW)]        # more than the buffer holds (a write above 1 MB): one send still
        while (n := _lib.BIO_read(self._tlsConnection._from_ssl, _OUT, len(_OUT_VIEW))) > 0:
            chunks.append(bytes(_OUT_VIEW[:n]))
        self._send(memoryview(b"".join(chunks)))

    def makeConnection(self, transport) -> None:
        self._socket = socket_under(transport)
        super().makeConnection(transport)
        # pyOpenSSL has no call for this nor for BIO_read into our buffer: its own handles (_ssl, _from_ssl)
        conn = self._tlsConnection
        self._one_call = _lib is not None and hasattr(conn, "_ssl") and hasattr(conn, "_from_ssl")
        if self._one_call:
            _lib.SSL_clear_mode(conn._ssl, _lib.SSL_MODE_ENABLE_PARTIAL_WRITE)

    def _send(self, data: memoryview) -> None:
        write_now(self._socket, self.transport, data)

    def _flushReceiveBIO(self) -> None:
        """The base class's loop, but what one socket read decrypts to goes up as ONE dataReceived.

        Twisted delivers each record (16 KB) on its own; relayed to the target, each would be a
        socket write of its own (write_now).  Data is delivered before a close or an error, in order.
        """
        got = []
        while not self._lostTLSConnection:
            try:
                got.append(self._tlsConnection.recv(2 ** 15))
            except WantReadError:
                break
            except ZeroReturnError:                # the peer's close_notify: no more data
                self._deliver(got)
                got = []
                self._shutdownTLS()
                self._tlsShutdownFinished(None)
            except Error:
                failure = Failure()
                self._deliver(got)
                got = []
                self._tlsShutdownFinished(failure)
        self._deliver(got)
        self._flushSendBIO()

    def _deliver(self, got: list) -> None:
        if got and not self._aborted:
            ProtocolWrapper.dataReceived(self, got[0] if len(got) == 1 else b"".join(got))


class BulkTLSFactory(TLSMemoryBIOFactory):
    protocol = BulkTLS


def write_now(socket: tcp.Connection | None, transport, data) -> None:
    """``transport.write(data)``, but into ``socket`` at once when nothing is queued before it.

    Twisted's write only queues: the socket is written at the reactor's next turn, after an
    ``epoll_ctl`` to watch it and another to stop, and the queue's joins copy the bytes.  Per
    relayed read that was 1.7-2.4 sends, 2 epoll_ctl, 0.8-2.3 brk (bench/README.md, session 4).
    What the socket does not take is copied (``data`` may be a reused buffer) and queued as
    before, so order and the write-buffer mark (backpressure) hold.  ``socket``: socket_under
    ``transport``, or None (then: write).
    """
    if (socket is not None and socket.connected and not socket.disconnecting and not socket._writeDisconnecting
            and not socket._tempDataBuffer and socket.offset == len(socket.dataBuffer)):
        try:
            sent = socket.socket.send(data)
        except OSError:             # EAGAIN; or a broken connection, which the queued write reports as usual
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(bytes(data))


def socket_under(transport) -> tcp.Connection | None:
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
