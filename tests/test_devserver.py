"""The throwaway Dovecot servers themselves (mailsyncd/testing/dovecot.py + tests/seed.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import poplib
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailsyncd.testing import Dovecot, DovecotError
from mailsyncd.testing._proc import alive as _alive, dovecot_members as _session_members
from seed import Msg, connect, make_message, seed, snapshot

pytestmark = pytest.mark.dovecot

CST = dt.timezone(dt.timedelta(hours=8))
PST = dt.timezone(dt.timedelta(hours=-8))
CHINESE = "客户/重要"


def _three_messages() -> dict[str, list[Msg]]:
    return {
        "INBOX": [Msg(make_message(1), ("\\Seen",), dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=PST))],
        "Sent": [Msg(make_message(2, size=5000), ("\\Seen", "\\Answered", "$Forwarded"),
                     dt.datetime(2022, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))],
        CHINESE: [Msg(make_message(3, body="你好，世界\n", msgid=False), (),  # unseen on purpose
                      dt.datetime(2023, 12, 31, 23, 59, 59, tzinfo=CST))],
    }


def _expected(folders: dict[str, list[Msg]]):
    return {f: [(hashlib.sha256(m.raw).hexdigest(), tuple(sorted(m.flags)),
                 m.internaldate.astimezone(dt.timezone.utc).isoformat()) for m in msgs]
            for f, msgs in folders.items()}


def _no_processes_left(pid: int) -> None:
    deadline = time.monotonic() + 5
    while (_alive(pid) or _session_members(pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(pid) and not _session_members(pid)


def test_pair_logins_seed_snapshot(dovecot_pair):
    pair = dovecot_pair
    alice = "alice@example.com"
    assert pair.source.imap_port != pair.target.imap_port

    # plain logins with the right password on each side; old password is wrong on the target
    for host, port, user, pw in (pair.source_account(alice), pair.target_account(alice),
                                 pair.source_account("bob@example.com"), pair.target_account("bob@example.com")):
        with IMAPClient(host, port=port, ssl=False) as c:
            assert c.login(user, pw)
    with IMAPClient("127.0.0.1", port=pair.target.imap_port, ssl=False) as c:
        with pytest.raises(LoginError):
            c.login(alice, pair.users[alice].old_password)
    with IMAPClient("127.0.0.1", port=pair.source.imap_port, ssl=False) as c:
        with pytest.raises(LoginError):  # no master user on the source
            c.login(f"{alice}*master", "master-pw")

    # seed the source: 3 messages in 3 folders, one of them Chinese (mUTF-7 on the wire)
    folders = _three_messages()
    uids = seed(*pair.source_account(alice), folders)
    assert uids == {"INBOX": [1], "Sent": [1], CHINESE: [1]}  # APPENDUID (UIDPLUS)
    snap = snapshot(*pair.source_account(alice))
    selectable = {k: v for k, v in snap.items() if v or k in folders}
    assert selectable == _expected(folders)
    assert set(snap) <= {"INBOX", "Sent", CHINESE, "客户"}
    assert snapshot(*pair.source_account(alice)) == snap  # read-only: nothing changed (no \Seen)
    assert os.path.isdir(os.path.join(pair.source.maildir(alice), ".&W6JiNw-.&kc2JgQ-"))
    assert snapshot(*pair.source_account("bob@example.com")) == {"INBOX": []}

    # target: seed through a master login (LOGIN "user*master"), read back as alice herself
    seed(*pair.target_master_account(alice), {"INBOX": folders["INBOX"]})
    tsnap = snapshot(*pair.target_account(alice))
    assert tsnap == {"INBOX": snap["INBOX"]}
    # AUTHENTICATE PLAIN with authzid=alice, authcid=master
    with IMAPClient("127.0.0.1", port=pair.target.imap_port, ssl=False) as c:
        c.plain_login("master", "master-pw", alice)
        assert c.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
    with IMAPClient("127.0.0.1", port=pair.target.imap_port, ssl=False) as c:
        with pytest.raises(LoginError):  # pass=yes: the user must exist in the normal passdb
            c.login("nobody@example.com*master", "master-pw")
    with IMAPClient("127.0.0.1", port=pair.target.imap_port, ssl=False) as c:
        with pytest.raises(LoginError):
            c.plain_login("master", "wrong", alice)

    # login_trusted_networks = 127.0.0.1: ID x-originating-ip is honoured, imap_id_log logs it
    with IMAPClient("127.0.0.1", port=pair.target.imap_port, ssl=False) as c:
        c.id_({"name": "devserver-test", "x-originating-ip": "192.0.2.7"})
        c.login(alice, pair.users[alice].new_password)
    log = open(pair.target.log_path, encoding="utf-8", errors="replace").read()
    assert "rip=192.0.2.7" in log
    assert "devserver-test" in log

    # doveadm talks to the same instance
    listed = pair.source.doveadm("mailbox", "list", "-u", alice).stdout.split()
    assert set(listed) >= {"INBOX", "Sent", CHINESE}


def test_imap_capability_override_hides_uidplus(make_dovecot):
    plain = make_dovecot("plain", pop3=False)
    hidden = make_dovecot("hidden", pop3=False,
                          imap_capability="IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT")
    assert plain.pop3_port is None
    with connect("127.0.0.1", plain.imap_port, "alice@example.com", "alice-old-pw") as c:
        caps = set(c.capabilities())
        assert {b"UIDPLUS", b"MULTIAPPEND", b"CONDSTORE"} <= caps
    with connect("127.0.0.1", hidden.imap_port, "alice@example.com", "alice-old-pw") as c:
        caps = set(c.capabilities())
        assert b"IDLE" in caps
        assert not caps & {b"UIDPLUS", b"MULTIAPPEND", b"CONDSTORE"}
    # Only the advertisement changes: Dovecot still implements the extensions (it even
    # still answers APPEND with [APPENDUID ...]); clients must go by the CAPABILITY list.
    seed("127.0.0.1", hidden.imap_port, "alice@example.com", "alice-old-pw",
         {"INBOX": [Msg(make_message(1))]})
    assert len(snapshot("127.0.0.1", hidden.imap_port, "alice@example.com", "alice-old-pw")["INBOX"]) == 1


def test_tls_implicit_and_starttls(make_dovecot, test_cert):
    certfile, _ = test_cert
    d = make_dovecot("tls", ssl=test_cert)
    assert d.imaps_port and d.imaps_port != d.imap_port
    ctx = ssl.create_default_context(cafile=certfile)
    for host in ("127.0.0.1", "localhost"):
        with IMAPClient(host, port=d.imaps_port, ssl=True, ssl_context=ctx) as c:
            c.login("alice@example.com", "alice-old-pw")
            assert c.select_folder("INBOX")[b"EXISTS"] == 0
    # a client that does not trust the cert is refused
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient("127.0.0.1", port=d.imaps_port, ssl=True, ssl_context=ssl.create_default_context())
    # STARTTLS on the plain port; plaintext auth stays allowed there too
    with IMAPClient("127.0.0.1", port=d.imap_port, ssl=False) as c:
        assert b"STARTTLS" in c.capabilities()
        c.starttls(ctx)
        c.login("alice@example.com", "alice-old-pw")
    with IMAPClient("127.0.0.1", port=d.imap_port, ssl=False) as c:
        c.login("alice@example.com", "alice-old-pw")


def test_pop3_login(dovecot_pair):
    seed(*dovecot_pair.source_account("alice@example.com"), {"INBOX": [Msg(make_message(1, size=1234))]})
    p = poplib.POP3("127.0.0.1", dovecot_pair.source.pop3_port, timeout=10)
    try:
        p.user("alice@example.com")
        p.pass_("alice-old-pw")
        count, size = p.stat()
        assert count == 1 and size == 1234
    finally:
        p.quit()
    p = poplib.POP3("127.0.0.1", dovecot_pair.target.pop3_port, timeout=10)
    try:
        p.user("alice@example.com")
        with pytest.raises(poplib.error_proto):
            p.pass_("alice-old-pw")
    finally:
        p.close()


def test_extra_conf_overrides_defaults(make_dovecot):
    d = make_dovecot("limited", pop3=False, extra_conf="mail_max_userip_connections = 2\n")
    clients = [connect("127.0.0.1", d.imap_port, "alice@example.com", "alice-old-pw") for _ in range(2)]
    try:
        c = IMAPClient("127.0.0.1", port=d.imap_port, ssl=False)
        with pytest.raises(LoginError, match="(?i)maximum number of connections"):
            c.login("alice@example.com", "alice-old-pw")
        c.shutdown()
    finally:
        for c in clients:
            c.logout()


def test_restart_stop_and_long_path(tmp_path):
    root = tmp_path / ("long-" + "x" * 80)  # too long for unix sockets: base_dir goes to /tmp
    d = Dovecot(str(root), "inst", {"alice@example.com": "pw:with spaces & colon"}, pop3=False)
    with d:
        assert d.start_seconds < 5, d.start_seconds
        assert not d._base_dir.startswith(str(root))
        short = os.path.dirname(d._base_dir)
        seed("127.0.0.1", d.imap_port, "alice@example.com", "pw:with spaces & colon",
             {"INBOX": [Msg(make_message(1))]})
        port, pid = d.imap_port, d.pid
        open_client = connect("127.0.0.1", d.imap_port, "alice@example.com", "pw:with spaces & colon")
        d.restart()
        assert d.imap_port == port and d.pid != pid
        _no_processes_left(pid)
        assert snapshot("127.0.0.1", port, "alice@example.com", "pw:with spaces & colon")["INBOX"]
        with pytest.raises(Exception):
            open_client.noop()  # the old connection was closed by the restart
        pid = d.pid
    _no_processes_left(pid)
    assert not os.path.exists(short)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    d.stop()  # idempotent


def test_instance_dies_with_its_python_process(tmp_path):
    code = (
        "import sys, time\n"
        "from mailsyncd.testing import Dovecot\n"
        "d = Dovecot(sys.argv[1], 'orphan', {'alice@example.com': 'pw'}, pop3=False)\n"
        "d.start()\n"
        "print(d.pid, d._base_dir, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().split()
        assert line and line[0].isdigit(), proc.stderr.read()
        pid, base_dir = int(line[0]), line[1]
        assert _alive(pid)
    finally:
        proc.send_signal(signal.SIGKILL)  # no atexit: only the watchdog can clean up
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    _no_processes_left(pid)
    if not base_dir.startswith(str(tmp_path)):  # a short base_dir in /tmp is removed too
        deadline = time.monotonic() + 5
        while os.path.exists(os.path.dirname(base_dir)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not os.path.exists(os.path.dirname(base_dir))


def test_port_collision_is_retried(tmp_path, monkeypatch):
    import mailsyncd.testing.dovecot as devserver

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    real_free_ports = devserver.free_ports
    picks = iter([[taken, *real_free_ports(2)]])  # the first pick collides, later picks are really free
    monkeypatch.setattr(devserver, "free_ports", lambda n: next(picks, None) or real_free_ports(n))
    try:
        with Dovecot(str(tmp_path), "retry", {"alice@example.com": "pw"}, pop3=False) as d:
            assert d.imap_port != taken
            assert "Address already in use" in open(d.log_path).read()
    finally:
        blocker.close()


def test_bad_config_raises_with_log_tail(tmp_path):
    d = Dovecot(str(tmp_path), "broken", {"alice@example.com": "pw"}, extra_conf="no_such_setting = 1\n")
    with pytest.raises(DovecotError) as ei:
        d.start()
    assert "no_such_setting" in str(ei.value)
    assert d.pid is None and not d.running
    d.stop()
