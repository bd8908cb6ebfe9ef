"""A scripted IMAP server on 127.0.0.1 that plays a hostile old provider.

It speaks just enough IMAP4rev1 for the copy engine (CAPABILITY, LOGIN, LIST,
STATUS, EXAMINE/SELECT, UID FETCH, NOOP, LOGOUT) over an in-memory mailbox, and
misbehaves on request: ``misbehave[(folder, uid)] = SCENARIO`` changes how that
message's BODY[] FETCH is answered, and ``evil_names`` adds LIST entries whose
names carry control characters.  Scenarios:

* ``crlf_flag``   FLAGS holding a literal with CRLF and IMAP commands in it, plus an
  unknown ``X-JUNK 1`` item (forces imapclient's general parser)
* ``oversized``   announces a 300 MB BODY[] literal for an 86-byte message, then
  streams until the client goes away (``stream_stopped`` records how it ended)
* ``unbalanced``  a FETCH response missing a closing parenthesis
* ``drop``        closes the connection in the middle of the BODY[] literal
* ``bad``         a tagged BAD in the middle of the FETCH
* ``long_line``   10 MB of response without CRLF
* ``bad_status``  (as ``misbehave[(folder, 0)]``) a STATUS answer with words where numbers belong
* ``search_flood`` (as ``misbehave[(folder, 0)]``) a UID SEARCH answered with 40 lines of 900 KB of
  UIDs each (36 MB), until the client goes away (``stream_stopped``/``streamed`` record it)

Any other UID SEARCH is answered with every UID of the folder (every message is "recent").

``idle`` (a scenario name) offers IDLE and answers it with ``+`` and then: ``long_line`` up to 300 MB of
one response line without CRLF, ``literal`` an untagged FETCH announcing a 300 MB literal and streaming
it, ``flood`` endless ``* OK still here`` lines, ``exists_flood`` an ``* n EXISTS`` with n one more every
20 ms (for mail that never comes: the box does not change); each until the client goes away (``stream_stopped``).
``idles`` counts the IDLE commands received.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field

INJECTION = (b'x\r\nZ1 UID STORE 1:* +FLAGS.SILENT (\\Deleted)\r\nZ2 EXPUNGE\r\nZ3 CREATE "PWNED"\r\nY')
BAD_WORDS = b"[SERVERBUG] hostile provider broke down mid-fetch"
DATE = b'"06-May-2021 07:08:09 +0000"'


@dataclass
class Box:
    messages: list[tuple[int, bytes, tuple[bytes, ...]]]   # (uid, raw, flags)
    uidvalidity: int = 1234


@dataclass
class HostileServer:
    user: str
    password: str
    folders: dict[str, Box]
    misbehave: dict[tuple[str, int], str] = field(default_factory=dict)
    evil_names: list[bytes] = field(default_factory=list)
    stream_stopped: list[str] = field(default_factory=list)   # how each oversized stream ended
    streamed: list[int] = field(default_factory=list)        # bytes of it the kernel accepted
    idle: str | None = None
    idles: int = 0

    def __post_init__(self) -> None:
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.port = self._srv.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def __enter__(self) -> HostileServer:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._srv.close()
        for t in self._threads:
            t.join(10)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    # -- one session --------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        f = conn.makefile("rb")
        try:
            caps = b"IMAP4rev1 UIDPLUS" + (b" IDLE" if self.idle else b"")
            conn.sendall(b"* OK [CAPABILITY " + caps + b"] hostile ready\r\n")
            selected: str | None = None
            while True:
                line = f.readline(65536)
                if not line:
                    return
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                cmd, _, args = rest.partition(b" ")
                cmd = cmd.upper()
                if cmd == b"UID":
                    sub, _, args = args.partition(b" ")
                    cmd = b"UID " + sub.upper()
                if cmd == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK done\r\n")
                elif cmd == b"LOGIN":
                    words = _strings(args)
                    ok = words == [self.user.encode(), self.password.encode()]
                    conn.sendall(tag + (b" OK logged in\r\n" if ok else b" NO [AUTHENTICATIONFAILED] no\r\n"))
                elif cmd == b"LIST":
                    out = b"".join(b'* LIST () "/" ' + _quote(n.encode()) + b"\r\n" for n in self.folders)
                    out += b"".join(b'* LIST () "/" {%d}\r\n%s\r\n' % (len(n), n) for n in self.evil_names)
                    conn.sendall(out + tag + b" OK listed\r\n")
                elif cmd == b"STATUS":
                    name = _strings(args)[0].decode()
                    box = self.folders.get(name)
                    if box is None:
                        conn.sendall(tag + b" NO no such folder\r\n")
                        continue
                    nxt = max((u for u, _, _ in box.messages), default=0) + 1
                    if self.misbehave.get((name, 0)) == "bad_status":
                        conn.sendall(b"* STATUS %s (MESSAGES lots UIDNEXT (1) UIDVALIDITY)\r\n%s OK status\r\n"
                                     % (_quote(name.encode()), tag))
                        continue
                    conn.sendall(b"* STATUS %s (MESSAGES %d UIDNEXT %d UIDVALIDITY %d)\r\n%s OK status\r\n"
                                 % (_quote(name.encode()), len(box.messages), nxt, box.uidvalidity, tag))
                elif cmd in (b"EXAMINE", b"SELECT"):
                    name = _strings(args)[0].decode()
                    box = self.folders.get(name)
                    if box is None:
                        conn.sendall(tag + b" NO no such folder\r\n")
                        continue
                    selected = name
                    nxt = max((u for u, _, _ in box.messages), default=0) + 1
                    conn.sendall(b"* %d EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)\r\n"
                                 b"* OK [UIDVALIDITY %d] v\r\n* OK [UIDNEXT %d] n\r\n%s OK [READ-ONLY] examined\r\n"
                                 % (len(box.messages), box.uidvalidity, nxt, tag))
                elif cmd == b"UID SEARCH" and selected is not None:
                    if not self._search(conn, tag, selected):
                        return
                elif cmd == b"UID FETCH" and selected is not None:
                    if not self._fetch(conn, tag, args, selected):
                        return
                elif cmd == b"LOGOUT":
                    conn.sendall(b"* BYE bye\r\n" + tag + b" OK logged out\r\n")
                    return
                elif cmd == b"IDLE" and self.idle:
                    self.idles += 1
                    conn.sendall(b"+ idling\r\n")
                    if self.idle == "exists_flood":
                        self._exists_flood(conn, len(self.folders["INBOX"].messages))
                        return
                    start = {"long_line": b"* OK ", "literal": b"* 1 FETCH (BODY[] {314572800}\r\n"}
                    self._stream(conn, start.get(self.idle, b""),
                                 b"* OK still here\r\n" * 4096 if self.idle == "flood" else None)
                    return
                elif cmd == b"NOOP":
                    conn.sendall(tag + b" OK noop\r\n")
                else:
                    conn.sendall(tag + b" BAD unknown command\r\n")
        except OSError:
            return
        finally:
            f.close()
            conn.close()

    def _fetch(self, conn: socket.socket, tag: bytes, args: bytes, folder: str) -> bool:
        """Answer a UID FETCH; False when the session must end (the scenario dropped it)."""
        uidset, _, items = args.partition(b" ")
        box = self.folders[folder]
        wanted = _uids(uidset, max((u for u, _, _ in box.messages), default=0))
        body = b"BODY" in items.upper()
        out = []
        for seq, (uid, raw, flags) in enumerate(box.messages, 1):
            if uid not in wanted:
                continue
            fl = b"(" + b" ".join(flags) + b")"
            if not body:
                extra = b" RFC822.SIZE %d" % (86 if self.misbehave.get((folder, uid)) == "oversized" else len(raw))
                out.append(b"* %d FETCH (UID %d FLAGS %s%s)\r\n" % (seq, uid, fl, extra if b"SIZE" in items.upper() else b""))
                continue
            how = self.misbehave.get((folder, uid))
            head = b"* %d FETCH (UID %d " % (seq, uid)
            if how == "crlf_flag":
                out.append(head + b"X-JUNK 1 FLAGS (\\Seen {%d}\r\n%s) INTERNALDATE %s BODY[] {%d}\r\n%s)\r\n"
                           % (len(INJECTION), INJECTION, DATE, len(raw), raw))
            elif how == "unbalanced":
                out.append(head + b"FLAGS (\\Seen INTERNALDATE %s BODY[] {%d}\r\n%s)\r\n" % (DATE, len(raw), raw))
            elif how == "oversized":
                conn.sendall(b"".join(out) + head + b"FLAGS () INTERNALDATE %s BODY[] {314572800}\r\n" % DATE)
                self._stream(conn)
                return False
            elif how == "drop":
                conn.sendall(b"".join(out) + head + b"FLAGS () INTERNALDATE %s BODY[] {%d}\r\n%s"
                             % (DATE, len(raw), raw[: len(raw) // 2]))
                return False
            elif how == "bad":
                conn.sendall(b"".join(out) + tag + b" BAD " + BAD_WORDS + b"\r\n")
                return True
            elif how == "long_line":
                conn.sendall(b"".join(out) + head + b"FLAGS (")
                chunk = b"A" * 65536
                for _ in range(160):   # 10 MB, no CRLF
                    conn.sendall(chunk)
                return False
            else:
                out.append(head + b"FLAGS %s INTERNALDATE %s BODY[] {%d}\r\n%s)\r\n" % (fl, DATE, len(raw), raw))
        conn.sendall(b"".join(out) + tag + b" OK fetched\r\n")
        return True

    def _search(self, conn: socket.socket, tag: bytes, folder: str) -> bool:
        box = self.folders[folder]
        if self.misbehave.get((folder, 0)) != "search_flood":
            uids = b" ".join(b"%d" % u for u, _, _ in box.messages)
            conn.sendall(b"* SEARCH " + uids + b"\r\n" + tag + b" OK searched\r\n")
            return True
        line = b"* SEARCH " + b" ".join(b"%d" % (i % 3 + 1) for i in range(450_000)) + b"\r\n"
        sent = 0
        try:
            for _ in range(40):
                conn.sendall(line)
                sent += len(line)
            conn.sendall(tag + b" OK searched\r\n")
            self.stream_stopped.append("sent everything")
        except OSError as e:
            self.stream_stopped.append(f"client went away: {type(e).__name__}")
        self.streamed.append(sent)
        return False

    def _exists_flood(self, conn: socket.socket, n: int) -> None:
        try:
            while not self._stop.is_set():
                n += 1
                conn.sendall(b"* %d EXISTS\r\n" % n)
                time.sleep(0.02)
            self.stream_stopped.append("server stopped")
        except OSError as e:
            self.stream_stopped.append(f"client went away: {type(e).__name__}")

    def _stream(self, conn: socket.socket, first: bytes = b"", chunk: bytes | None = None) -> None:
        """Send up to 300 MB of the announced literal until the client goes away."""
        chunk = chunk or b"x" * 65536
        sent = 0
        try:
            conn.sendall(first)
            while sent < 314572800:
                conn.sendall(chunk)
                sent += len(chunk)
            self.stream_stopped.append("sent everything")
        except OSError as e:
            self.stream_stopped.append(f"client went away: {type(e).__name__}")
        self.streamed.append(sent)


def _quote(s: bytes) -> bytes:
    return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _strings(args: bytes) -> list[bytes]:
    """Quoted strings and atoms of a command line (no literals: the engine sends none to a source)."""
    return [m.group(1).replace(b'\\"', b'"').replace(b"\\\\", b"\\") if m.group(1) is not None else m.group(2)
            for m in re.finditer(rb'"((?:[^"\\]|\\.)*)"|([^\s()"]+)', args)]


def _uids(uidset: bytes, top: int) -> set[int]:
    out: set[int] = set()
    for part in uidset.split(b","):
        a, _, b = part.partition(b":")
        lo = top if a == b"*" else int(a)
        hi = lo if not b else (top if b == b"*" else int(b))
        out.update(range(min(lo, hi), max(lo, hi) + 1))
    return out
