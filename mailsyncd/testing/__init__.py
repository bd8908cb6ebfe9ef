"""Throwaway IMAP servers for the tests and ``mailsyncctl demo``, on 127.0.0.1 in temp dirs:
Dovecot (:mod:`.dovecot`), and Courier-IMAP (:mod:`.courier`) and Cyrus IMAP (:mod:`.cyrus`) run
from the private prefix that ``scripts/setup-servers.sh`` unpacks (see :mod:`.private`).  Each
runs under a supervisor process that stops it when its owner dies (:class:`.common.Supervisor`).
Not used by the daemon itself."""

from .common import free_port, make_test_cert
from .dovecot import DoveadmError, Dovecot, DovecotError, dovecot_missing_reason

__all__ = ["DoveadmError", "Dovecot", "DovecotError", "dovecot_missing_reason", "free_port", "make_test_cert"]
