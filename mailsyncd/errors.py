"""Exceptions the admin sees.  Their text names the cause and never a password."""

from __future__ import annotations


class MailsyncError(Exception):
    """Base: the message is written for the admin."""


class AuthFailed(MailsyncError):
    """The server refused the credentials."""


class Unreachable(MailsyncError):
    """No TCP connection could be made (DNS, refused, timeout)."""


class TLSFailure(MailsyncError):
    """The TLS handshake or certificate check failed."""


class ProtocolError(MailsyncError):
    """The server said something we cannot work with."""


class ConnectionLost(MailsyncError):
    """An established connection broke; the operation may be retried."""


class FolderFailed(MailsyncError):
    """One folder could not be synced; the others go on."""


class NoPassword(MailsyncError):
    """No source password is available for the account."""
