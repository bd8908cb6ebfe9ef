"""Bad input and broken servers: each gives a clear error naming the cause, and damages nothing."""

from __future__ import annotations

import datetime as dt
import socket

import pytest

from faultproxy import CuttingProxy, FaultProxy
from secretscan import assert_no_secrets
from seed import Msg, make_message, seed, snapshot
from syncenv import ctl, make_config, password_file, sync_once

A = "alice@example.com"
D = dt.datetime(2021, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)


def _inbox(n: int, size: int = 3000) -> dict:
    return {"INBOX": [Msg(make_message(i, size=size), ("\\Seen",), D) for i in range(n)]}


def test_wrong_password_is_a_clear_error(dovecot_pair, tmp_path):
    cfg = make_config(tmp_path, dovecot_pair)
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", password_file(tmp_path, "not-the-password"))
    assert r.returncode == 1
    assert "login refused for alice@example.com" in r.stderr and "source 127.0.0.1" in r.stderr
    assert "not-the-password" not in r.stderr + r.stdout
    assert "Traceback" not in r.stderr


def test_unreachable_source_names_host_and_cause(dovecot_pair, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    cfg = make_config(tmp_path, dovecot_pair, source={"port": dead})
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", password_file(tmp_path, "x"))
    assert r.returncode == 1
    assert f"source 127.0.0.1:{dead}: connection refused" in r.stderr


def test_untrusted_certificate_is_refused(make_dovecot, dovecot_pair, test_cert, tmp_path):
    tls_src = make_dovecot("tls", ssl=test_cert)
    cfg = make_config(tmp_path, dovecot_pair, source={"port": tls_src.imaps_port, "security": "tls"})
    pwf = password_file(tmp_path, dovecot_pair.users[A].old_password)
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", pwf)
    assert r.returncode == 1
    assert "TLS certificate not trusted" in r.stderr, r.stderr
    # with the test CA configured the same server is accepted
    cfg2 = make_config(tmp_path, dovecot_pair, source={"port": tls_src.imaps_port, "security": "tls",
                                                       "ca_file": test_cert[0]}, name="ok.yaml")
    assert ctl("--config", cfg2, "sync", A, "--add", "--password-file", pwf).returncode == 0


def test_starttls_source(make_dovecot, dovecot_pair, test_cert, tmp_path):
    tls_src = make_dovecot("tls", ssl=test_cert)
    seed("127.0.0.1", tls_src.imap_port, A, dovecot_pair.users[A].old_password, _inbox(3))
    cfg = make_config(tmp_path, dovecot_pair, source={"port": tls_src.imap_port, "security": "starttls",
                                                      "ca_file": test_cert[0], "host": "localhost"})
    res = sync_once(cfg, A, dovecot_pair.users[A].old_password)
    assert res.complete and res.copied == 3


def test_unknown_domain(dovecot_pair, tmp_path):
    cfg = make_config(tmp_path, dovecot_pair)
    r = ctl("--config", cfg, "sync", "carol@elsewhere.org", "--add", "--password-file", password_file(tmp_path, "x"))
    assert r.returncode == 1 and "no domain 'elsewhere.org'" in r.stderr


def test_bad_config_lists_every_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("domains:\n  example.com:\n    source: {host: mail.example.net, port: 99999, security: none}\n")
    r = ctl("--config", str(p), "check-config")
    assert r.returncode == 1
    assert 'domains."example.com".source.port' in r.stderr
    assert "cleartext" in r.stderr and 'domains."example.com".target' in r.stderr


def test_folder_name_the_target_refuses_fails_only_that_folder(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {**_inbox(2), "Projects": [Msg(make_message(9), (), D)]})
    # Dovecot's Maildir++ layout refuses '.' in names
    cfg = make_config(tmp_path, pair, folders={"layout": "mirror", "map": {"Projects": "v1.2 Projects"}})
    pwf = password_file(tmp_path, pair.users[A].old_password)
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", pwf)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "target refused to create folder 'v1.2 Projects'" in r.stdout
    assert "not allowed" in r.stdout
    assert len(snapshot(*pair.target_master_account(A))["INBOX"]) == 2


def test_source_dropping_the_connection_mid_fetch_is_resumed(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), _inbox(60, size=20_000))
    with CuttingProxy(pair.source.imap_port, cut_after=300_000, cuts=2) as proxy:
        cfg = make_config(tmp_path, pair, source={"port": proxy.port},
                          sync={"batch_messages": 10, "retry_backoff": 0.05, "connections": 1})
        res = sync_once(cfg, A, pair.users[A].old_password)
        assert proxy.cut_count >= 1
    assert res.complete, res
    src = snapshot(*pair.source_account(A))
    dst = snapshot(*pair.target_master_account(A))
    assert sorted(dst["INBOX"]) == sorted(src["INBOX"])


