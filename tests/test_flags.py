"""Which flags a source may hand us: RFC 3501 atoms only (mailsyncd/imap/flags.py), and storable() agrees."""

from __future__ import annotations

import pytest

from mailsyncd.imap.flags import is_flag, split_flags
from mailsyncd.text import shown
from mailsyncd.sync.logic import storable


@pytest.mark.parametrize("flag", ["\\Seen", "\\Answered", "$Junk", "NonJunk", "$label1", "Old-Flag_2", b"\\Draft",
                                  "a!#&'+,-./:;<=>?@^`|~"])
def test_atoms_are_flags(flag):
    assert is_flag(flag)


@pytest.mark.parametrize("flag", ["", "x\r\nZ1 EXPUNGE", "a b", "(x", "x)", "{3}", "50%", "\\*", 'a"b', "a]b",
                                  "\\", "\\\\Seen", "x\x00", "x\x7f", "ключ", b"\xff", "x\ty", 7, None])
def test_everything_else_is_not(flag):
    assert not is_flag(flag)


def test_split_keeps_order_and_type():
    assert split_flags([b"\\Seen", b"x\r\ny", "$A"]) == ((b"\\Seen", "$A"), (b"x\r\ny",))


def test_storable_never_keeps_a_non_atom_even_when_the_target_allows_any_keyword():
    kept, dropped = storable(["\\Seen", "x\r\nZ3 CREATE PWNED", "$Work"], frozenset({"\\Seen", "\\*"}))
    assert kept == ("\\Seen", "$Work") and dropped == ("x\r\nZ3 CREATE PWNED",)
    assert storable(["a b", "ok"], None) == (("ok",), ("a b",))


def test_shown_escapes_control_characters():
    assert shown("x\r\ny\x1b[31m") == "x\\r\\ny\\x1b[31m"
    assert shown("收件箱") == "收件箱"
    assert shown("a" * 100, 10) == "a" * 9 + "…"
