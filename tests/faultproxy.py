"""TCP relays on 127.0.0.1 in front of a real IMAP server, that misbehave on purpose.

* :class:`CuttingProxy` cuts connections after N bytes from the server: a source that drops mid-FETCH.
* :class:`FaultProxy` follows the IMAP framing (lines and ``{n}`` / ``{n+}`` literals) both ways, so
  faults land at reproducible points counted in protocol units, not in wall-clock time:

  - ``cut_in_literal(n)``: the connection carrying the n-th byte of server literals (message
    bodies, counted over all connections) is cut right there, mid-literal;
  - ``refuse_appends(code, count)``: the next ``count`` APPEND commands get ``tag NO [code]``
    (the literals of a LITERAL+ APPEND are swallowed first; a synchronizing one is refused
    before the client sends it, as RFC 3501 allows);
  - ``outage(seconds)``: every open connection is reset and new ones are reset at once, for that long;
  - ``hang(seconds)``: new connections are accepted and then get nothing at all (not even a greeting)
    for that long, then are closed: a source that stalls;
  - ``at_literal_byte(n, fn)`` / ``at_append(k, fn)``: call ``fn()`` when the n-th server literal
    byte, or the k-th APPENDed message (a literal of an APPEND command), passes the proxy.

``on_command(name, fn)`` calls ``fn()`` when a client command of that name arrives; ``hold(name, event,
timeout)`` keeps the next such command from the server until ``event`` is set (``held`` records, per
command held, whether the event released it rather than the timeout): with the two, a test sees
whether two connections' commands overlap, without timing anything.

It also counts what passes: ``server_bytes`` (everything the server sent) and ``commands`` (each
client command's name, e.g. ``b"UID FETCH"``; never its arguments, which may hold a password).
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time


class Listener:
    """A socket listening on 127.0.0.1 (``port``) whose thread hands each connection to ``_accepted``; a
    context manager: the thread runs inside ``with``.  The relays here (and tests/cluster.py's) build on it."""

    def _listen(self, name: str = "relay-accept") -> None:
        self._stop = threading.Event()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self._srv.settimeout(0.2)
        self.port = self._srv.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name=name, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._srv.close()
        self._closed()

    def _closed(self) -> None:
        """After the listener stops: what a subclass still holds."""

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._accepted(client)

    def _accepted(self, client: socket.socket) -> None:
        raise NotImplementedError


class CuttingProxy(Listener):
    def __init__(self, upstream_port: int, *, cut_after: int, cuts: int = 1):
        self.upstream = ("127.0.0.1", upstream_port)
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cut_count = 0
        self._lock = threading.Lock()
        self._listen()

    def _accepted(self, client: socket.socket) -> None:
        up = socket.create_connection(self.upstream, timeout=10)
        with self._lock:
            cut = self.cuts_left > 0
            self.cuts_left -= int(cut)
        threading.Thread(target=self._pump, args=(client, up, None), daemon=True).start()
        threading.Thread(target=self._pump, args=(up, client, self.cut_after if cut else None),
                         daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while not self._stop.is_set():
                data = a.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    b.sendall(data[: limit - sent])
                    with self._lock:
                        self.cut_count += 1
                    break
                b.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


_LITERAL = re.compile(rb"\{(\d+)(\+?)\}\r\n\Z")


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): what a crashed server's peer sees."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


class _Framer:
    """Splits one direction of an IMAP stream into line and literal pieces, without copying much.

    ``feed(data)`` yields ``(kind, piece, info)``: ``("line", bytes, literal_len_or_None)`` for a
    complete line (CRLF included), ``("literal", bytes, remaining_after)`` for literal bytes.
    """

    def __init__(self) -> None:
        self.buf = b""
        self.literal = 0
        self.nonsync = False

    def feed(self, data: bytes):
        buf = self.buf + data
        self.buf = b""
        i = 0
        while i < len(buf):
            if self.literal:
                n = min(self.literal, len(buf) - i)
                self.literal -= n
                yield "literal", buf[i:i + n], self.literal
                i += n
                continue
            j = buf.find(b"\n", i)
            if j < 0:
                self.buf = buf[i:]
                return
            line = buf[i:j + 1]
            i = j + 1
            m = _LITERAL.search(line)
            self.literal = int(m.group(1)) if m else 0
            self.nonsync = bool(m and m.group(2))
            yield "line", line, (self.literal if m else None)


class _Conn:
    def __init__(self, client: socket.socket, up: socket.socket):
        self.client, self.up = client, up
        self.to_client = threading.Lock()   # the server pump and injected answers both write to the client
        self.dead = False

    def kill(self) -> None:
        if not self.dead:
            self.dead = True
            for s in (self.client, self.up):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class FaultProxy(Listener):
    def __init__(self, upstream_port: int, name: str = "proxy"):
        self.upstream = ("127.0.0.1", upstream_port)
        self.name = name
        self.literal_bytes = 0      # server literal bytes relayed, all connections
        self.appended = 0           # APPENDed messages relayed to the server
        self.server_bytes = 0       # bytes the server sent, all connections
        self.commands: list[bytes] = []     # each client command's name (UID FETCH, STATUS, ...)
        self.held: list[bool] = []          # per held command: released by its event (not the timeout)
        self._command_hooks: list[tuple[bytes, object]] = []
        self._holds: list[tuple[bytes, threading.Event, float]] = []
        self.events: list[str] = []  # what the proxy did, for the test's output
        self._cut_at: int | None = None
        self._refuse: tuple[str, int] | None = None
        self._down_until = 0.0
        self._hang_until = 0.0
        self._hung: list[socket.socket] = []
        self._byte_hooks: list[tuple[int, object]] = []
        self._append_hooks: list[tuple[int, object]] = []
        self._conns: list[_Conn] = []
        self._lock = threading.Lock()
        self._listen(f"{name}-accept")

    def _closed(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.kill()
        for s in self._hung:
            _reset(s)

    # -- arming faults ---------------------------------------------------------------------------
    def cut_in_literal(self, nth_byte: int) -> None:
        self._cut_at = nth_byte

    def refuse_appends(self, code: str, count: int) -> None:
        with self._lock:
            self._refuse = (code, count) if count > 0 else None

    def outage(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds
            conns = list(self._conns)
        self._event(f"outage {seconds:g}s: {len(conns)} connections reset")
        for c in conns:
            c.kill()

    def hang(self, seconds: float) -> None:
        with self._lock:
            self._hang_until = time.monotonic() + seconds

    def at_literal_byte(self, n: int, fn) -> None:
        self._byte_hooks.append((n, fn))

    def at_append(self, k: int, fn) -> None:
        self._append_hooks.append((k, fn))

    def on_command(self, name: bytes, fn) -> None:
        self._command_hooks.append((name, fn))

    def hold(self, name: bytes, event: threading.Event, timeout: float) -> None:
        self._holds.append((name, event, timeout))

    # -- relaying --------------------------------------------------------------------------------
    def _event(self, what: str) -> None:
        self.events.append(f"{self.name}: {what}")

    def _accepted(self, client: socket.socket) -> None:
        if time.monotonic() < self._down_until:
            _reset(client)
            return
        if time.monotonic() < self._hang_until:
            self._event("connection held silent")
            self._hung.append(client)
            threading.Timer(self._hang_until - time.monotonic(), _reset, (client,)).start()
            return
        try:
            up = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _reset(client)
            return
        up.settimeout(None)
        conn = _Conn(client, up)
        with self._lock:
            self._conns.append(conn)
        threading.Thread(target=self._client_pump, args=(conn,), daemon=True).start()
        threading.Thread(target=self._server_pump, args=(conn,), daemon=True).start()

    def _run_hooks(self, hooks: list, value: int) -> None:
        with self._lock:
            due = [h for h in hooks if h[0] <= value]
            for h in due:
                hooks.remove(h)
        for _, fn in due:
            fn()

    def _server_pump(self, conn: _Conn) -> None:
        framer = _Framer()
        try:
            while not conn.dead:
                data = conn.up.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.server_bytes += len(data)
                out = []
                for kind, piece, _ in framer.feed(data):
                    if kind == "literal":
                        with self._lock:
                            before = self.literal_bytes
                            self.literal_bytes += len(piece)
                            now = self.literal_bytes
                            cut = self._cut_at is not None and before < self._cut_at <= now
                            if cut:
                                keep, self._cut_at = self._cut_at - before - 1, None
                        if cut:
                            out.append(piece[:keep])
                            self._send(conn, b"".join(out))
                            self._event(f"cut a connection at server literal byte {before + keep + 1} "
                                        f"({len(piece) - keep} bytes short of this piece's end)")
                            conn.kill()     # shutdown, not close: it wakes the other pump's recv()
                            return
                        self._run_hooks(self._byte_hooks, now)
                    out.append(piece)
                self._send(conn, b"".join(out))
        except OSError:
            pass
        finally:
            self._close(conn)

    def _send(self, conn: _Conn, data: bytes) -> None:
        if data:
            with conn.to_client:
                conn.client.sendall(data)

    def _client_pump(self, conn: _Conn) -> None:
        framer = _Framer()
        cmd: tuple[bytes, bool, str | None] | None = None     # (tag, is APPEND, refusal code)
        try:
            while not conn.dead:
                data = conn.client.recv(65536)
                if not data:
                    break
                out = []
                for kind, piece, info in framer.feed(data):
                    if kind == "line":
                        if cmd is None:
                            words = piece.split(None, 2)
                            tag = words[0] if words else b"*"
                            is_append = len(words) > 1 and words[1].upper() == b"APPEND"
                            self._count_command(words)
                            self._held(words)
                            cmd = (tag, is_append, self._take_refusal() if is_append else None)
                        tag, is_append, refused = cmd
                        if refused:
                            if info is not None and not framer.nonsync:
                                framer.literal = 0          # a synchronizing literal is never sent
                                self._answer_no(conn, tag, refused)
                                cmd = None
                            elif info is None:              # the end of a LITERAL+ command
                                self._answer_no(conn, tag, refused)
                                cmd = None
                            continue
                        out.append(piece)
                        if info is None:
                            cmd = None
                    else:
                        if cmd is not None and cmd[2]:
                            continue                        # swallowed: part of a refused APPEND
                        out.append(piece)
                        if cmd is not None and cmd[1] and info == 0:
                            self._send_up(conn, out)
                            out = []
                            with self._lock:
                                self.appended += 1
                                n = self.appended
                            self._run_hooks(self._append_hooks, n)
                self._send_up(conn, out)
        except OSError:
            pass
        finally:
            self._close(conn)

    @staticmethod
    def _name(words: list[bytes]) -> bytes:
        name = words[1].upper()
        if name == b"UID" and len(words) > 2:
            name += b" " + words[2].split(None, 1)[0].upper()
        return name

    def _count_command(self, words: list[bytes]) -> None:
        if len(words) < 2:
            return
        with self._lock:
            self.commands.append(self._name(words))

    def _held(self, words: list[bytes]) -> None:
        """Run the command hooks, then wait here (before the command goes on) if it is to be held."""
        if len(words) < 2:
            return
        name = self._name(words)
        for n, fn in list(self._command_hooks):
            if n == name:
                fn()
        with self._lock:
            hold = next((h for h in self._holds if h[0] == name), None)
            if hold:
                self._holds.remove(hold)
        if hold:
            released = hold[1].wait(hold[2])
            with self._lock:
                self.held.append(released)

    def _send_up(self, conn: _Conn, out: list[bytes]) -> None:
        if out:
            conn.up.sendall(b"".join(out))

    def _take_refusal(self) -> str | None:
        with self._lock:
            if self._refuse is None:
                return None
            code, left = self._refuse
            self._refuse = (code, left - 1) if left > 1 else None
        self._event(f"refused an APPEND with [{code}]")
        return code

    def _answer_no(self, conn: _Conn, tag: bytes, code: str) -> None:
        self._send(conn, tag + b" NO [" + code.encode() + b"] Refused by the fault proxy\r\n")

    def _close(self, conn: _Conn) -> None:
        conn.kill()
        for s in (conn.client, conn.up):
            try:
                s.close()
            except OSError:
                pass
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
