"""Exceptions the admin sees.  Their text names the cause and never a password."""

from __future__ import annotations


class MailsyncError(Exception):
    """Base: the message is written for the admin."""


class AuthFailed(MailsyncError):
    """The server refused the credentials.  ``server_text``: the server's own words, if it gave any
    (they may say which password it wants: see ``AppPassword.refusal_matches``)."""

    def __init__(self, message: str, server_text: str = "") -> None:
        super().__init__(message)
        self.server_text = server_text


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


# Words with which providers say "not now" or "too many of you": NO [LIMIT], [UNAVAILABLE], Dovecot's
# mail_max_userip_connections, Gmail's bandwidth and "Too many simultaneous connections".
_THROTTLE_WORDS = ("[limit]", "[unavailable]", "[inuse]", "[in-use]", "too many", "maximum number of connections",
                   "bandwidth", "try again later", "temporarily", "rate limit", "throttl", "connection limit",
                   # a BYE instead of an answer to LOGIN (imaplib reports it as a lost connection)
                   "connection lost during login")


def looks_throttled(text: str) -> bool:
    """Does this error text read like the server is limiting us (rather than refusing us)?"""
    low = text.lower()
    return any(w in low for w in _THROTTLE_WORDS)


class UnsafeCommand(MailsyncError):
    """A command argument held CR, LF or NUL outside a literal: refused before a byte was sent."""


class MessageTooLarge(ConnectionLost):
    """A literal larger than allowed was announced; the connection was dropped without reading it."""

    def __init__(self, text: str, *, uid: int | None, announced: int | None, actual: int, limit: int):
        super().__init__(text)
        self.uid, self.announced, self.actual, self.limit = uid, announced, actual, limit
        self.recorded = False   # set once the copier has recorded the message as skipped
