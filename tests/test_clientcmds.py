"""The relay's passive view of the IMAP streams (imap/clientcmds.py): tables, then properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailsyncd.imap.clientcmds import MAX_KEPT, ClientCommands, Opened, ResponseBoundaries


def opened(stream: bytes, chunk: int | None = None) -> list[tuple[Opened, int]]:
    """Every report, with the absolute offset of the byte after the command's end."""
    c = ClientCommands()
    out, pos = [], 0
    pieces = [stream] if chunk is None else [stream[i:i + chunk] for i in range(0, len(stream), chunk)]
    for piece in pieces:
        while piece:
            ev, n = c.feed(piece)
            pos += n
            piece = piece[n:]
            if ev is not None:
                out.append((ev, pos))
    return out


@pytest.mark.parametrize("line, verb, mailbox", [
    (b"a1 SELECT INBOX\r\n", "SELECT", "INBOX"),
    (b"a1 select inbox\r\n", "SELECT", "inbox"),
    (b"x EXAMINE Archive/2019\r\n", "EXAMINE", "Archive/2019"),
    (b'7 SELECT "Sent Items"\r\n', "SELECT", "Sent Items"),
    (b'7 SELECT "a \\"quoted\\" \\\\ name"\r\n', "SELECT", 'a "quoted" \\ name'),
    (b"7 SELECT &W6JiNw-/&kc2JgQ-\r\n", "SELECT", "客户/重要"),          # modified UTF-7
    ('7 SELECT "客户"\r\n'.encode(), "SELECT", "客户"),                  # UTF8=ACCEPT
    (b"7 SELECT INBOX (CONDSTORE)\r\n", "SELECT", "INBOX"),
    (b"7 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n", "SELECT", "INBOX"),
    (b"7 SELECT {5}\r\nInbox\r\n", "SELECT", "Inbox"),
    (b"7 SELECT {10+}\r\nSent Items (CONDSTORE)\r\n", "SELECT", "Sent Items"),
    (b"7 SELECT INBOX\n", "SELECT", "INBOX"),                             # bare LF
])
def test_a_mailbox_opening_is_seen_in_every_form_and_ends_at_its_lf(line, verb, mailbox):
    for chunk in (None, 1, 3):
        got = opened(line, chunk)
        assert [(e.verb, e.mailbox, e.tag) for e, _ in got] == [(verb, mailbox, line.split(b" ")[0].decode())]
        assert got[0][1] == len(line)


@pytest.mark.parametrize("stream", [
    b"a NOOP\r\n", b"a LIST \"\" *\r\n", b"a SELECT\r\n", b"a SELECT INBOX junk\r\n", b"a SELECT \"open\r\n",
    b"a SELECT (INBOX)\r\n", b"SELECT INBOX\r\n", b"+ SELECT INBOX\r\n", b"a SELECT \"bad\\q\"\r\n",
    b"a SELECT &Jjo\r\n",                                   # broken modified UTF-7
    b"a SELECT {5}\r\nINBOX junk\r\n", b"a SELECT x{5}\r\nINBOX\r\n",
    b"DONE\r\n", b"\r\n",
])
def test_anything_else_is_not_reported(stream):
    assert opened(stream) == []


def test_literals_are_passed_over_so_a_message_body_is_never_a_command():
    body = b"b SELECT Trap\r\n" * 3
    stream = (b"a APPEND INBOX (\\Seen) {%d}\r\n" % len(body)) + body + b"\r\n" \
        + b"c APPEND INBOX ~{15}\r\nd SELECT Trap2\r\n\r\n" + b"e SELECT Real\r\n"
    for chunk in (None, 1, 7):
        assert [(e.tag, e.mailbox) for e, _ in opened(stream, chunk)] == [("e", "Real")]


def test_pipelined_commands_each_say_where_they_end():
    stream = b"1 SELECT A\r\n2 FETCH 1:* FLAGS\r\n3 EXAMINE {1}\r\nB\r\n4 NOOP\r\n"
    got = opened(stream)
    assert [(e.tag, e.verb, e.mailbox) for e, _ in got] == [("1", "SELECT", "A"), ("3", "EXAMINE", "B")]
    assert [stream[end - 1:end] for _, end in got] == [b"\n", b"\n"]
    assert stream[:got[0][1]] == b"1 SELECT A\r\n"
    assert stream[:got[1][1]].endswith(b"3 EXAMINE {1}\r\nB\r\n")


def test_it_stops_for_good_at_compress_and_starttls():
    for verb in (b"COMPRESS DEFLATE", b"STARTTLS"):
        assert opened(b"a " + verb + b"\r\nb SELECT INBOX\r\n") == []


