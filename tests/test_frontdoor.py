"""The front door with real clients: employees log in with the OLD password and land on the new server."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import imaplib
import os
import re
import socket
import subprocess
import threading
import time

import pytest
from imapclient import IMAPClient
from proxyenv import Daemon
from secretscan import assert_no_secrets
from seed import Msg, connect, make_message, seed, snapshot

A = "alice@example.com"
D = dt.datetime(2022, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def fd(tmp_path, dovecot_pair):
    with Daemon(tmp_path, dovecot_pair) as d:
        yield d


@pytest.fixture
def fd_tls(tmp_path, dovecot_pair, test_cert):
    with Daemon(tmp_path, dovecot_pair, test_cert) as d:
        yield d


def old_pw(pair, user=A) -> str:
    return pair.users[user].old_password


class Raw:
    """A bare IMAP client on a socket, for what libraries hide (tags, pipelining, SASL forms)."""

    def __init__(self, port: int, *, source: str | None = None, sock: socket.socket | None = None):
        self.s = sock or socket.create_connection(("127.0.0.1", port), timeout=20,
                                                  source_address=(source, 0) if source else None)
        self.buf = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.s.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def until(self, tag: bytes) -> list[bytes]:
        out = []
        while True:
            ln = self.line()
            out.append(ln)
            if ln.startswith(tag + b" "):
                return out

    def cmd(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until(tag)

    def close(self) -> None:
        self.s.close()


# -- login ------------------------------------------------------------------------------------

def test_right_password_lands_on_target_and_wrong_one_is_refused(fd, dovecot_pair):
    seed(*dovecot_pair.target_account(A), {"INBOX": [Msg(make_message(1, subject="already on new"))]})
    c = imaplib.IMAP4("127.0.0.1", fd.imap_port)
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
        c.login(A, "not-the-password")
    typ, data = c.login(A, old_pw(dovecot_pair))
    assert typ == "OK" and b"[CAPABILITY IMAP4rev1" in data[0]
    typ, data = c.select("INBOX", readonly=True)
    assert typ == "OK"
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"already on new" in data[0][1]   # it is the NEW server's mailbox
    c.logout()
    log = fd.log()
    assert re.search(r"event=login_failed ip=127\.0\.0\.1 user=alice@example\.com reason=", log)
    assert "event=login_ok ip=127.0.0.1 user=alice@example.com" in log


def test_unknown_domain_unknown_user_and_wrong_password_look_the_same(fd, dovecot_pair):
    answers = []
    for user, pw in (("nobody@example.com", "x"), ("alice@elsewhere.org", "x"), (A, "wrong"), ("no-at-sign", "x")):
        r = Raw(fd.imap_port)
        ans = r.cmd(b"a", b'LOGIN "' + user.encode() + b'" "' + pw.encode() + b'"')[-1]
        answers.append(ans)
        r.close()
    assert set(answers) == {b"a NO [AUTHENTICATIONFAILED] Authentication failed."}, answers
    assert "unknown domain 'elsewhere.org'" in fd.log()


def test_authenticate_plain_with_initial_response_and_with_continuation(fd, dovecot_pair):
    blob = base64.b64encode(b"\0" + A.encode() + b"\0" + old_pw(dovecot_pair).encode())
    r = Raw(fd.imap_port)
    assert r.cmd(b"a", b"AUTHENTICATE PLAIN " + blob)[-1].startswith(b"a OK [CAPABILITY ")
    r.close()
    r = Raw(fd.imap_port)
    r.send(b"b AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith(b"+")
    r.send(blob + b"\r\n")
    assert r.until(b"b")[-1].startswith(b"b OK [CAPABILITY ")
    r.close()
    # imapclient's plain_login uses the continuation form through imaplib
    c = IMAPClient("127.0.0.1", fd.imap_port, ssl=False)
    c.plain_login(A, old_pw(dovecot_pair))
    assert c.select_folder("INBOX")[b"EXISTS"] == 0
    c.logout()


def test_literals_and_escaped_quotes_in_passwords(make_dovecot, tmp_path):
    from conftest import MASTER, DovecotPair, UserCreds
    tricky = 'q"uo\\te w0rd'
    src = make_dovecot("source", {"carol@example.com": tricky})
    tgt = make_dovecot("target", {"carol@example.com": "new"}, master=MASTER)
    pair = DovecotPair(src, tgt, {"carol@example.com": UserCreds(tricky, "new")})
    with Daemon(tmp_path, pair) as d:
        pw = tricky.encode()
        quoted = b'"' + pw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        r = Raw(d.imap_port)
        assert r.cmd(b"q", b"LOGIN carol@example.com " + quoted)[-1].startswith(b"q OK")
        r.close()
        r = Raw(d.imap_port)   # synchronising literal: wait for "+"
        r.send(b"s LOGIN {17}\r\n")
        assert r.line().startswith(b"+")
        r.send(b"carol@example.com {%d}\r\n" % len(pw))
        assert r.line().startswith(b"+")
        r.send(pw + b"\r\n")
        assert r.until(b"s")[-1].startswith(b"s OK")
        r.close()
        r = Raw(d.imap_port)   # non-synchronising literals (LITERAL-), all in one write
        r.send(b"n LOGIN {17+}\r\ncarol@example.com {%d+}\r\n%s\r\n" % (len(pw), pw))
        assert r.until(b"n")[-1].startswith(b"n OK")
        r.close()


def test_pipelined_commands_behind_login_reach_the_target(fd, dovecot_pair):
    r = Raw(fd.imap_port)
    r.send(b"a LOGIN " + A.encode() + b" " + old_pw(dovecot_pair).encode()
           + b"\r\nb SELECT INBOX\r\nc NOOP\r\nd LOGOUT\r\n")
    assert r.until(b"a")[-1].startswith(b"a OK")
    assert r.until(b"b")[-1].startswith(b"b OK [READ-WRITE]")
    assert r.until(b"c")[-1].startswith(b"c OK")
    assert r.until(b"d")[-1].startswith(b"d OK")
    r.close()


# -- TLS ------------------------------------------------------------------------------------

def test_starttls_and_implicit_tls(fd_tls, dovecot_pair):
    ctx = fd_tls.client_tls()
    c = imaplib.IMAP4("127.0.0.1", fd_tls.imap_port)
    assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
    assert "AUTH=PLAIN" not in c.capabilities
    c.starttls(ssl_context=ctx)
    assert "AUTH=PLAIN" in c.capabilities and "LOGINDISABLED" not in c.capabilities
    assert c.login(A, old_pw(dovecot_pair))[0] == "OK"
    c.logout()
    c = imaplib.IMAP4_SSL("127.0.0.1", fd_tls.imaps_port, ssl_context=ctx)
    assert c.login(A, old_pw(dovecot_pair))[0] == "OK"
    assert c.select("INBOX")[0] == "OK"
    c.logout()


def test_a_large_message_reaches_a_slow_reader_byte_exact_over_993_and_starttls(fd_tls, dovecot_pair):
    """The relay's encrypted writes go straight into the client's socket, or queue behind what it has
    not taken yet (tlsrelay.BulkTLS._send): a reader with a small window that starts late still gets
    every byte in order."""
    raw = make_message(1, size=6_000_000)
    seed(*dovecot_pair.target_account(A), {"Big": [Msg(raw)]})
    ctx = fd_tls.client_tls()
    for port in (fd_tls.imaps_port, fd_tls.imap_port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)     # before connect: a small window
        s.settimeout(20)
        s.connect(("127.0.0.1", port))
        if port == fd_tls.imaps_port:
            r = Raw(port, sock=ctx.wrap_socket(s, server_hostname="localhost"))
        else:
            r = Raw(port, sock=s)
            assert r.cmd(b"s", b"STARTTLS")[-1].startswith(b"s OK") and r.buf == b""
            r.s = ctx.wrap_socket(s, server_hostname="localhost")
        assert r.cmd(b"a", b"LOGIN " + A.encode() + b" " + old_pw(dovecot_pair).encode())[-1].startswith(b"a OK")
        assert r.cmd(b"b", b"EXAMINE Big")[-1].startswith(b"b OK")
        r.send(b"c FETCH 1 BODY.PEEK[]\r\n")
        time.sleep(0.5)                      # the relay fills the window and queues the rest meanwhile
        head = r.line()
        n = int(re.search(rb"\{(\d+)\}$", head).group(1))
        while len(r.buf) < n:
            r.buf += r.s.recv(65536)
        body, r.buf = r.buf[:n], r.buf[n:]
        assert r.until(b"c")[-1].startswith(b"c OK")
        assert len(body) == len(raw) and hashlib.sha256(body).digest() == hashlib.sha256(raw).digest()
        r.close()


def test_target_over_tls_without_cleartext_fallback(make_dovecot, tmp_path, test_cert):
    from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
    src = make_dovecot("source", SOURCE_USERS)
    tgt = make_dovecot("target", TARGET_USERS, master=MASTER, ssl=test_cert)
    pair = DovecotPair(src, tgt, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
    for security, port in (("starttls", tgt.imap_port), ("tls", tgt.imaps_port)):
        sub = tmp_path / f"via-{security}"
        sub.mkdir()
        target = {"security": security, "port": port, "ca_file": test_cert[0]}
        with Daemon(sub, pair, target=target) as d:
            c = imaplib.IMAP4("127.0.0.1", d.imap_port)
            assert c.login(A, SOURCE_USERS[A])[0] == "OK", security
            c.logout()
    # A certificate we do not trust: the login fails, nothing is sent in cleartext instead.
    sub = tmp_path / "untrusted"
    sub.mkdir()
    with Daemon(sub, pair, target={"security": "tls", "port": tgt.imaps_port}) as d:
        r = Raw(d.imap_port)
        ans = r.cmd(b"a", b"LOGIN " + A.encode() + b" " + SOURCE_USERS[A].encode())[-1]
        assert ans.startswith(b"a NO [UNAVAILABLE]")
        assert "event=target_login_failed" in d.log()


# -- what the target sees ----------------------------------------------------------------------

def test_client_ip_is_forwarded_with_id(fd, dovecot_pair):
    r = Raw(fd.imap_port, source="127.0.0.2")
    assert r.cmd(b"a", b"LOGIN " + A.encode() + b" " + old_pw(dovecot_pair).encode())[-1].startswith(b"a OK")
    r.cmd(b"b", b"LOGOUT")
    r.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(dovecot_pair.target.log_path, errors="replace") as f:
            log = f.read()
        if re.search(r"Login: user=<alice@example\.com>.*rip=127\.0\.0\.2", log):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("target never logged rip=127.0.0.2:\n" + log[-2000:])


def test_post_login_capabilities_are_the_targets(fd, dovecot_pair):
    direct = IMAPClient("127.0.0.1", dovecot_pair.target.imap_port, ssl=False)
    direct.login(*dovecot_pair.target_master_account(A)[2:])
    want = {c.upper() for c in direct.capabilities()}
    direct.logout()
    r = Raw(fd.imap_port)
    ok = r.cmd(b"a", b"LOGIN " + A.encode() + b" " + old_pw(dovecot_pair).encode())[-1]
    got = set(re.search(rb"\[CAPABILITY ([^\]]+)\]", ok).group(1).upper().split())
    assert got == want
    r.close()


# -- the relay ---------------------------------------------------------------------------------

def test_big_fetch_and_append_intact_through_the_relay(fd, dovecot_pair):
    _big_fetch_and_append(dovecot_pair, fd.imap_port)


def test_big_fetch_and_append_intact_over_implicit_tls(fd_tls, dovecot_pair):
    """Both directions through BulkTLS: one SSL_write per relayed read, one delivery per socket read."""
    _big_fetch_and_append(dovecot_pair, fd_tls.imaps_port, ssl=True, ssl_context=fd_tls.client_tls())


def _big_fetch_and_append(dovecot_pair, port: int, **tls) -> None:
    big = make_message(1, size=20 * 1024 * 1024)
    seed(*dovecot_pair.target_account(A), {"INBOX": [Msg(big, ("\\Seen",), D)]})
    c = connect("127.0.0.1", port, A, old_pw(dovecot_pair), **tls)
    c.select_folder("INBOX")
    data = c.fetch([1], ["BODY.PEEK[]"])
    assert hashlib.sha256(data[1][b"BODY[]"]).hexdigest() == hashlib.sha256(big).hexdigest()
    up = make_message(2, size=5 * 1024 * 1024)
    c.append("INBOX", up, flags=("\\Flagged",), msg_time=D)
    c.logout()
    snap = snapshot(*dovecot_pair.target_account(A))
    assert hashlib.sha256(up).hexdigest() in {row[0] for row in snap["INBOX"]}


def test_idle_sees_new_mail_through_the_relay(fd, dovecot_pair):
    c = connect("127.0.0.1", fd.imap_port, A, old_pw(dovecot_pair))
    c.select_folder("INBOX")
    c.idle()
    seed(*dovecot_pair.target_account(A), {"INBOX": [Msg(make_message(7))]})
    got = []
    deadline = time.monotonic() + 20
    while not any(b"EXISTS" in r for r in got) and time.monotonic() < deadline:
        got += [repr(x).encode() for x in c.idle_check(timeout=2)]
    c.idle_done()
    c.logout()
    assert any(b"EXISTS" in r for r in got), got


def test_closing_either_side_closes_the_other(fd, dovecot_pair):
    r = Raw(fd.imap_port)
    assert r.cmd(b"a", b"LOGIN " + A.encode() + b" " + old_pw(dovecot_pair).encode())[-1].startswith(b"a OK")
    dovecot_pair.target.doveadm("kick", A)
    with pytest.raises(EOFError):
        for _ in range(10):
            r.line()
    r.close()
    r = Raw(fd.imap_port)
    assert r.cmd(b"a", b"LOGIN " + A.encode() + b" " + old_pw(dovecot_pair).encode())[-1].startswith(b"a OK")
    r.close()
    deadline = time.monotonic() + 10
    while A in dovecot_pair.target.doveadm("who", check=False).stdout:
        assert time.monotonic() < deadline, "the target session outlived the client"
        time.sleep(0.1)


# -- availability ------------------------------------------------------------------------------

def test_target_down_gives_unavailable(fd, dovecot_pair):
    dovecot_pair.target.stop()
    r = Raw(fd.imap_port)
    ans = r.cmd(b"a", b"LOGIN " + A.encode() + b" " + old_pw(dovecot_pair).encode())[-1]
    assert ans.startswith(b"a NO [UNAVAILABLE]"), ans
    assert "event=target_login_failed" in fd.log()


def test_source_down_refuses_login_unless_configured_to_trust_the_last_good_password(
        tmp_path, dovecot_pair):
    pw = old_pw(dovecot_pair)
    for accept in (False, True):
        sub = tmp_path / f"accept-{accept}"
        sub.mkdir()
        if not dovecot_pair.source.running:
            dovecot_pair.source.start()
        with Daemon(sub, dovecot_pair, frontdoor={"accept_verifier_when_source_down": accept,
                                                  "verifier_ttl": 0.001}) as d:
            c = imaplib.IMAP4("127.0.0.1", d.imap_port)
            c.login(A, pw)        # a good login while the source is up stores the verifier
            c.logout()
            dovecot_pair.source.stop()
            r = Raw(d.imap_port)
            ans = r.cmd(b"a", b"LOGIN " + A.encode() + b" " + pw.encode())[-1]
            log = d.wait_log("event=login_")
            if accept:
                assert ans.startswith(b"a OK"), ans
                assert "last good password accepted" in d.log()
                # a wrong password is still refused
                r2 = Raw(d.imap_port)
                assert r2.cmd(b"b", b"LOGIN " + A.encode() + b" nope")[-1].startswith(b"b NO")
            else:
                assert ans.startswith(b"a NO [UNAVAILABLE]"), ans
                assert re.search(r"event=login_failed ip=127\.0\.0\.1 user=alice@example\.com "
                                 r"reason='source unavailable: source 127\.0\.0\.1:\d+: connection refused'",
                                 d.log()), log[-2000:]


# -- the migration starts --------------------------------------------------------------------------

def test_first_login_starts_the_migration_with_an_alert(make_dovecot, tmp_path):
    from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
    src = make_dovecot("source", SOURCE_USERS)
    tgt = make_dovecot("target", TARGET_USERS, master=MASTER)
    pair = DovecotPair(src, tgt, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i), ("\\Seen",), D) for i in range(1500)],
                                   "Work": [Msg(make_message(5000 + i)) for i in range(300)]})
    # one message per batch slows the pass down so that the second login sees it running
    with Daemon(tmp_path, pair, sync={"batch_messages": 1}) as d:
        r = Raw(d.imap_port)
        assert r.cmd(b"a", b"LOGIN " + A.encode() + b" " + SOURCE_USERS[A].encode())[-1].startswith(b"a OK")
        r.close()
        r = Raw(d.imap_port)
        lines = r.cmd(b"b", b"LOGIN " + A.encode() + b" " + SOURCE_USERS[A].encode())
        r.close()
        alerts = [ln for ln in lines if b"[ALERT]" in ln]
        assert alerts and re.match(rb"\* OK \[ALERT\] Mailbox migration in progress: ", alerts[0]), lines
        d.wait_log("event=pass_done account=alice@example.com ok=True", timeout=120)
        assert snapshot(*pair.source_account(A)) == snapshot(*pair.target_account(A))
        log = d.log()
        assert log.count("event=pass_start account=alice@example.com") == 1
    # the password is stored encrypted, and a restart can use it
    from mailsyncd.store import Store
    from mailsyncd.vault import Vault
    state = str(tmp_path / "state")
    store = Store.in_state_dir(state)
    assert Vault.open(state, store).source_password(A) == SOURCE_USERS[A]
    assert store.account(A)["plan"] == "login"
    assert oct(os.stat(os.path.join(state, "vault.key")).st_mode & 0o777) == "0o600"
    store.close()


# -- throttling --------------------------------------------------------------------------------

def test_a_thousand_wrong_passwords_reach_the_source_a_handful_of_times(fd, dovecot_pair):
    attempts = 0
    lock = threading.Lock()

    def guesser(k: int) -> None:
        nonlocal attempts
        n = 0
        while n < 50:
            r = Raw(fd.imap_port)
            try:
                for _ in range(3):      # the front door hangs up after 3 failures
                    ans = r.cmd(b"a", b"LOGIN " + A.encode() + b" guess-%d-%d" % (k, n))[-1]
                    assert ans.startswith(b"a NO"), ans
                    n += 1
                    with lock:
                        attempts += 1
            except EOFError:
                pass
            finally:
                r.close()

    threads = [threading.Thread(target=guesser, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert attempts >= 1000
    with open(dovecot_pair.source.log_path, errors="replace") as f:
        reached = f.read().count("Password mismatch")
    # one user from one network: its (user, network) budget of 5; the refusals after it are UNAVAILABLE
    assert 1 <= reached <= 5, f"{reached} of {attempts} wrong passwords reached the source"
    assert "budget=user+network empty for 127.0.0.1/32" in fd.log()
    assert fd.log().count("event=login_failed ip=127.0.0.1") >= 1000
    # another user from another address is not affected
    r = Raw(fd.imap_port, source="127.0.0.3")
    B = "bob@example.com"
    assert r.cmd(b"a", b"LOGIN " + B.encode() + b" " + old_pw(dovecot_pair, B).encode())[-1].startswith(b"a OK")
    r.close()


def test_five_connections_cost_the_source_one_login(fd, dovecot_pair):
    clients = []
    for _ in range(5):
        c = imaplib.IMAP4("127.0.0.1", fd.imap_port)
        c.login(A, old_pw(dovecot_pair))
        clients.append(c)
    for c in clients:
        c.logout()
    assert fd.log().count("how='source accepted'") == 1
    assert fd.log().count("how='recently verified at the source'") == 4


# -- target login modes --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["master_separator", "same"])
def test_target_login_modes(make_dovecot, tmp_path, mode):
    from conftest import MASTER, DovecotPair, UserCreds
    users = {A: "same-on-both"}
    src = make_dovecot("source", users)
    tgt = make_dovecot("target", users, master=MASTER)
    pair = DovecotPair(src, tgt, {A: UserCreds("same-on-both", "same-on-both")})
    target = {"auth": mode}
    if mode == "same":
        target.update(master_user=None, master_password_file=None)
    with Daemon(tmp_path, pair, target=target) as d:
        c = imaplib.IMAP4("127.0.0.1", d.imap_port)
        assert c.login(A, "same-on-both")[0] == "OK"
        assert c.select("INBOX")[0] == "OK"
        c.logout()


# -- real clients ----------------------------------------------------------------------------------

def test_curl_lists_folders_through_the_proxy(fd_tls, dovecot_pair):
    seed(*dovecot_pair.target_account(A), {"Projects": [Msg(make_message(1))]})
    out = subprocess.run(["curl", "-sS", "--max-time", "30", "--cacert", fd_tls.cert[0],
                          "--user", f"{A}:{old_pw(dovecot_pair)}", f"imaps://127.0.0.1:{fd_tls.imaps_port}/"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "INBOX" in out.stdout and "Projects" in out.stdout
    out = subprocess.run(["curl", "-sS", "--max-time", "30", "--ssl-reqd", "--cacert", fd_tls.cert[0],
                          "--user", f"{A}:{old_pw(dovecot_pair)}",
                          f"imap://127.0.0.1:{fd_tls.imap_port}/Projects;UID=1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Test message 1" in out.stdout


@pytest.mark.skipif(not any(os.access(os.path.join(p, "mbsync"), os.X_OK)
                            for p in os.environ.get("PATH", "").split(os.pathsep)), reason="mbsync not installed")
def test_mbsync_syncs_through_the_proxy(fd_tls, dovecot_pair, tmp_path):
    seed(*dovecot_pair.target_account(A), {"INBOX": [Msg(make_message(i)) for i in range(40)],
                                           "Work/Q1": [Msg(make_message(100 + i)) for i in range(10)]})
    local = tmp_path / "mbsync-mail"
    local.mkdir()
    pwfile = tmp_path / "mbsync.pw"
    pwfile.write_text(old_pw(dovecot_pair))
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""
IMAPAccount proxy
Host localhost
Port {fd_tls.imaps_port}
User {A}
PassCmd "cat {pwfile}"
SSLType IMAPS
CertificateFile {fd_tls.cert[0]}

IMAPStore far
Account proxy

MaildirStore near
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel all
Far :far:
Near :near:
Patterns *
Create Near
SyncState *
""")
    out = subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(os.listdir(local / "INBOX" / "cur")) + len(os.listdir(local / "INBOX" / "new")) == 40
    assert len(os.listdir(local / "Work" / "Q1" / "new")) + len(os.listdir(local / "Work" / "Q1" / "cur")) == 10


