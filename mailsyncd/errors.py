"""Exceptions the admin sees.  Their text names the cause and never a password."""

from __future__ import annotations

import re


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


class LeaseLost(MailsyncError):
    """Another node took the account's lease over (this one was paused or cut off past it): the pass
    stops without writing anything more."""


class NoPassword(MailsyncError):
    """No source password is available for the account."""


# -- the one classifier of server refusals -------------------------------------------------------------
# TEMPORARY: not now, retry later; THROTTLED: too many of us (fewer connections, later); AUTH: these
# credentials are refused; PERMANENT: anything else, the caller's own "no".
TEMPORARY, THROTTLED, AUTH, PERMANENT = "temporary", "throttled", "auth", "permanent"
NOT_NOW = (TEMPORARY, THROTTLED)

# Response codes decide first: IMAP's (RFC 5530) and POP3's (RFC 2449, RFC 3206).  An unknown code
# ([ALERT], a folder name in brackets) decides nothing.  Not [OVERQUOTA]: the target's state, which
# must not lower the source's connection limit (the writer retries it in a later pass: append_waits).
_CODES = {
    "UNAVAILABLE": TEMPORARY, "SERVERBUG": TEMPORARY, "SYS/TEMP": TEMPORARY,
    "LIMIT": THROTTLED, "INUSE": THROTTLED, "IN-USE": THROTTLED, "LOGIN-DELAY": THROTTLED,
    "AUTHENTICATIONFAILED": AUTH, "AUTHORIZATIONFAILED": AUTH, "EXPIRED": AUTH, "AUTH": AUTH,
    "SYS/PERM": PERMANENT, "TOOBIG": PERMANENT, "NOPERM": PERMANENT, "CONTACTADMIN": PERMANENT,
    "PRIVACYREQUIRED": PERMANENT, "CANNOT": PERMANENT,
}
_CODE = re.compile(r"\[([A-Za-z][A-Za-z0-9/_-]*)")
# Then words: Dovecot's mail_max_userip_connections, Gmail's bandwidth and "Too many simultaneous
# connections", POP3 maildrop locks, and a BYE instead of an answer to LOGIN (imaplib reports it as a
# lost connection).
_THROTTLE_WORDS = ("too many", "maximum number of connections", "bandwidth", "rate limit", "throttl",
                   "connection limit")
_TEMPORARY_WORDS = ("try again", "temporar", "locked", "connection lost during login")


def classify(text: str | bytes) -> str:
    """What a server's refusal means: TEMPORARY, THROTTLED, AUTH or PERMANENT (codes first, then words)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    for code in _CODE.findall(text):
        kind = _CODES.get(code.upper())
        if kind is not None:
            return kind
    low = text.lower()
    if any(w in low for w in _THROTTLE_WORDS):
        return THROTTLED
    if any(w in low for w in _TEMPORARY_WORDS):
        return TEMPORARY
    return PERMANENT


def not_now(text: str | bytes) -> bool:
    """Does this refusal mean "not now" (retry later, perhaps with fewer connections) rather than "no"?"""
    return classify(text) in NOT_NOW


def append_waits(text: str | bytes) -> bool:
    """A target's refusal of an APPEND: True when the folder should wait for a later pass (the target is
    full, unwell or busy: [OVERQUOTA], [UNAVAILABLE], [SERVERBUG], [INUSE]), False when only this message
    is refused ([TOOBIG], [LIMIT] for one message over the target's size limit, anything else)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    codes = {c.upper() for c in _CODE.findall(text)}
    return "OVERQUOTA" in codes or any(_CODES.get(c) == TEMPORARY for c in codes) or \
        bool(codes & {"INUSE", "IN-USE"})


# The name sync/account.py asks with: a pass failing "not now" makes the scheduler halve the host's limit.
looks_throttled = not_now


class UnsafeCommand(MailsyncError):
    """A command argument held CR, LF or NUL outside a literal: refused before a byte was sent."""


class MessageTooLarge(ConnectionLost):
    """A literal larger than allowed was announced; the connection was dropped without reading it."""

    def __init__(self, text: str, *, uid: int | None, announced: int | None, actual: int, limit: int):
        super().__init__(text)
        self.uid, self.announced, self.actual, self.limit = uid, announced, actual, limit
        self.recorded = False   # set once the copier has recorded the message as skipped
