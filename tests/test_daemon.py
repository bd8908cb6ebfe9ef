"""The daemon over days: systemd notifications, reload, continuous passes, limits, cutover, crashes, stop."""

from __future__ import annotations

import datetime as dt
import imaplib
import os
import random
import re
import signal
import socket
import ssl
import threading
import time

import pytest

from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
from proxyenv import Daemon
from secretscan import assert_no_secrets
from seed import Msg, make_message, seed, snapshot
from syncenv import ctl

A = "alice@example.com"
pytestmark = pytest.mark.timeout(300)
FAST = {"pass_interval": 1, "failure_backoff": 0.5, "failure_backoff_max": 2}


def login(d: Daemon, user: str, password: str) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", d.imap_port, timeout=30)
    c.login(user, password)
    return c


def wait_for(cond, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def pair_with(make_dovecot, source_users=None, target_users=None, source_conf="") -> DovecotPair:
    su, tu = source_users or SOURCE_USERS, target_users or TARGET_USERS
    src = make_dovecot("source", su, extra_conf=source_conf)
    tgt = make_dovecot("target", tu, master=MASTER)
    return DovecotPair(src, tgt, {u: UserCreds(su[u], tu.get(u, "")) for u in su})


# -- systemd ---------------------------------------------------------------------------------------

def test_sd_notify_sequence(tmp_path, dovecot_pair):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    got: list[str] = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                pass

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    d = Daemon(tmp_path, dovecot_pair, env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000"})
    d.start()
    try:
        wait_for(lambda: sum(m == "WATCHDOG=1" for m in got) >= 3, 20, "watchdog pings")
        d.sighup()
        wait_for(lambda: sum(m.startswith("READY=1") for m in got) >= 2, 20, "READY after reload")
    finally:
        assert d.stop() == 0
        time.sleep(0.5)
        done.set()
        t.join()
        sock.close()
    seq = [m.split("\n")[0] for m in got if m != "WATCHDOG=1" and not m.startswith("STATUS=")]
    assert seq == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], got
    first = got[0]
    assert first.startswith("READY=1\nSTATUS=accounts: 0 syncing"), first
    reloading = next(m for m in got if m.startswith("RELOADING=1"))
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading)
    assert got.index("STOPPING=1") > max(i for i, m in enumerate(got) if m.startswith("READY=1"))


class NotifyListener:
    """A NOTIFY_SOCKET the test reads, as systemd would; ``on_ready`` runs in the reader thread."""

    def __init__(self, tmp_path, on_ready=None):
        self.path = str(tmp_path / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.got: list[str] = []
        self.on_ready = on_ready
        self._done = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        while not self._done.is_set():
            try:
                m = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            if m.startswith("READY=1") and self.on_ready is not None and not any(
                    g.startswith("READY=1") for g in self.got):
                self.on_ready()
            self.got.append(m)

    def close(self):
        self._done.set()
        self._t.join()
        self.sock.close()


def test_a_listener_that_cannot_bind_ends_the_process_at_once_and_tells_systemd(tmp_path, dovecot_pair, test_cert):
    notify = NotifyListener(tmp_path)
    d = Daemon(tmp_path, dovecot_pair, test_cert, env={"NOTIFY_SOCKET": notify.path})
    busy = socket.socket()
    busy.bind(("127.0.0.1", d.imaps_port))       # the second listener: the first one opens before it fails
    busy.listen()
    try:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="exited with"):
            d.start(timeout=20)
        assert d.proc.returncode not in (0, None) and d.proc.returncode > 0, d.proc.returncode
        assert time.monotonic() - t0 < 15
        log = d.log()
        assert f"event=start_failed what='cannot listen' addr=127.0.0.1:{d.imaps_port}" in log, log
        assert "Address already in use" in log and "Traceback" not in log, log
        with pytest.raises(ConnectionRefusedError):           # the port that did open is closed again
            socket.create_connection(("127.0.0.1", d.imap_port), timeout=5).close()
        wait_for(lambda: any("ERRNO=98" in m for m in notify.got), 5, "ERRNO to systemd")
        m = next(m for m in notify.got if "ERRNO=98" in m)
        assert m.startswith(f"STATUS=start failed: cannot listen on 127.0.0.1:{d.imaps_port}"), notify.got
        assert not any(g.startswith("READY=1") for g in notify.got), notify.got
    finally:
        if d.alive():
            d.kill9()
        busy.close()
        notify.close()


