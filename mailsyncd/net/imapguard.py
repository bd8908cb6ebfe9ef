"""The IMAP client every connection of the engine uses: one choke point for what goes out and comes in.

Out: every command argument that is not a literal passes ``cmdguard.check_args``
before a byte is written.  imaplib builds commands in ``IMAP4._command`` (LOGIN,
SELECT, EXAMINE, CREATE, STATUS, STORE, APPEND, ID, the raw UID FETCH) and
imapclient in ``_raw_command`` (LIST with RETURN, MULTIAPPEND): both are checked.
In: each literal is checked against ``ReadLimits`` before it is read, and when it
is too large the socket is closed with the literal unread.
"""

from __future__ import annotations

from imapclient import IMAPClient
from imapclient.imapclient import _is8bit

from ..errors import MailsyncError
from ..imap.cmdguard import check_args
from ..imap.readlimits import ReadLimits

DEFAULT_CAP = 64 * 1024**2


class _Guarded:
    """Mixed in front of imaplib's connection class (plain or TLS) of one connection."""

    limits: ReadLimits
    next_sizes: dict[int, int] | None = None

    def _command(self, name, *args):
        check_args(name, args)   # the literal travels in self.literal, not in args
        self.limits.start(self.next_sizes)
        self.next_sizes = None
        return super()._command(name, *args)

    def read(self, size):
        try:
            self.limits.literal(size, getattr(self.mo, "string", b""))
        except MailsyncError:
            self._drop()
            raise
        return super().read(size)

    def _get_line(self):
        line = super()._get_line()
        try:
            self.limits.line(len(line))
        except MailsyncError:
            self._drop()
            raise
        return line

    def _drop(self) -> None:
        """Close without reading what is still coming: the kernel answers the rest with a reset."""
        try:
            self.shutdown()
        except OSError:
            pass


_CLASSES: dict[type, type] = {}


def _guarded_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Guarded{cls.__name__}", (_Guarded, cls), {})
    return _CLASSES[cls]


class GuardedIMAPClient(IMAPClient):
    def _create_IMAP4(self):
        imap = super()._create_IMAP4()
        imap.__class__ = _guarded_class(type(imap))
        imap.limits = ReadLimits(DEFAULT_CAP)
        return imap

    def _raw_command(self, command, args, uid=True):
        items = list(args) if isinstance(args, (list, tuple)) else [args]
        check_args(command, [a for a in items if not (isinstance(a, bytes) and _is8bit(a))])
        self._imap.limits.start()
        return super()._raw_command(command, args, uid)


def expect_lines(client: IMAPClient, n: int) -> None:
    """The next command's response lines may total at most ``n`` bytes (never more than LINE_BUDGET)."""
    client._imap.limits.next_budget = n


def set_cap(client: IMAPClient, cap: int) -> None:
    client._imap.limits.cap = cap


def expect_sizes(client: IMAPClient, sizes: dict[int, int] | None) -> None:
    """The next command's literals are bounded by these announced sizes (UID -> RFC822.SIZE)."""
    client._imap.next_sizes = sizes
