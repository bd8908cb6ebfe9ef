"""Server strings made safe to show (mailsyncd/text.py), and log records as one printable line (logs.py)."""

from __future__ import annotations

import io
import json
import logging
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsyncd import logs
from mailsyncd.text import field, json_text, shown

EVIL = "\x1b[2J\x1b]0;title\x07"
HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp", "Cn"}


def safe(s: str) -> bool:
    """One line, and nothing a terminal or a bidi algorithm acts on."""
    return all(unicodedata.category(c) not in HIDDEN for c in s)


@pytest.mark.parametrize("raw, want", [
    (EVIL, "\\x1b[2J\\x1b]0;title\\x07"),
    ("a\r\nb\tc", "a\\r\\nb\\tc"),
    ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
    ("Invoice\u202efdp.exe", "Invoice\\u202efdp.exe"),
    ("\u2066x\u2069 \u200b \ufeff", "\\u2066x\\u2069 \\u200b \\ufeff"),
    ("line\u2028para\u2029", "line\\u2028para\\u2029"),
    ("lone \ud800", "lone \\ud800"),
    ("tag \U000e0001", "tag \\U000e0001"),
    ("已发送", "已发送"),
    ("客户/重要 Archive\u3000x", "客户/重要 Archive\u3000x"),     # spaces, CJK: readable as they are
    ("back\\slash", "back\\slash"),
])
def test_shown(raw, want):
    assert shown(raw) == want


def test_shown_bounds_length_without_cutting_an_escape():
    assert shown("a" * 10, 6) == "aaaaa…"
    assert shown("a" * 6, 6) == "a" * 6
    assert shown("ab\x1bcd", 6) == "ab…"          # "\x1b" does not fit whole: left out
    assert shown("ab\x1b", 6) == "ab\\x1b"
    assert shown("x" * 10**6 + "\x1b", 120) == "x" * 119 + "…"
    assert shown(None) == "None" and shown(42) == "42"


def test_field_quotes_what_could_forge_another_field():
    assert field("alice@example.com") == "alice@example.com"
    assert field("x ip=1.2.3.4") == "'x ip=1.2.3.4'"
    assert field("x\u00a0ip=1.2.3.4") == "'x\\xa0ip=1.2.3.4'"
    assert field("a\r\nevent=login_ok") == "a\\r\\nevent=login_ok"
    assert field("") == "''"
    assert len(field("y" * 500)) == 120


@given(st.text())
def test_shown_is_always_one_safe_line(s):
    out = shown(s)
    assert safe(out) and "\n" not in out and "\r" not in out
    assert len(out) >= len(s)


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_shown_with_a_limit_stays_within_it(s, limit):
    out = shown(s, limit)
    assert safe(out) and len(out) <= limit


@given(st.text().filter(lambda s: all(unicodedata.category(c) not in HIDDEN for c in s)))
def test_shown_keeps_readable_text(s):
    assert shown(s) == s


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids), max_leaves=20))
def test_json_text_round_trips_and_carries_no_hidden_character(doc):
    for kw in ({}, {"indent": 2}, {"separators": (",", ":")}):
        text = json_text(doc, **kw)
        assert json.loads(text) == doc
        assert safe(text.replace("\n", ""))
        text.encode("utf-8")          # no lone surrogate left raw


def test_json_text_keeps_chinese_readable():
    assert json_text({"folder": "已发送\x1b"}) == '{"folder": "已发送\\u001b"}'


# -- the log ---------------------------------------------------------------------------------------

@pytest.fixture
def log_stream():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.setup("info", stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_a_log_record_is_one_escaped_line_whatever_the_caller_passes(log_stream):
    log = logging.getLogger("mailsyncd.test")
    folder = f"Inbox{EVIL}\r\nevent=login_ok ip=127.0.0.1 user=admin\u202e"
    log.warning("event=folder_failed folder=%s error=%r", folder, folder)
    log.info(folder)                                   # even as the format string itself
    try:
        raise ValueError(folder)
    except ValueError:
        log.exception("event=crash where=%s", folder)   # a traceback too: one line
    text = log_stream.getvalue()
    lines = text.splitlines()
    assert len(lines) == 3, lines
    assert text.count("\n") == 3 and "\r" not in text and "\x1b" not in text and "\x07" not in text
    assert safe(text.replace("\n", ""))
    assert "folder=Inbox\\x1b[2J\\x1b]0;title\\x07\\r\\nevent=login_ok ip=127.0.0.1 user=admin\\u202e" in lines[0]
    assert "Traceback (most recent call last):\\n" in lines[2] and "ValueError: Inbox\\x1b[2J" in lines[2]


def test_the_log_still_redacts_and_bounds_a_line(log_stream):
    log = logging.getLogger("mailsyncd.test")
    log.info("sent LOGIN bob s3cret\x1b[2J")
    log.info("x" * 100_000)
    lines = log_stream.getvalue().splitlines()
    assert "s3cret" not in lines[0] and "LOGIN bob ***" in lines[0]
    assert len(lines[1]) <= logs.MAX_LINE and lines[1].endswith("…")