def _catches_sighup(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    except FileNotFoundError:
        pass
    return False


def test_sighup_at_the_moment_of_ready_reloads_and_does_not_kill(tmp_path, dovecot_pair):
    for attempt in range(3):
        box: dict = {}
        run = tmp_path / f"run{attempt}"
        run.mkdir()
        notify = NotifyListener(run, on_ready=lambda: box["d"].sighup())
        d = box["d"] = Daemon(run, dovecot_pair, env={"NOTIFY_SOCKET": notify.path})
        try:
            d.start()
            d.wait_log("event=reloaded generation=2", 20)
            assert d.alive()
            assert d.stop() == 0
        finally:
            if d.alive():
                d.kill9()
            notify.close()
        seq = [m.split("\n")[0] for m in notify.got if not m.startswith("STATUS=")]
        assert seq[:3] == ["READY=1", "RELOADING=1", "READY=1"], notify.got


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2, 0.5])
def test_sighup_during_start_is_applied_after_it(tmp_path, dovecot_pair, delay):
    notify = NotifyListener(tmp_path)
    d = Daemon(tmp_path, dovecot_pair, env={"NOTIFY_SOCKET": notify.path})
    try:
        d.spawn()
        # the handler must be in place before READY=1 (and before everything slow: imports, the store)
        deadline = time.monotonic() + 20
        while not _catches_sighup(d.proc.pid) and d.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        ready_before_handler = any(m.startswith("READY=1") for m in notify.got)
        time.sleep(delay)
        d.sighup()
        wait_for(lambda: "event=reloaded generation=2" in d.log() or not d.alive(), 30, "the reload")
        assert d.alive(), f"exit {d.proc.returncode}:\n{d.log()}"
        assert not ready_before_handler, "SIGHUP handler installed only after READY=1"
        assert d.stop() == 0
    finally:
        if d.alive():
            d.kill9()
        notify.close()
    seq = [m.split("\n")[0] for m in notify.got if not m.startswith("STATUS=")]
    # READY first: the reload asked for during start runs after it
    assert seq[:3] == ["READY=1", "RELOADING=1", "READY=1"], notify.got


# -- reload ----------------------------------------------------------------------------------------

def test_sighup_adds_and_removes_domains_and_keeps_old_config_on_errors(make_dovecot, tmp_path):
    users = {A: "alice-old", "carol@example.net": "carol-old"}
    pair = pair_with(make_dovecot, users, {A: "x", "carol@example.net": "y"})
    with Daemon(tmp_path, pair) as d:
        alice = login(d, A, "alice-old")
        alice.select("INBOX")
        with pytest.raises(imaplib.IMAP4.error):
            login(d, "carol@example.net", "carol-old")     # no such domain yet

        d.doc["domains"]["example.net"] = dict(d.doc["domains"]["example.com"])
        d.save()
        r = ctl("--config", d.config_path, "reload")
        assert r.returncode == 0, r.stderr
        assert "generation 2" in r.stdout
        login(d, "carol@example.net", "carol-old").logout()
        assert alice.noop()[0] == "OK"                    # the relayed session survived

        good = open(d.config_path).read()
        for bad, expect in (("domains: [unclosed\n", "invalid YAML"),
                            (good.replace(f"port: {pair.source.imap_port}", "port: 99999", 1),
                             "source.port: must be an integer 1-65535")):
            with open(d.config_path, "w") as f:
                f.write(bad)
            r = ctl("--config", d.config_path, "reload")
            assert r.returncode == 1                      # refused before signalling
            n = d.log().count("event=reload_failed keeping")
            d.sighup()                                    # and the daemon refuses it too
            wait_for(lambda: d.log().count("event=reload_failed keeping") > n, 20, "reload_failed")
            assert expect in d.log()
            assert d.alive()
            login(d, "carol@example.net", "carol-old").logout()   # still generation 2
            assert alice.noop()[0] == "OK"
        import json
        with open(tmp_path / "state" / "daemon.json") as f:
            assert "source.port" in json.load(f)["reload_error"]

        with open(d.config_path, "w") as f:
            f.write(good)
        del d.doc["domains"]["example.net"]
        d.save()
        r = ctl("--config", d.config_path, "reload")
        assert r.returncode == 0 and "generation 3" in r.stdout, r.stdout + r.stderr
        with pytest.raises(imaplib.IMAP4.error):
            login(d, "carol@example.net", "carol-old")
        assert alice.noop()[0] == "OK"
        alice.logout()
    from mailsyncd.store import Store
    store = Store(str(tmp_path / "state" / "mailsyncd.sqlite3"))
    assert store.account("carol@example.net") is not None   # a removed domain keeps its data
    store.close()


