"""The front door's pure pre-auth parser (mailsyncd/imap/preauth.py): unit tests and fuzzing.

No sockets, no daemon: bytes in, events out.  The live counterpart is test_frontdoor_badinput.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailsyncd.imap.preauth import (
    MAX_LINE,
    MAX_NONSYNC_LITERAL,
    Bad,
    Command,
    Continue,
    Fatal,
    PreauthParser,
    SaslLine,
    needs_literal,
    quote,
)

EVENT_TYPES = (Command, Continue, Bad, Fatal, SaslLine)


def drain(p: PreauthParser, *, sasl_after_authenticate: bool = False, limit: int = 10_000) -> list:
    """All events available now.  Optionally behave like the front door after a bare AUTHENTICATE."""
    out = []
    for _ in range(limit):
        ev = p.next_event()
        if ev is None:
            return out
        assert isinstance(ev, EVENT_TYPES), ev
        out.append(ev)
        if (sasl_after_authenticate and isinstance(ev, Command) and ev.name == "AUTHENTICATE"
                and len(ev.args) == 1):
            p.sasl = True
    raise AssertionError(f"next_event() did not return None after {limit} events: {out[-5:]}")


def events(data: bytes | list[bytes], **kw) -> list:
    """Feed data (one bytes object, or a list of chunks) and collect every event."""
    sasl = kw.pop("sasl_after_authenticate", False)
    p = PreauthParser(**kw)
    out = []
    for chunk in [data] if isinstance(data, bytes) else data:
        p.feed(chunk)
        out += drain(p, sasl_after_authenticate=sasl, limit=len(chunk) + 2)
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def one(data: bytes, **kw):
    evs = events(data, **kw)
    assert len(evs) == 1, evs
    return evs[0]


# -- well-formed commands ------------------------------------------------------------------

def test_login_atoms():
    assert one(b"a1 LOGIN alice@example.com secret\r\n") == Command("a1", "LOGIN", ("alice@example.com", "secret"))


def test_command_name_is_uppercased():
    assert one(b"x login a b\r\n") == Command("x", "LOGIN", ("a", "b"))


def test_no_arguments():
    assert one(b"t CAPABILITY\r\n") == Command("t", "CAPABILITY", ())


def test_login_quoted_with_escapes():
    ev = one(b'a LOGIN "al ice" "pa\\"ss\\\\word"\r\n')
    assert ev == Command("a", "LOGIN", ("al ice", 'pa"ss\\word'))


def test_login_quoted_empty_and_utf8():
    ev = one('a LOGIN "jürgen@example.com" "päss €"\r\n'.encode())
    assert ev == Command("a", "LOGIN", ("jürgen@example.com", "päss €"))
    assert one(b'a LOGIN "" ""\r\n') == Command("a", "LOGIN", ("", ""))


def test_login_synchronising_literal():
    p = PreauthParser()
    p.feed(b"a LOGIN {5}\r\n")
    assert p.next_event() == Continue()
    assert p.next_event() is None                      # waits for the literal bytes
    p.feed(b"al\r\n")
    assert p.next_event() is None
    p.feed(b"i {3}\r\n")
    assert p.next_event() == Continue()
    p.feed(b"p w\r\n")
    assert p.next_event() == Command("a", "LOGIN", (b"al\r\ni", b"p w"))
    assert p.next_event() is None


def test_literal_may_hold_any_bytes():
    payload = bytes(range(256))
    p = PreauthParser()
    p.feed(b"a LOGIN user {256}\r\n")
    assert p.next_event() == Continue()
    p.feed(payload + b"\r\n")
    assert p.next_event() == Command("a", "LOGIN", ("user", payload))


def test_zero_length_literal():
    assert events(b"a LOGIN {0}\r\n {0}\r\n\r\n") == [Continue(), Continue(), Command("a", "LOGIN", (b"", b""))]


def test_login_non_synchronising_literal():
    # LITERAL-: no "+" is sent, the bytes follow right away.
    assert events(b"a LOGIN {5+}\r\nalice {4+}\r\np\"w\\\r\n") == [Command("a", "LOGIN", (b"alice", b'p"w\\'))]


def test_non_sync_literal_at_the_limit_is_fine():
    data = b"a LOGIN u {%d+}\r\n" % MAX_NONSYNC_LITERAL + b"x" * MAX_NONSYNC_LITERAL + b"\r\n"
    assert events(data) == [Command("a", "LOGIN", ("u", b"x" * MAX_NONSYNC_LITERAL))]


def test_id_with_list_and_nil():
    ev = one(b'a ID ("name" "Thunderbird" "version" NIL "os" "Linux")\r\n')
    assert ev == Command("a", "ID", (("name", "Thunderbird", "version", None, "os", "Linux"),))
    assert one(b"b ID NIL\r\n") == Command("b", "ID", (None,))
    assert one(b"c ID nil\r\n") == Command("c", "ID", (None,))
    assert one(b'd ID ()\r\n') == Command("d", "ID", ((),))


def test_nested_list_with_literal_inside():
    evs = events(b'a ID ("k" {2}\r\nvv ("x" NIL))\r\n')
    assert evs == [Continue(), Command("a", "ID", (("k", b"vv", ("x", None)),))]


def test_authenticate_with_sasl_ir():
    assert one(b"a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n") == Command("a", "AUTHENTICATE", ("PLAIN", "AGFsaWNlAHB3"))
    assert one(b"a AUTHENTICATE PLAIN =\r\n") == Command("a", "AUTHENTICATE", ("PLAIN", "="))


def test_sasl_continuation_line():
    p = PreauthParser()
    p.feed(b"a AUTHENTICATE PLAIN\r\n")
    assert p.next_event() == Command("a", "AUTHENTICATE", ("PLAIN",))
    p.sasl = True
    p.feed(b"AGFsaWNl")
    assert p.next_event() is None
    p.feed(b"AHB3\r\nb NOOP\r\n")
    assert p.next_event() == SaslLine(b"AGFsaWNlAHB3")
    assert p.sasl is False                              # one response line, then commands again
    assert p.next_event() == Command("b", "NOOP", ())


def test_sasl_line_is_taken_verbatim():
    p = PreauthParser()
    p.sasl = True
    p.feed(b'*\r\n')
    assert p.next_event() == SaslLine(b"*")
    p.sasl = True
    p.feed(b'"(}{ \x00\xff\r\n')
    assert p.next_event() == SaslLine(b'"(}{ \x00\xff')
    p.sasl = True
    p.feed(b"\r\n")
    assert p.next_event() == SaslLine(b"")


def test_pipelined_commands_come_out_one_by_one():
    p = PreauthParser()
    p.feed(b"a CAPABILITY\r\nb NOOP\r\nc ID NIL\r\nd LOG")
    assert p.next_event() == Command("a", "CAPABILITY", ())
    assert p.next_event() == Command("b", "NOOP", ())
    assert p.next_event() == Command("c", "ID", (None,))
    assert p.next_event() is None
    p.feed(b"OUT\r\n")
    assert p.next_event() == Command("d", "LOGOUT", ())
    assert p.next_event() is None


def test_take_buffer_after_login_is_the_exact_remainder():
    rest = b"b SELECT INBOX\r\nc FETCH 1:* (FLAGS {3}\r\n\x00\xff\r\nd IDLE"
    p = PreauthParser()
    p.feed(b"a NOOP\r\na LOGIN {3}\r\nbob pw\r\n" + rest)
    assert p.next_event() == Command("a", "NOOP", ())
    assert p.next_event() == Continue()
    assert p.next_event() == Command("a", "LOGIN", (b"bob", "pw"))
    assert p.buffered == len(rest)
    assert p.take_buffer() == rest
    assert p.buffered == 0
    assert p.take_buffer() == b""


def test_take_buffer_keeps_a_partial_line():
    p = PreauthParser()
    p.feed(b"a LOGIN u p\r\nb SEL")
    assert p.next_event() == Command("a", "LOGIN", ("u", "p"))
    assert p.take_buffer() == b"b SEL"


def test_quote_round_trips_through_the_parser():
    for s in ["plain", 'q"uote', "back\\slash", "\\\"", "ünï €", " spaces  "]:
        assert one(b"a LOGIN " + quote(s) + b" x\r\n") == Command("a", "LOGIN", (s, "x"))


# -- limits ----------------------------------------------------------------------------------

def test_line_over_8k_is_fatal():
    assert events(b"a LOGIN " + b"x" * MAX_LINE + b" y\r\n") == [Fatal("line too long")]


def test_line_over_8k_without_crlf_is_fatal_early():
    p = PreauthParser()
    p.feed(b"a NOOP ")
    assert p.next_event() is None
    p.feed(b"x" * MAX_LINE)
    assert p.next_event() == Fatal("line too long")


def test_line_of_exactly_8k_is_accepted():
    line = b"a NOOP " + b"x" * (MAX_LINE - 7)
    assert len(line) == MAX_LINE
    assert events(line + b"\r\n") == [Command("a", "NOOP", ("x" * (MAX_LINE - 7),))]


def test_line_of_exactly_8k_is_accepted_when_cr_and_lf_arrive_apart():
    line = b"a NOOP " + b"x" * (MAX_LINE - 7)
    assert events([line + b"\r", b"\n"]) == [Command("a", "NOOP", ("x" * (MAX_LINE - 7),))]


def test_sasl_line_of_exactly_8k_is_accepted_when_cr_and_lf_arrive_apart():
    p = PreauthParser()
    p.sasl = True
    p.feed(b"A" * MAX_LINE + b"\r")
    assert p.next_event() is None
    p.feed(b"\n")
    assert p.next_event() == SaslLine(b"A" * MAX_LINE)


def test_lines_around_a_literal_count_together():
    # The limit is for the command's text without its literals: 2 x 5000 bytes of text is too much...
    half = b"x" * 5000
    assert events(b"a ID (" + half + b" {1}\r\nz " + half + b")\r\n") == [Continue(), Fatal("line too long")]
    # ...but a literal itself does not count towards it.
    big = b"y" * 8000
    assert events(b"a LOGIN {8000}\r\n" + big + b" {8000}\r\n" + big + b"\r\n") == [
        Continue(), Continue(), Command("a", "LOGIN", (big, big))]


def test_sasl_line_over_8k_is_fatal():
    p = PreauthParser()
    p.sasl = True
    p.feed(b"A" * (MAX_LINE + 1))
    assert p.next_event() == Fatal("line too long")
    p2 = PreauthParser()
    p2.sasl = True
    p2.feed(b"A" * (MAX_LINE + 1) + b"\r\n")
    assert p2.next_event() == Fatal("line too long")


def test_fatal_is_final():
    p = PreauthParser()
    p.feed(b"a LOGIN {5000+}\r\n")
    assert p.next_event() == Fatal("non-synchronising literal over 4096 bytes")
    p.feed(b"b NOOP\r\n")
    assert p.next_event() is None
    assert p.buffered == 0


def test_two_gigabyte_literal_is_a_tagged_bad_and_parsing_goes_on():
    p = PreauthParser()
    p.feed(b"a LOGIN {2147483648}\r\n")
    ev = p.next_event()
    assert isinstance(ev, Bad) and ev.tag == "a" and "literal too large" in ev.text
    assert p.next_event() is None
    p.feed(b"b NOOP\r\n")
    assert p.next_event() == Command("b", "NOOP", ())


def test_literal_just_over_the_limit_is_bad():
    ev = one(b"a LOGIN user {8193}\r\n")
    assert isinstance(ev, Bad) and ev.tag == "a"
    assert events(b"a LOGIN user {8192}\r\n")[0] == Continue()


def test_absurd_literal_lengths():
    # 20 digits is the most the parser reads as a number; more is just a bad token.
    ev = one(b"a LOGIN {99999999999999999999}\r\n")
    assert isinstance(ev, Bad) and ev.tag == "a"
    ev = one(b"a LOGIN {999999999999999999999}\r\n")
    assert isinstance(ev, Bad) and ev.tag == "a"
    assert one(b"a LOGIN {99999999999999999999+}\r\n") == Fatal("non-synchronising literal over 4096 bytes")


def test_big_non_sync_literal_is_fatal():
    assert events(b"a LOGIN {5000+}\r\n" + b"x" * 5000 + b"\r\n") == [Fatal("non-synchronising literal over 4096 bytes")]
    assert one(b"a LOGIN {4097+}\r\n") == Fatal("non-synchronising literal over 4096 bytes")


@pytest.mark.parametrize("data", [
    b"\x00\x01\x02\r\n",
    b"\xff\xfe\xfd\r\n",
    b"a\x00 LOGIN x y\r\n",
    b"a LOGIN x\x00y z\r\n",
    b"a LOGIN x \x01\r\n",
    b"a LOGIN %d *\r\n",
    b"a LOGIN ]x y\r\n",
    b"a LOGIN x y\x7f\r\n",
    b'a LOGIN "\xc3\x28" y\r\n',                 # quoted string with invalid UTF-8
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n",   # a TLS ClientHello on the plain port
])
def test_garbage_is_bad_not_an_exception(data):
    evs = events(data)
    assert evs and all(isinstance(e, Bad) for e in evs), evs


def test_eight_bit_tag_is_bad():
    ev = one(b"\xff LOGIN x y\r\n")
    assert isinstance(ev, Bad) and ev.tag is None


@pytest.mark.parametrize("data", [b"\r\n", b" LOGIN x y\r\n", b"   \r\n", b"a\r\n", b"+ LOGIN x y\r\n",
                                  b"(a) NOOP\r\n", b'"a" NOOP\r\n', b"a{1} NOOP\r\n"])
def test_missing_tag_or_command_is_an_untagged_bad(data):
    ev = one(data)
    assert isinstance(ev, Bad) and ev.tag is None, ev


@pytest.mark.parametrize("data", [b"a \r\n", b"a (NOOP)\r\n", b"a  NOOP\r\n", b'a "NOOP"\r\n'])
def test_missing_command_after_a_tag(data):
    ev = one(data)
    assert isinstance(ev, Bad) and ev.tag == "a", ev


@pytest.mark.parametrize("data", [b"a \x80\r\n", b"a LOGIN \xff \xfe\r\n", b"\xc3\xa4 NOOP\r\n",
                                  b"GET / HTTP/1.1\r\n", b"a LOGIN \xc3\xa4 \xed\xa0\x80\r\n"])
def test_eight_bit_and_foreign_input_never_raises(data):
    # 8-bit atoms are tolerated (some clients send raw UTF-8 user names); the front door BADs unknown names.
    evs = events(data)
    assert len(evs) == 1 and isinstance(evs[0], (Bad, Command)), evs


@pytest.mark.parametrize("data", [b"a ID (\r\n", b"a ID ((x)\r\n", b"a ID x)\r\n", b"a ID ())\r\n",
                                  b"a ID (x {1}\r\nz\r\n"])
def test_unbalanced_parentheses(data):
    evs = [e for e in events(data) if not isinstance(e, Continue)]
    assert len(evs) == 1 and isinstance(evs[0], Bad) and evs[0].tag == "a", evs


@pytest.mark.parametrize("data", [b'a LOGIN "x\\n" y\r\n', b'a LOGIN "x\\" y\r\n', b'a LOGIN "x\\\r\n',
                                  b'a LOGIN "abc\r\n', b'a LOGIN "x\\a" y\r\n', b'a LOGIN x "y\r\n'])
def test_bad_escapes_and_unterminated_quotes(data):
    ev = one(data)
    assert isinstance(ev, Bad) and ev.tag == "a", ev


def test_bad_keeps_the_parser_usable():
    evs = events(b"a LOGIN \"x\r\n\x00\r\nb ID (\r\nc NOOP\r\n")
    assert [type(e) for e in evs] == [Bad, Bad, Bad, Command]
    assert evs[-1] == Command("c", "NOOP", ())


def test_bad_in_a_continuation_fragment_keeps_the_tag():
    evs = events(b"a LOGIN {1}\r\nx \x00\r\nb NOOP\r\n")
    assert evs[0] == Continue()
    assert isinstance(evs[1], Bad) and evs[1].tag == "a"
    assert evs[2] == Command("b", "NOOP", ())


def test_literal_announcement_must_end_the_line():
    ev = one(b"a LOGIN {3}\n\r\n")
    assert isinstance(ev, Bad)


def test_oversized_non_sync_literal_is_never_executed():
    evs = events(b"a LOGIN u {20+}\r\nx\r\nz LOGOUT\r\n12345\r\n", max_literal=16)
    assert not any(isinstance(e, Command) for e in evs), evs


# -- STARTTLS: drop what was pipelined behind it --------------------------------------------------

def test_discard_drops_injected_commands():
    p = PreauthParser()
    p.feed(b"a STARTTLS\r\nb LOGIN x y\r\n")
    assert p.next_event() == Command("a", "STARTTLS", ())
    p.discard()
    assert p.next_event() is None
    assert p.buffered == 0
    # What arrives later (after the handshake) is parsed normally.
    p.feed(b"c NOOP\r\n")
    assert p.next_event() == Command("c", "NOOP", ())


def test_discard_drops_a_half_read_command():
    p = PreauthParser()
    p.feed(b"a STARTTLS\r\nb LOGIN {5}\r\nab")
    assert p.next_event() == Command("a", "STARTTLS", ())
    p.discard()
    p.feed(b"c NOOP\r\n")
    assert p.next_event() == Command("c", "NOOP", ())


def test_discard_forgets_a_pending_literal():
    p = PreauthParser()
    p.feed(b"b LOGIN {5}\r\n")
    assert p.next_event() == Continue()
    p.discard()
    p.feed(b"c NOOP\r\n")
    assert p.next_event() == Command("c", "NOOP", ())


# -- fuzzing -----------------------------------------------------------------------------------

TOKENS = [b"a", b"b1", b"*", b"+", b"LOGIN", b"AUTHENTICATE", b"PLAIN", b"ID", b"NIL", b"STARTTLS", b"NOOP",
          b" ", b" ", b" ", b"\r\n", b"\r\n", b"\r\n", b"\r", b"\n", b'"', b'\\"', b"\\\\", b"\\", b"(", b")",
          b"{0}", b"{1}", b"{3}", b"{2+}", b"{4096+}", b"{4097+}", b"{8192}", b"{8193}", b"{2147483648}",
          b"~{1}", b"{", b"}", b"\x00", b"\x7f", b"\xff", b"\xc3\xa4", b"=", b"AGFsaWNlAHB3", b"%", b"]"]

imapish = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)), max_size=120).map(b"".join)
raw = st.binary(max_size=1500)
inputs = st.one_of(raw, imapish)
chunk_sizes = st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=12)


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i:i + n])
        i, k = i + n, k + 1
    return out or [b""]


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(inputs, chunk_sizes, st.booleans())
def test_fuzz_chunking_does_not_change_the_events(data, sizes, sasl):
    """Never raises, always a known event type, always stops (drain's bound), same events for any chunking."""
    whole = events(data, sasl_after_authenticate=sasl)
    assert whole == events(chunked(data, sizes), sasl_after_authenticate=sasl)
    assert whole == events(bytewise(data), sasl_after_authenticate=sasl)
    # Fatal is always the last word.
    assert all(not isinstance(e, Fatal) for e in whole[:-1])


@FUZZ
@given(inputs, chunk_sizes, st.booleans(), st.integers(1, 64), st.integers(0, 64))
def test_fuzz_small_limits_never_raise(data, sizes, sasl, max_line, max_literal):
    """With tiny limits every limit path is reachable: still no exception, no endless loop."""
    for chunks in (data, chunked(data, sizes)):
        evs = events(chunks, sasl_after_authenticate=sasl, max_line=max_line, max_literal=max_literal)
        assert all(isinstance(e, EVENT_TYPES) for e in evs)
        assert all(not isinstance(e, Fatal) for e in evs[:-1])


@FUZZ
@given(inputs, st.booleans())
@example(b"\x00" * 40 + b"\r\n", False)
def test_fuzz_chunking_does_not_change_the_events_small_limits(data, sasl):
    kw = dict(max_line=40, max_literal=30, sasl_after_authenticate=sasl)
    assert events(data, **kw) == events(bytewise(data), **kw)


astrings = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


def encode_astring(s: str, how: int) -> bytes:
    b = s.encode("utf-8")
    if how == 0 and not needs_literal(s):
        return quote(s)
    if how == 1 and b and all(0x21 <= c < 0x7f and c not in b'(){%*"\\]' for c in b) and b.upper() != b"NIL":
        return b
    return b"{%d+}\r\n" % len(b) + b


@FUZZ
@given(astrings, astrings, st.integers(0, 2), st.integers(0, 2), st.binary(max_size=200), chunk_sizes)
def test_fuzz_login_round_trip_and_take_buffer(user, password, how_u, how_p, rest, sizes):
    """Any user/password, however encoded, comes out intact, and take_buffer() is exactly what follows."""
    data = b"t LOGIN " + encode_astring(user, how_u) + b" " + encode_astring(password, how_p) + b"\r\n"
    p = PreauthParser()
    evs = []
    for chunk in chunked(data, sizes) + [rest]:
        p.feed(chunk)
        if not evs:
            evs = drain(p)  # stops being called once LOGIN arrived, like the front door
    assert len(evs) == 1 and isinstance(evs[0], Command), evs
    assert evs[0].tag == "t" and evs[0].name == "LOGIN"
    got = tuple(a.decode("utf-8") if isinstance(a, bytes) else a for a in evs[0].args)
    assert got == (user, password)
    assert p.take_buffer() == rest