def test_no_password_in_logs_state_or_errors(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), _inbox(3))
    cfg = make_config(tmp_path, pair)
    pw = pair.users[A].old_password
    r = ctl("--log-level", "debug", "--config", cfg, "sync", A, "--add", "--password-file",
            password_file(tmp_path, pw))
    assert r.returncode == 0, r.stderr
    bad = ctl("--log-level", "debug", "--config", cfg, "sync", A, "--add", "--password-file",
              password_file(tmp_path, "Wr0ng-Secret!", name="wrong.pw"))
    assert bad.returncode == 1
    secrets = [pw, pair.master[1], "Wr0ng-Secret!"]
    for out in (r.stdout, r.stderr, bad.stdout, bad.stderr):
        for s in secrets:
            assert s not in out
    assert_no_secrets(tmp_path / "state", secrets, must_scan=("mailsyncd.sqlite3",))


@pytest.mark.parametrize("target_auth", ["master", "master_separator"])
def test_target_master_modes(dovecot_pair, tmp_path, target_auth):
    pair = dovecot_pair
    seed(*pair.source_account(A), _inbox(2))
    cfg = make_config(tmp_path, pair, target={"auth": target_auth})
    assert sync_once(cfg, A, pair.users[A].old_password).complete


def test_a_pass_stopped_mid_folder_leaves_the_rest_for_the_next_pass(dovecot_pair, tmp_path):
    # Found by tests/test_chaos.py (SIGTERM during a first sync): the stopped pass stored the
    # folder's UIDNEXT and count, so the next pass took the folder as done and never copied the rest.
    import threading

    from mailsyncd.sync.progress import Progress
    pair = dovecot_pair
    seed(*pair.source_account(A), _inbox(40))
    cfg = make_config(tmp_path, pair, sync={"batch_messages": 5, "connections": 1})
    stop = threading.Event()
    progress = Progress(lambda p: stop.set() if p.done else None)   # stop once the first batch is in
    first = sync_once(cfg, A, pair.users[A].old_password, progress=progress, stop=stop)
    assert first.error == "stopped before the pass finished" and 0 < first.copied < 40, first
    again = sync_once(cfg, A, pair.users[A].old_password)
    assert again.complete and again.copied == 40 - first.copied, again
    assert snapshot(*pair.target_master_account(A)) == snapshot(*pair.source_account(A))


# a full target ([OVERQUOTA], [UNAVAILABLE]): tests/test_writer.py, for both engines


def test_a_message_too_big_for_the_target_is_skipped_with_the_reason(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), _inbox(5))
    with FaultProxy(pair.target.imap_port, "target") as tp:
        cfg = make_config(tmp_path, pair, target={"port": tp.port}, sync={"batch_messages": 5, "connections": 1})
        tp.refuse_appends("TOOBIG", 2)          # the MULTIAPPEND, then the first message alone
        res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.copied == 4 and res.skipped == 1 and res.folders[0].error is None, res
    assert len(snapshot(*pair.target_master_account(A))["INBOX"]) == 4
