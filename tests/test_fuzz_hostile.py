"""Fuzz (hypothesis) of the pure parts a hostile peer feeds: the relay's view of the client's commands
(imap/clientcmds.py) and the watch's reading of a source's answers during IDLE (watch/conn.py).

The client's stream: any split of any stream -- whole, random pieces, one byte at a time -- gives the same
reports at the same offsets and the same stopped state, and what the tracker keeps stays bounded.
The source's answers: nothing escapes dataReceived, news never names a folder holding CR, LF or NUL, and
what is buffered stays within one response."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from fakes import FakeReactor
from test_watch_policy import _idle_conn

from mailsyncd.imap.clientcmds import MAX_KEPT, ClientCommands, ResponseBoundaries
from mailsyncd.watch.conn import MAX_RESPONSE

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CLIENT_TOKENS = [b"a", b"t1", b" ", b"  ", b"SELECT", b"EXAMINE", b"select", b"INBOX", b'"', b"\\", b"{", b"}",
                 b"+", b"~", b"{3}", b"{0}", b"{3+}", b"{2+}", b"~{1}", b"{99999999999999999999}", b"{-1}",
                 b"\r\n", b"\n", b"\r", b"\0", b"COMPRESS", b"DEFLATE", b"STARTTLS", b"AUTHENTICATE", b"PLAIN",
                 b"(CONDSTORE)", b"(", b")", b"&", b"-", b"&AMk-", b"&Jjo", b"x" * 40, b"{1}\r\n", b"\xff", b"*",
                 b"%", b"..", b"IDLE", b"DONE", b"APPEND", "名".encode()]
client_stream = st.lists(st.one_of(st.sampled_from(CLIENT_TOKENS), st.binary(max_size=4)), max_size=80).map(b"".join)


def _reports(stream: bytes, pieces: list[bytes]) -> tuple[list, bool, ClientCommands]:
    assert b"".join(pieces) == stream
    c, got, pos = ClientCommands(), [], 0
    for piece in pieces:
        while piece:
            ev, n = c.feed(piece)
            assert 0 < n <= len(piece)
            pos, piece = pos + n, piece[n:]
            if ev is not None:
                got.append((ev, pos))
            assert c._kept <= MAX_KEPT + 1 or c._overflow
            assert sum(map(len, c._parts)) <= MAX_KEPT and len(c._line_tail) <= 32
    return got, c.stopped, c


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    out, i = [], 0
    for cut in cuts:
        out.append(stream[i:i + cut])
        i += cut
    out.append(stream[i:])
    return out


@FUZZ
@given(client_stream, st.lists(st.integers(0, 24), max_size=30))
def test_any_split_of_any_client_stream_gives_the_same_reports_and_state(stream, cuts):
    whole = _reports(stream, [stream])[:2]
    assert _reports(stream, _split(stream, cuts))[:2] == whole
    assert _reports(stream, [stream[i:i + 1] for i in range(len(stream))])[:2] == whole
    for ev, end in whole[0]:
        assert stream[end - 1:end] == b"\n" and not set(ev.mailbox) & set("\r\n\0")


@FUZZ
@given(client_stream, st.lists(st.integers(1, 24), max_size=30))
def test_response_boundaries_do_not_depend_on_how_the_server_stream_is_cut(stream, cuts):
    def run(pieces):
        b, found, pos = ResponseBoundaries(), [], 0
        for piece in pieces:
            if piece:
                k = b.feed(piece)
                if k is not None:
                    found.append(pos + k)
                pos += len(piece)
        return found, b.at_boundary
    bytewise, at = run([stream[i:i + 1] for i in range(len(stream))])   # every boundary, one per byte fed
    found, at_split = run(_split(stream, cuts))
    assert at_split == at and set(found) <= set(bytewise)


SOURCE_TOKENS = [b"* ", b"+ ", b"W2 ", b"W3 ", b"X9 ", b"OK", b"NO", b"BAD", b"BYE", b"EXISTS", b"EXPUNGE",
                 b"RECENT", b"STATUS", b"MESSAGES", b"UIDNEXT", b"UIDVALIDITY", b"HIGHESTMODSEQ", b"(", b")", b" ",
                 b'"', b"\\", b"INBOX", b"&AAA-", b"&AA0ACg-", b"&Jjo-", b"&&", b"{", b"}", b"{3}\r\n", b"{0}\r\n",
                 b"{999999999}\r\n", b"1", b"-1", b"99999999999", b"4294967296", b"\r\n", b"\r", b"\n", b"\0"]
source_stream = st.lists(st.one_of(st.sampled_from(SOURCE_TOKENS), st.binary(max_size=4)), max_size=80).map(b"".join)


@FUZZ
@given(source_stream, st.integers(1, 40))
def test_whatever_a_source_sends_during_idle_is_read_without_escaping_or_unsafe_names(data, chunk):
    clock, marks, changes = FakeReactor(), [], []
    c, t = _idle_conn(clock, marks, changes)
    assert isinstance(t, StringTransport)
    aborted = []
    t.abortConnection = lambda: aborted.append(True)
    for i in range(0, len(data), chunk):
        c.dataReceived(data[i:i + chunk])         # anything escaping here would reach Twisted's log as a traceback
        assert len(c.reader.buf) <= MAX_RESPONSE + chunk
    for mark, folder in changes:
        assert folder is None or not set(folder) & set("\r\n\0")
        assert all(n is None or 0 <= n < 10**10 for n in (mark.messages, mark.uidnext, mark.uidvalidity))
