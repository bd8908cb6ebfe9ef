"""Throwaway IMAP servers other than Dovecot for the tests: Courier-IMAP (:mod:`.courier`) and
Cyrus IMAP (:mod:`.cyrus`), run from the private prefix that ``scripts/setup-servers.sh``
unpacks (see :mod:`.private`).  The Dovecot supervisor is :mod:`mailsyncd.devserver`."""