def test_an_overlong_command_is_dropped_but_its_literal_still_counted():
    long = b"a SELECT \"" + b"x" * (MAX_KEPT + 10) + b"\"\r\n"
    assert opened(long) == []
    lit = b"a APPEND INBOX {%d}\r\n" % (MAX_KEPT * 4) + b"z SELECT Trap\r\n" * (MAX_KEPT * 4 // 15)
    lit = lit + b"y" * (len(b"a APPEND INBOX {%d}\r\n" % (MAX_KEPT * 4)) + MAX_KEPT * 4 - len(lit)) + b"\r\n"
    assert [e.mailbox for e, _ in opened(lit + b"b SELECT After\r\n", 100)] == ["After"]


def test_memory_stays_bounded_on_an_endless_line():
    c = ClientCommands()
    for _ in range(1000):
        assert c.feed(b"x" * 4096) == (None, 4096)
    assert sum(len(p) for p in c._parts) <= MAX_KEPT and len(c._line_tail) <= 32


# -- properties ----------------------------------------------------------------------------------------

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)


def _encode(name: str, form: int) -> bytes:
    from imapclient import imap_utf7
    raw = imap_utf7.encode(name)
    if form == 0 and all(c not in raw for c in b' (){%*"\\]') and raw:
        return raw
    if form == 1:
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(raw) + raw


_other = st.sampled_from([b"n NOOP\r\n", b"f UID FETCH 1:* (FLAGS)\r\n", b"DONE\r\n", b"i IDLE\r\n",
                          b"l LIST \"\" \"*\"\r\n", b"s SEARCH SUBJECT {6}\r\nSELECT\r\n"])


@st.composite
def _session(draw):
    """A pipelined session: some SELECT/EXAMINEs among other commands and APPENDs with literals."""
    expected, out = [], []
    for i in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 2))
        if kind == 0:
            name, form = draw(_names), draw(st.integers(0, 2))
            verb = draw(st.sampled_from(["SELECT", "EXAMINE"]))
            params = draw(st.sampled_from([b"", b" (CONDSTORE)"]))
            out.append(b"t%d %s %s%s\r\n" % (i, verb.encode(), _encode(name, form), params))
            expected.append(("t%d" % i, verb, name))
        elif kind == 1:
            body = draw(st.binary(max_size=200))
            plus = draw(st.sampled_from([b"", b"+"]))
            out.append(b"t%d APPEND INBOX {%d%s}\r\n" % (i, len(body), plus) + body + b"\r\n")
        else:
            out.append(draw(_other))
    return b"".join(out), expected


@settings(max_examples=300, deadline=None)
@given(_session(), st.lists(st.integers(1, 50), max_size=40))
def test_any_split_of_a_session_gives_the_same_reports_and_never_loses_a_byte(session, cuts):
    stream, expected = session
    c = ClientCommands()
    got, pos, seen = [], 0, bytearray()
    i = 0
    for cut in cuts + [len(stream)]:
        piece = stream[i:i + cut]
        i += cut
        while piece:
            ev, n = c.feed(piece)
            assert 0 < n <= len(piece)
            seen += piece[:n]
            pos += n
            piece = piece[n:]
            if ev is not None:
                assert stream[pos - 1:pos] == b"\n"
                got.append((ev.tag, ev.verb, ev.mailbox))
        if i >= len(stream):
            break
    assert bytes(seen) == stream
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_garbage_never_crashes_and_every_report_ends_at_an_lf(data, chunk):
    for ev, end in opened(data, chunk):
        assert data[end - 1:end] == b"\n" and ev.verb in ("SELECT", "EXAMINE")


def test_response_boundaries_pass_over_literals():
    b = ResponseBoundaries()
    assert b.at_boundary
    assert b.feed(b"* 1 FETCH (BODY[] {12}\r\nab\r\ncd\r\nef\r\n") is None and not b.at_boundary
    assert b.feed(b")\r\n* 2 EXISTS\r\n") == 3 and b.at_boundary
    assert b.feed(b"* 3 EXI") is None and not b.at_boundary
    assert b.feed(b"STS\r\na OK") == 5 and not b.at_boundary
    assert b.feed(b" done\r\n") == 7 and b.at_boundary


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40).filter(lambda x: b"\n" not in x and b"{" not in x),
                          st.one_of(st.none(), st.binary(max_size=60))), max_size=10),
       st.integers(1, 30))
def test_response_boundaries_are_exactly_the_ends_of_responses(responses, chunk):
    stream, ends = b"", []
    for text, literal in responses:
        if literal is None:
            stream += b"* " + text + b"\r\n"
        else:
            stream += b"* 1 FETCH (BODY[] {%d}\r\n" % len(literal) + literal + b" " + text + b")\r\n"
        ends.append(len(stream))
    b, found, pos = ResponseBoundaries(), [], 0
    for i in range(0, len(stream), chunk):
        piece = stream[i:i + chunk]
        k = b.feed(piece)
        if k is not None:
            found.append(pos + k)
        pos += len(piece)
    # the first boundary in each piece is one of the true ends, and the state at the end is right
    assert set(found) <= set(ends)
    assert b.at_boundary