# -- secrets -----------------------------------------------------------------------------------

def test_no_password_in_logs_state_or_errors(tmp_path, dovecot_pair, test_cert):
    pw = old_pw(dovecot_pair)
    wrong = "Wr0ng-secret-" + "x" * 8
    with Daemon(tmp_path, dovecot_pair, test_cert) as d:
        ctx = d.client_tls()
        for p in (wrong, pw, pw):
            c = imaplib.IMAP4_SSL("127.0.0.1", d.imaps_port, ssl_context=ctx)
            try:
                c.login(A, p)
                c.logout()
            except imaplib.IMAP4.error as e:
                assert p not in str(e)
        blob = base64.b64encode(f"\0{A}\0{wrong}2".encode())
        r = Raw(d.imaps_port, sock=ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.imaps_port)),
                                                   server_hostname="127.0.0.1"))
        r.cmd(b"x", b"AUTHENTICATE PLAIN " + blob)
        r.close()
        d.wait_log("event=pass_done", timeout=60)
    secrets = [pw, wrong, wrong + "2", dovecot_pair.master[1], blob.decode()]
    assert_no_secrets(tmp_path, secrets, must_scan=("mailsyncd.log", "mailsyncd.yaml", "state/mailsyncd.sqlite3"))


def test_compress_deflate_works_through_the_relay(make_dovecot, tmp_path):
    """After login nothing is parsed, so COMPRESS (RFC 4978) is between the client and the target."""
    import zlib

    from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
    src = make_dovecot("source", SOURCE_USERS)
    tgt = make_dovecot("target", TARGET_USERS, master=MASTER,
                       extra_conf="protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n")
    pair = DovecotPair(src, tgt, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
    body = make_message(3, size=200_000)
    seed(*pair.target_account(A), {"INBOX": [Msg(body)]})
    with Daemon(tmp_path, pair) as d:
        r = Raw(d.imap_port)
        ok = r.cmd(b"a", b"LOGIN " + A.encode() + b" " + SOURCE_USERS[A].encode())[-1]
        assert b"COMPRESS=DEFLATE" in ok
        assert r.cmd(b"b", b"COMPRESS DEFLATE")[-1].startswith(b"b OK")
        comp, decomp = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
        r.send(comp.compress(b"c SELECT INBOX\r\nd FETCH 1 BODY.PEEK[]\r\ne LOGOUT\r\n") + comp.flush(zlib.Z_SYNC_FLUSH))
        plain = b""
        deadline = time.monotonic() + 30
        while b"\r\ne OK" not in plain and time.monotonic() < deadline:
            chunk = r.s.recv(65536)
            if not chunk:
                break
            plain += decomp.decompress(chunk)
        r.close()
        assert b"\r\nc OK" in plain and b"\r\ne OK" in plain
        assert body in plain


def test_simultaneous_logins_of_one_user_share_one_source_check(fd, dovecot_pair):
    """Mail clients open several connections at once; all of them get in, on one source login."""
    results: list[bytes] = []
    barrier = threading.Barrier(10)

    def one() -> None:
        r = Raw(fd.imap_port)
        barrier.wait()
        results.append(r.cmd(b"a", b"LOGIN " + A.encode() + b" " + old_pw(dovecot_pair).encode())[-1])
        r.close()

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 10 and all(r.startswith(b"a OK [CAPABILITY") for r in results), results
    assert fd.log().count("how='source accepted'") == 1
    assert "login_crashed" not in fd.log() and "auth_error" not in fd.log()


def test_a_pop3_source_checks_the_password_over_pop3(tmp_path, dovecot_pair):
    """Old servers that only speak POP3 still decide who logs in."""
    with Daemon(tmp_path, dovecot_pair, source={"protocol": "pop3", "port": dovecot_pair.source.pop3_port}) as d:
        r = Raw(d.imap_port)
        assert r.cmd(b"a", b"LOGIN " + A.encode() + b" wrong")[-1].startswith(b"a NO [AUTHENTICATIONFAILED]")
        assert r.cmd(b"b", b"LOGIN " + A.encode() + b" " + old_pw(dovecot_pair).encode())[-1].startswith(b"b OK")
        r.close()
    deadline = time.monotonic() + 10
    while True:   # Dovecot's log process writes asynchronously
        with open(dovecot_pair.source.log_path, errors="replace") as f:
            log = f.read()
        if re.search(r"pop3-login: Info: Login: user=<alice@example\.com>", log):
            break
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.1)
