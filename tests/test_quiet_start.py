"""A clean start says nothing the admin can do nothing about: no Python warnings in the daemon's log."""

from __future__ import annotations

import imaplib
import pytest
from proxyenv import Daemon


@pytest.mark.dovecot
def test_a_clean_start_with_tls_logs_no_warning(tmp_path, dovecot_pair, test_cert):
    # Python shows every warning category once per place by default: the log would carry it
    with Daemon(tmp_path, dovecot_pair, test_cert) as d:
        c = imaplib.IMAP4_SSL("127.0.0.1", d.imaps_port, ssl_context=d.client_tls())   # implicit TLS handshake
        c.logout()
        c = imaplib.IMAP4("127.0.0.1", d.imap_port)
        c.starttls(ssl_context=d.client_tls())                                        # and STARTTLS
        c.logout()
    log = d.log()
    assert "event=ready" in log and "event=stopped" in log, log
    assert not [ln for ln in log.splitlines() if "Warning" in ln or " WARNING " in ln], log
