"""The outgoing-command check (mailsyncd/imap/cmdguard.py)."""

from __future__ import annotations

import pytest

from mailsyncd.errors import UnsafeCommand
from mailsyncd.imap.cmdguard import check_args, check_line


@pytest.mark.parametrize("args", [("INBOX",), (b'"Sent Items"', "(\\Seen $Junk)", '"06-May-2021 07:08:09 +0000"'),
                                  (None, "1:*"), ("名",)])
def test_ordinary_arguments_pass(args):
    check_args("APPEND", args)


@pytest.mark.parametrize("bad", ["x\r\nZ1 EXPUNGE", "x\n", "x\r", b"a\x00b", "(\\Seen x\r\nY)"])
def test_cr_lf_nul_are_refused_and_the_value_is_not_echoed(bad):
    with pytest.raises(UnsafeCommand) as e:
        check_args("LOGIN", ("user", bad))
    assert "LOGIN" in str(e.value) and "EXPUNGE" not in str(e.value)   # may be a password: length only


def test_the_command_word_itself_is_checked():
    with pytest.raises(UnsafeCommand):
        check_args(b"NOOP\r\nZ EXPUNGE", ())


def test_pop3_lines():
    check_line("TOP 1 999999999")
    for bad in ("USER a\r\nDELE 1", "PASS x\0", b"RETR 1\n"):
        with pytest.raises(UnsafeCommand):
            check_line(bad)