def test_sighup_swaps_the_tls_certificate_for_new_handshakes(tmp_path, dovecot_pair):
    from mailsyncd.testing import make_test_cert
    cert, key = make_test_cert(str(tmp_path / "live"))
    with Daemon(tmp_path, dovecot_pair, (cert, key)) as d:
        def der() -> bytes:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            with ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.imaps_port))) as s:
                return s.getpeercert(binary_form=True)
        before = der()
        old = imaplib.IMAP4_SSL("127.0.0.1", d.imaps_port, ssl_context=d.client_tls())
        old.login(A, dovecot_pair.users[A].old_password)
        new_cert, new_key = make_test_cert(str(tmp_path / "renewed"))
        os.replace(new_cert, cert)
        os.replace(new_key, key)
        assert ctl("--config", d.config_path, "reload").returncode == 0
        assert der() != before
        assert old.noop()[0] == "OK"
        old.logout()


# -- the scheduler ---------------------------------------------------------------------------------

def test_continuous_passes_follow_new_mail(tmp_path, dovecot_pair):
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(20)]})
    with Daemon(tmp_path, dovecot_pair, scheduler=FAST) as d:
        login(d, A, dovecot_pair.users[A].old_password).logout()
        d.wait_log("event=pass_done account=alice@example.com ok=True")
        seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(100))],
                                               "Later": [Msg(make_message(101))]})
        wait_for(lambda: snapshot(*dovecot_pair.source_account(A)) == snapshot(*dovecot_pair.target_account(A)),
                 60, "the new mail on the target")
        # a restart picks the account up again without a login
        d.stop()
        d.start()
        d.wait_log("event=scheduler_started accounts=1")   # loaded in the state thread, after READY


def test_a_source_connection_limit_is_respected_and_the_sync_completes(make_dovecot, tmp_path):
    users = {A: "a-pw", "bob@example.com": "b-pw", "carol@example.com": "c-pw"}
    pair = pair_with(make_dovecot, users, {u: "t" for u in users},
                     source_conf="mail_max_userip_connections = 1\n")
    for i, u in enumerate(users):
        seed("127.0.0.1", pair.source.imap_port, u, users[u],
             {f"F{k}": [Msg(make_message(1000 * i + 10 * k + j)) for j in range(10)] for k in range(6)})
    # A cap of 1, not 2: the pass's two extra connections log in at the same moment, and Dovecot counts a
    # user's connections after the login (anvil), so both could pass a cap of 2 (seen on a quiet machine).
    # No watch: its IDLE connection would take the one slot.
    with Daemon(tmp_path, pair, sync={"connections": 4, "watch": "off"}, scheduler=FAST,
                source={"max_connections": 3}) as d:
        for u, pw in users.items():
            login(d, u, pw).logout()
        for u in users:
            d.wait_log(f"event=pass_done account={u} ok=True", 120)
        log = d.log()
    for u, pw in users.items():
        assert snapshot("127.0.0.1", pair.source.imap_port, u, pw) == \
            snapshot("127.0.0.1", pair.target.imap_port, f"{u}*{MASTER[0]}", MASTER[1])
    # never more than max_connections (3) source connections at once over all accounts
    running: dict[str, int] = {}
    peak = 0
    for line in log.splitlines():
        m = re.search(r"event=pass_start account=(\S+) host=\S+ connections=(\d+)", line)
        if m:
            running[m.group(1)] = int(m.group(2))
        m = re.search(r"event=pass_done account=(\S+)", line)
        if m:
            running.pop(m.group(1), None)
        peak = max(peak, sum(running.values()))
    assert peak <= 3, log
    # the user+IP cap (1) refused the extra connections: the pass went on with fewer, and said so
    assert "event=extra_connection_refused" in log and "event=source_throttled" in log, log


# -- cutover ---------------------------------------------------------------------------------------

