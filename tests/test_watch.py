"""New mail in seconds (issue 14.1): the source INBOX watched with IDLE or STATUS polls, against a real
Dovecot pair through the real daemon.  pass_interval is an hour, so only the watch explains a copy."""

from __future__ import annotations

import imaplib
import json
import re
import time

import pytest

from proxyenv import Daemon
from seed import Msg, make_message, seed, snapshot
from syncenv import ctl
from test_daemon import login, pair_with, wait_for

A = "alice@example.com"
pytestmark = pytest.mark.timeout(180)
SLOW_PASSES = {"pass_interval": 3600, "failure_backoff": 0.5, "failure_backoff_max": 2}


def _uids(pair, role: str) -> int:
    acct = pair.source_account(A) if role == "source" else pair.target_account(A)
    return len(snapshot(*acct).get("INBOX", {}))


def _deliver_and_time(pair, n: int) -> float:
    """APPEND one message to the source INBOX; seconds until the target INBOX holds it."""
    before = _uids(pair, "target")
    t0 = time.monotonic()
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(n))]})
    wait_for(lambda: _uids(pair, "target") > before, 30, "the new message on the target")
    return time.monotonic() - t0


def _source_refusals(pair) -> int:
    """Connections the source refused for being one too many (Dovecot's mail_max_userip_connections)."""
    with open(pair.source.log_path, errors="replace") as f:
        return f.read().count("Maximum number of connections from user+IP exceeded")


@pytest.mark.parametrize("mode", ["auto", "poll"])
def test_new_mail_reaches_the_target_in_seconds_without_waiting_for_the_pass_interval(tmp_path, dovecot_pair, mode):
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(5)]})
    with Daemon(tmp_path, dovecot_pair, scheduler=SLOW_PASSES, sync={"watch": mode, "poll_interval": 1}) as d:
        login(d, A, dovecot_pair.users[A].old_password).logout()   # a front-door user: auto means idle
        d.wait_log("event=pass_done account=alice@example.com ok=True")
        if mode == "auto":
            d.wait_log("event=watch_idle account=alice@example.com", 20)
        else:
            time.sleep(2.5)          # the first poll (within one interval) is the baseline
        took = [_deliver_and_time(dovecot_pair, 100 + i) for i in range(3)]
        via = "idle" if mode == "auto" else "poll"
        copied = rf"event=new_mail_copied account=alice@example.com latency=\S+ via={via}"
        wait_for(lambda: len(re.findall(copied, d.log())) >= 3, 10, "three new-mail latencies logged")
        log = d.log()
        # the status model and `mailsyncctl status` say how the account is watched and the last latency
        doc = wait_for(lambda: (lambda j: j if j["accounts"][0]["new_mail_latency"] is not None else None)(
            json.loads(ctl("--config", d.config_path, "status", "--json").stdout)), 10, "status with a latency")
        assert doc["accounts"][0]["watching"] == via and doc["accounts"][0]["new_mail_latency"] < 10
        line = [ln for ln in ctl("--config", d.config_path, "status").stdout.splitlines() if ln.startswith(A)]
        assert re.search(rf" {via} +\d+\.\ds$", line[0]), line
    assert max(took) < 10, took
    assert snapshot(*dovecot_pair.source_account(A)) == snapshot(*dovecot_pair.target_account(A))
    assert "event=watch_fallback" not in log, log


def test_notify_brings_new_mail_in_another_folder_in_seconds(tmp_path, dovecot_pair):
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(1))], "Later": [Msg(make_message(2))]})
    with Daemon(tmp_path, dovecot_pair, scheduler=SLOW_PASSES, sync={"watch": "idle"}) as d:
        login(d, A, dovecot_pair.users[A].old_password).logout()
        d.wait_log("event=pass_done account=alice@example.com ok=True")
        d.wait_log("event=watch_idle account=alice@example.com", 20)
        time.sleep(0.5)              # NOTIFY SET and IDLE follow the EXAMINE
        t0 = time.monotonic()
        seed(*dovecot_pair.source_account(A), {"Later": [Msg(make_message(3))]})
        wait_for(lambda: len(snapshot(*dovecot_pair.target_account(A)).get("Later", {})) == 2, 30,
                 "the new message in Later on the target")
        took = time.monotonic() - t0
        log = d.log()
    assert took < 10, took
    assert "event=watch_change account=alice@example.com via=idle folder=Later" in log, log


