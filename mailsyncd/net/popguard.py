"""poplib connections whose every command line passes ``cmdguard.check_line`` before it is sent.

poplib sends all its commands (USER, PASS, STLS, CAPA, UIDL, LIST, TOP, RETR, RSET,
QUIT) through ``_putcmd``, as does the POP3 source; POP3 has no literals.
"""

from __future__ import annotations

import poplib

from ..imap.cmdguard import check_line


class _Guarded:
    def _putcmd(self, line):
        check_line(line)
        super()._putcmd(line)


class POP3(_Guarded, poplib.POP3):
    pass


class POP3_SSL(_Guarded, poplib.POP3_SSL):
    pass
