"""The IMAP client every connection of the engine uses: one choke point for what goes out and comes in.

Out: every command argument that is not a literal passes ``cmdguard.check_args``
before a byte is written.  imaplib builds commands in ``IMAP4._command`` (LOGIN,
SELECT, EXAMINE, CREATE, STATUS, STORE, APPEND, ID, the raw UID FETCH) and
imapclient in ``_raw_command`` (LIST with RETURN, MULTIAPPEND): both are checked.
In: each literal is checked against ``ReadLimits`` before it is read, and when it
is too large the socket is closed with the literal unread.
"""

from __future__ import annotations

import imaplib
import re

from imapclient import IMAPClient
from imapclient import exceptions as imapexc
from imapclient.datetime_util import datetime_to_INTERNALDATE
from imapclient.imapclient import _is8bit, seq_to_parenstr
from imapclient.util import to_bytes

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

    def append(self, mailbox, flags, date_time, message):
        """imaplib's APPEND, without copying a message whose line ends are all CRLF already: its
        mapping of bare CR and LF to CRLF splits a message into one piece per line and joins them."""
        if not crlf_only(message) or self.utf8_enabled:
            return super().append(mailbox, flags, date_time, message)
        if flags and (flags[0], flags[-1]) != ("(", ")"):
            flags = f"({flags})"
        self.literal = message
        return self._simple_command("APPEND", mailbox or "INBOX", flags or None,
                                    imaplib.Time2Internaldate(date_time) if date_time else None)

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

    def multiappend(self, folder, msgs):
        """MULTIAPPEND (RFC 3502) like imapclient's, but each message is sent as it is: imapclient
        copies every one twice (into a bytes subclass that marks it a literal, then joined to its
        ``{n}``), a batch's worth of memory per connection for nothing."""
        msgs = [m if isinstance(m, dict) else {"msg": m} for m in msgs]
        if not msgs:
            raise ValueError("MULTIAPPEND of no message")
        imap = self._imap
        plus = b"+" if self.has_capability("LITERAL+") else b""
        parts = []
        for m in msgs:
            words = []
            if "flags" in m:
                words.append(to_bytes(seq_to_parenstr(m["flags"])))
            if "date" in m:
                words.append(to_bytes('"%s"' % datetime_to_INTERNALDATE(m["date"])))
            parts.append((words, to_bytes(m["msg"])))
        folder = self._normalise_folder(folder)
        check_args(b"APPEND", [folder, *(w for words, _ in parts for w in words)])
        imap.limits.start()
        tag = imap._new_tag()
        for i, (words, body) in enumerate(parts):
            head = [tag, b"APPEND", folder] if i == 0 else [b""]
            imap.send(b" ".join(head + words + [b"{%d%s}" % (len(body), plus)]) + b"\r\n")
            if not plus:
                self._continuation(tag)
            imap.send(body)
        imap.send(b"\r\n")
        return imap._command_complete("APPEND", tag)

    def _continuation(self, tag: bytes) -> None:
        while self._imap._get_response():   # None: the continuation request ("+")
            tagged = self._imap.tagged_commands.get(tag)
            if tagged:
                raise imapexc.IMAPClientAbortError(
                    "unexpected response while waiting for continuation response: " + repr(tagged))


def crlf_only(b: bytes) -> bool:
    """Every CR is followed by LF and every LF preceded by CR (three scans in C, no copy): with no CR
    alone, there are as many CRLFs as CRs, so as many LFs as CRs leaves no LF alone.  (Counting
    CRLFs, a two-byte pattern, took longer than the other two scans together.)"""
    return b.count(b"\n") == b.count(b"\r") and not _BARE_CR.search(b)


_BARE_CR = re.compile(rb"\r(?!\n)")


def expect_lines(client: IMAPClient, n: int) -> None:
    """The next command's response lines may total at most ``n`` bytes (never more than LINE_BUDGET)."""
    client._imap.limits.next_budget = n


def set_cap(client: IMAPClient, cap: int) -> None:
    client._imap.limits.cap = cap


def expect_sizes(client: IMAPClient, sizes: dict[int, int] | None) -> None:
    """The next command's literals are bounded by these announced sizes (UID -> RFC822.SIZE)."""
    client._imap.next_sizes = sizes