def test_cutover_end_to_end(tmp_path, dovecot_pair):
    pw = dovecot_pair.users[A].old_password
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(10)]})
    with Daemon(tmp_path, dovecot_pair, scheduler={**FAST, "pass_interval": 3600}) as d:
        login(d, A, pw).logout()
        d.wait_log("event=pass_done account=alice@example.com ok=True")
        seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(50))]})   # after the last pass
        r = ctl("--config", d.config_path, "cutover", "example.com", "--at", "2099-01-01T00:00:00+08:00")
        assert r.returncode == 0 and "scheduled for 2098-12-31T16:00:00" in r.stdout, r.stdout + r.stderr
        r = ctl("--config", d.config_path, "cutover", "example.com", "--cancel")
        assert r.returncode == 0 and "cutover cancelled" in r.stdout
        r = ctl("--config", d.config_path, "cutover", "example.com", "--now")
        assert r.returncode == 0, r.stderr
        d.wait_log("event=cutover_done domain=example.com", 60)
        log = d.log()
        for step in ("step=1/4", "step=2/4", "step=3/4", "step=4/4"):
            assert step in log
        # the final pass copied what arrived since the last one
        assert snapshot(*dovecot_pair.source_account(A)) == snapshot(*dovecot_pair.target_account(A))
        dovecot_pair.source.stop()
        c = login(d, A, pw)                               # the old password still works, source gone
        assert c.select("INBOX")[0] == "OK"
        c.logout()
        with pytest.raises(imaplib.IMAP4.error):
            login(d, A, "not-the-password")
        assert "how='cut over: last good password accepted'" in d.log()
        r = ctl("--config", d.config_path, "cutover", "example.com", "--cancel")
        assert r.returncode == 1 and "already done" in r.stderr
        st = ctl("--config", d.config_path, "status")
        assert "cutover done" in st.stdout and "1 cutover" in st.stdout, st.stdout
        doc = __import__("json").loads(ctl("--config", d.config_path, "status", "--json").stdout)
        assert doc["schema"] == 1 and doc["accounts"][0]["phase"] == "cutover"
    from mailsyncd.store import Store
    store = Store(str(tmp_path / "state" / "mailsyncd.sqlite3"))
    assert store.secret_password(A) is None and store.verifier(A) is not None
    assert store.account(A)["phase"] == "cutover"
    store.close()
    assert_no_secrets(tmp_path / "state", [pw], must_scan=("mailsyncd.sqlite3",))


# -- crashes and stopping ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["imap", "pop3"])
def test_kill9_loop_during_a_large_sync_then_restart_gives_an_identical_copy(tmp_path, dovecot_pair, kind):
    pw = dovecot_pair.users[A].old_password
    rnd = random.Random(7)
    if kind == "imap":
        seed(*dovecot_pair.source_account(A),
             {f: [Msg(make_message(k * 1000 + i, size=rnd.choice([800, 3000, 20000])), ("\\Seen",) if i % 2 else ())
                  for i in range(600)] for k, f in enumerate(("INBOX", "Archive", "Sent"))})
        source = None
    else:   # POP3: the INBOX alone, no flags, INTERNALDATE from the Date: header (make_message's: +i hours)
        base = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        seed(*dovecot_pair.source_account(A),
             {"INBOX": [Msg(make_message(i, size=rnd.choice([800, 3000, 20000])), (), base + dt.timedelta(hours=i))
                        for i in range(1800)]})
        source = {"protocol": "pop3", "port": dovecot_pair.source.pop3_port, "security": "none"}
    from mailsyncd.store import Store
    d = Daemon(tmp_path, dovecot_pair, source=source, sync={"batch_messages": 10}, scheduler=FAST)
    d.start()
    login(d, A, pw).logout()
    mid_copy = 0
    for _ in range(5):
        starts = d.log().count("event=pass_start")
        wait_for(lambda: d.log().count("event=pass_start") >= max(starts, 1), 30, "a pass")
        time.sleep(rnd.uniform(0.05, 0.4))
        if "event=pass_done account=alice@example.com ok=True" in d.log():
            break
        d.kill9()
        store = Store(str(tmp_path / "state" / "mailsyncd.sqlite3"))
        copied = store.account_counts(A)[0]
        store.close()
        mid_copy += 0 < copied < 1800
        d.start()                  # resumes from the stored password and marks, no login needed
    d.wait_log("event=pass_done account=alice@example.com ok=True", 180)
    assert d.stop() == 0
    assert mid_copy >= 1, "no kill landed in the middle of the copy"
    # each restart took back the killed run's lease at once, instead of waiting lease_seconds for it
    assert "event=leases_reclaimed" in d.log() and "why='held by node" not in d.log()
    src = snapshot(*dovecot_pair.source_account(A))
    assert src == snapshot(*dovecot_pair.target_account(A))
    assert sum(map(len, src.values())) == 1800


