"""`source: {host: auto}` end to end: the daemon finds the old server through DNS and migrates from it."""

from __future__ import annotations

import imaplib
import json

import pytest

from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
from dnsserver import TestDNS
from mailsyncd.testing import make_test_cert
from proxyenv import Daemon
from seed import Msg, make_message, seed, snapshot
from syncenv import ctl

A = "alice@example.com"


@pytest.mark.timeout(180)
def test_the_daemon_detects_the_source_by_srv_and_migrates(make_dovecot, tmp_path):
    # the SRV target (localhost) is outside example.com: its certificate must name example.com (RFC 6186 s. 6)
    (tmp_path / "cert").mkdir()
    test_cert = make_test_cert(str(tmp_path / "cert"), cn="example.com")
    src = make_dovecot("source", SOURCE_USERS, ssl=test_cert)
    tgt = make_dovecot("target", TARGET_USERS, master=MASTER)
    pair = DovecotPair(src, tgt, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(8)]})
    with TestDNS(f"""
            example.com.              300 IN MX  10 mx.example.com.
            _imaps._tcp.example.com.  300 IN SRV 0 1 {src.imaps_port} localhost.
            localhost.                300 IN A   127.0.0.1
            """) as dns:
        d = Daemon(tmp_path, pair, source={"host": "auto", "ca_file": test_cert[0], "security": "tls"})
        d.doc["dns"] = {"nameservers": [f"127.0.0.1:{dns.port}"], "timeout": 2, "allow_private": True}
        d.doc["domains"]["example.org"] = {k: dict(v) if isinstance(v, dict) else v
                                           for k, v in d.doc["domains"]["example.com"].items()}
        d.save()
        with d:
            log = d.log()
            assert "event=detected domain=example.com host=localhost" in log and "step=srv" in log
            assert "event=detect_failed domain=example.org" in log
            c = imaplib.IMAP4("127.0.0.1", d.imap_port)
            c.login(A, SOURCE_USERS[A])
            c.logout()
            d.wait_log(f"event=pass_done account={A} ok=True", 60)
            with open(tmp_path / "state" / "daemon.json") as f:
                status = json.load(f)
            assert status["detected"]["example.com"]["step"] == "srv"
            assert "MX" in status["detect_errors"]["example.org"] or "SRV" in status["detect_errors"]["example.org"]
        r = ctl("detect", "example.com", "--dns-server", f"127.0.0.1:{dns.port}", "--ca-file", test_cert[0],
                "--allow-private")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "localhost" in r.stdout and str(src.imaps_port) in r.stdout
    assert snapshot(*pair.source_account(A)) == snapshot(*pair.target_account(A))