def test_a_source_that_refuses_the_idle_connection_is_polled_after_one_log_line(tmp_path, make_dovecot):
    # the source allows ONE connection per user and IP, and the user's phone holds it when the watch begins
    pair = pair_with(make_dovecot, source_conf="mail_max_userip_connections = 1\n")
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(5)]})
    with Daemon(tmp_path, pair, scheduler=SLOW_PASSES, sync={"watch": "off", "poll_interval": 1,
                                                            "connections": 1}) as d:
        login(d, A, pair.users[A].old_password).logout()
        d.wait_log("event=pass_done account=alice@example.com ok=True")
        phone = imaplib.IMAP4("127.0.0.1", pair.source.imap_port, timeout=30)
        phone.login(A, pair.users[A].old_password)
        d.doc["sync"]["watch"] = "idle"
        d.save()
        d.sighup()
        d.wait_log("event=watch_fallback account=alice@example.com", 20)
        refused = _source_refusals(pair)
        assert refused >= 1          # the source said no to the watch's connection, and its log says so
        phone.logout()
        time.sleep(2.5)              # the poll's baseline
        took = [_deliver_and_time(pair, 200 + i) for i in range(3)]
        wait_for(lambda: d.log().count("event=new_mail_copied account=alice@example.com") >= 3, 10,
                 "three copies")
        log = d.log()
        # the polls and the passes that copy what they find share the source's one connection: none refused
        assert _source_refusals(pair) == refused, _source_refusals(pair)
    assert max(took) < 10, took
    assert "event=source_throttled" not in log, log
    assert log.count("event=watch_fallback") == 1, log
    assert "event=new_mail_copied account=alice@example.com" in log and "via=poll" in log, log


@pytest.mark.parametrize("how,why", [("long_line", "response too long"), ("literal", "literal too large"),
                                     ("flood", "flood")])
def test_hostile_idle_answers_are_cut_off_bounded_and_the_watch_reconnects(tmp_path, dovecot_pair, how, why):
    from hostileserver import Box, HostileServer
    with HostileServer(A, "old-pw", {"INBOX": Box([(1, make_message(1), ())])}, idle=how) as srv, \
            Daemon(tmp_path, dovecot_pair, source={"port": srv.port}, scheduler=SLOW_PASSES,
                   sync={"watch": "idle"}) as d:
        login(d, A, "old-pw").logout()
        d.wait_log("event=pass_done account=alice@example.com ok=True")
        d.wait_log("event=watch_lost account=alice@example.com", 30)
        wait_for(lambda: srv.stream_stopped, 10, "the hostile stream to end")
        with open(f"/proc/{d.proc.pid}/status") as f:
            rss_mib = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024
        log = d.log()
    assert srv.idles >= 1 and all(s.startswith("client went away") for s in srv.stream_stopped), srv.stream_stopped
    assert max(srv.streamed) < 32 * 1024**2, srv.streamed       # what the kernels' buffers took, not 300 MB
    assert rss_mib < 150, rss_mib
    lost = re.search(r"event=watch_lost account=alice@example.com reason='([^']*)' retry_in=(\d+)s", log)
    assert lost and why in lost.group(1) and 2 <= int(lost.group(2)) <= 5, log
    assert "Traceback" not in log and "event=watch_fallback" not in log, log


def test_a_source_flooding_exists_during_idle_cannot_make_the_daemon_hammer_it_with_passes(tmp_path, dovecot_pair):
    from hostileserver import Box, HostileServer

    from mailsyncd.watch.policy import WATCH_PASS_BURST, WATCH_PASS_REFILL
    with HostileServer(A, "old-pw", {"INBOX": Box([(1, make_message(1), ())])}, idle="exists_flood") as srv, \
            Daemon(tmp_path, dovecot_pair, source={"port": srv.port}, scheduler=SLOW_PASSES,
                   sync={"watch": "idle"}) as d:
        login(d, A, "old-pw").logout()
        d.wait_log("event=pass_done account=alice@example.com ok=True")
        wait_for(lambda: srv.idles, 20, "IDLE at the hostile source")
        t0 = time.monotonic()
        time.sleep(8)                # 400 EXISTS, each "new mail"
        log = d.log()
        seconds = time.monotonic() - t0
    focused = log.count("focused=yes")
    # a burst, then one pass per WATCH_PASS_REFILL: not a pass after each other for as long as the flood lasts
    assert 1 <= focused <= WATCH_PASS_BURST + seconds / WATCH_PASS_REFILL + 1, (focused, log[-3000:])
    assert "Traceback" not in log