def test_sigterm_stops_cleanly_with_sessions_and_a_pass_running(tmp_path, dovecot_pair):
    pw = dovecot_pair.users[A].old_password
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(1500)]})
    d = Daemon(tmp_path, dovecot_pair, sync={"batch_messages": 5}, scheduler=FAST)
    d.start()
    sessions = [login(d, A, pw) for _ in range(3)]
    d.wait_log("event=pass_start account=alice@example.com")
    t0 = time.monotonic()
    rc = d.stop()
    assert rc == 0 and time.monotonic() - t0 < 30
    log = d.log()
    assert "event=stopping" in log and "event=stopped" in log and "Traceback" not in log
    for c in sessions:
        with pytest.raises((imaplib.IMAP4.abort, OSError, EOFError)):
            c.noop()
    assert "event=pass_done account=alice@example.com ok=False" in log
    assert "error='stopped before the pass finished'" in log
    # what was copied before the stop is recorded: a restart resumes instead of starting over
    d.start()
    wait_for(lambda: "ok=True" in d.log().split("event=scheduler_started")[-1], 120, "the resumed pass")
    d.stop()
    assert snapshot(*dovecot_pair.source_account(A)) == snapshot(*dovecot_pair.target_account(A))


def test_a_changed_source_password_fails_the_account_until_the_user_logs_in_again(tmp_path, dovecot_pair):
    old = dovecot_pair.users[A].old_password
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(5)]})
    with Daemon(tmp_path, dovecot_pair, scheduler=FAST) as d:
        login(d, A, old).logout()
        d.wait_log("event=pass_done account=alice@example.com ok=True")
        dovecot_pair.source.set_password(A, "changed-at-the-source")
        d.wait_log("event=account_failed account=alice@example.com", 30)
        assert "the source refused the stored password" in d.log()
        wait_for(lambda: "1 failed" in ctl("--config", d.config_path, "status").stdout, 10, "status: 1 failed")
        n = d.log().count("event=pass_start")
        sched = d.status_after(writes=2)["scheduler"]     # ticks went by (1 s loop; failure_backoff_max 2)
        assert (sched["waiting_login"], sched["running"]) == (1, 0), sched
        assert d.log().count("event=pass_start") == n     # ... and none retried: it waits for the user
        seed("127.0.0.1", dovecot_pair.source.imap_port, A, "changed-at-the-source",
             {"INBOX": [Msg(make_message(99))]})
        with pytest.raises(imaplib.IMAP4.error):
            login(d, A, old)                              # the old one is refused now
        login(d, A, "changed-at-the-source").logout()     # ... and the new one resumes the sync
        wait_for(lambda: snapshot("127.0.0.1", dovecot_pair.source.imap_port, A, "changed-at-the-source")
                 == snapshot(*dovecot_pair.target_account(A)), 60, "the resumed sync")


def test_the_moved_notice_is_appended_once_across_restarts(tmp_path, dovecot_pair):
    from imapclient import IMAPClient
    pw = dovecot_pair.users[A].old_password
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(7)],
                                           "Work": [Msg(make_message(50))]})
    d = Daemon(tmp_path, dovecot_pair, scheduler=FAST)
    d.doc["notice"] = {"enabled": True, "from": "IT <it@example.com>"}
    d.save()
    with d:
        login(d, A, pw).logout()
        d.wait_log("event=notice_appended account=alice@example.com messages=8", 60)
        n = d.log().count("event=pass_done")
        wait_for(lambda: d.log().count("event=pass_done") >= n + 2, 30, "two more passes")
    with d:                                            # and after a restart
        wait_for(lambda: d.log().count("event=pass_done") >= n + 3, 30, "a pass after the restart")
    c = IMAPClient("127.0.0.1", dovecot_pair.target.imap_port, ssl=False)
    c.login(f"{A}*{MASTER[0]}", MASTER[1])
    c.select_folder("INBOX", readonly=True)
    found = c.search(["SUBJECT", "Your mail has been moved"])
    assert len(found) == 1
    body = c.fetch(found, ["BODY.PEEK[]"])[found[0]][b"BODY[]"]
    c.logout()
    import email
    import email.policy
    msg = email.message_from_bytes(body, policy=email.policy.default)
    assert msg["From"] == "IT <it@example.com>" and "8 messages in 2 folders" in msg.get_content()
    assert "共 8 封邮件" in msg.get_content()
    assert d.log().count("event=notice_appended") == 1
