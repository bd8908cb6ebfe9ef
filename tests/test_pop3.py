"""POP3 sources: the INBOX copied one way by UIDL, against Dovecot's pop3d (and a fake server without UIDL)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import poplib
import signal
import socket
import sqlite3
import threading
import time

import pytest

from mailsyncd.testing import free_port
from mailsyncd.store import Store
from mailsyncd.sync.popdate import header_block, message_date
from mailsyncd.sync.progress import Progress
from seed import Msg, make_message, seed, snapshot
from syncenv import ctl, ctl_popen, make_config, password_file, sync_once

A = "alice@example.com"
B = "bob@example.com"
UTC = dt.timezone.utc
TZ8 = dt.timezone(dt.timedelta(hours=8))


def _date(i: int) -> dt.datetime:
    # make_message's own Date: header for message i
    return dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))) + dt.timedelta(hours=i)


def _msg(i: int, **kw) -> Msg:
    """Unflagged, INTERNALDATE = its Date: header: what a POP3 copy should reproduce exactly."""
    return Msg(make_message(i, **kw), (), _date(i))


def corpus() -> list[Msg]:
    return ([_msg(i) for i in range(8)]
            + [_msg(20, body="." + "\r\n.leading dot\r\n..two\r\n.\r\nlast"),       # dot-stuffing both ways
               _msg(21, body="x" * 20000),                                          # > poplib's 2048-byte lines
               _msg(22, body="中文 ünïcode 8-bit"),
               _msg(23, size=300_000),
               _msg(24, msgid=False), _msg(24, msgid=False)])                       # exact duplicates


def src_inbox(pair, user=A):
    return sorted(snapshot(*pair.source_account(user))["INBOX"])


def dst_box(pair, user=A, box="INBOX"):
    return sorted(snapshot(*pair.target_master_account(user)).get(box, []))


def pop3_cfg(tmp_path, pair, *, port=None, **kw):
    source = {"protocol": "pop3", "port": port or pair.source.pop3_port, "security": "none"}
    source.update(kw.pop("source", {}))
    return make_config(tmp_path, pair, source=source, **kw)


def bare_login(port: int, user: str, password: str) -> None:
    """A POP3 session that reads nothing: Dovecot moves new/ to cur/ for any session (see pop3.py)."""
    p = poplib.POP3("127.0.0.1", port, timeout=10)
    p.user(user)
    p.pass_(password)
    p.quit()


def maildir_state(maildir: str) -> dict[str, str]:
    """{new|cur|tmp/file name: sha256 of its content}: flags are in the names."""
    out = {}
    for sub in ("new", "cur", "tmp"):
        d = os.path.join(maildir, sub)
        for f in os.listdir(d):
            with open(os.path.join(d, f), "rb") as fh:
                out[f"{sub}/{f}"] = hashlib.sha256(fh.read()).hexdigest()
    return out


def assert_no_retr_no_dele(log_path: str) -> None:
    """Dovecot logs each POP3 session's counts: "top=N/bytes, retr=N/bytes, del=N/messages"."""
    with open(log_path, errors="replace") as f:
        ends = [ln for ln in f if "pop3(" in ln and "Disconnected" in ln]
    assert ends
    for ln in ends:
        assert "retr=0/0," in ln and "del=0/" in ln, ln


def pop3_rows(tmp_path) -> list[tuple]:
    with sqlite3.connect(tmp_path / "state" / "mailsyncd.sqlite3") as c:
        return c.execute("SELECT uidl, target_uid, skipped FROM pop3_messages ORDER BY id").fetchall()


def inflight_count(tmp_path) -> int:
    with sqlite3.connect(tmp_path / "state" / "mailsyncd.sqlite3") as c:
        return c.execute("SELECT count(*) FROM inflight").fetchone()[0]


# ---------------------------------------------------------------- pure: dates from headers

def test_header_block_stops_at_the_first_blank_line():
    raw = b"Subject: a\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\nDate: Tue, 2 Jan 2024 10:00:00 +0000\r\n"
    assert header_block(raw) == b"Subject: a\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000"
    assert header_block(b"\r\nDate: Tue, 2 Jan 2024 10:00:00 +0000\r\n") == b""
    assert header_block(b"Subject: x\nA: b\n\nbody") == b"Subject: x\nA: b"


def test_message_date_rules():
    now = dt.datetime(2024, 6, 1, tzinfo=UTC)
    d, how = message_date(b"Date: Mon, 1 Jan 2024 10:00:00 +0800\r\n\r\nbody", now)
    assert how == "date" and d == dt.datetime(2024, 1, 1, 10, 0, tzinfo=TZ8)
    # folded Date, lower-case name
    d, how = message_date(b"date: Mon, 1 Jan 2024\r\n 10:00:00 +0000\r\n\r\n", now)
    assert how == "date" and d == dt.datetime(2024, 1, 1, 10, tzinfo=UTC)
    # no Date: the newest (topmost) Received:, the date after its last ';'
    raw = (b"Received: from a (a [1.2.3.4]) by b; with ESMTP; Tue, 2 Jan 2024 09:00:00 +0100\r\n"
           b"Received: from c by a;\r\n\tMon, 1 Jan 2024 23:00:00 +0100\r\n"
           b"Subject: x\r\n\r\nDate: Wed, 3 Jan 2024 00:00:00 +0000\r\n")
    d, how = message_date(raw, now)
    assert how == "received" and d == dt.datetime(2024, 1, 2, 8, tzinfo=UTC)
    # unparseable Date falls through to Received
    d, how = message_date(b"Date: yesterday-ish\r\nReceived: by x; Tue, 2 Jan 2024 09:00:00 +0000\r\n\r\n", now)
    assert how == "received" and d == dt.datetime(2024, 1, 2, 9, tzinfo=UTC)
    # -0000: zone unknown, read as UTC
    d, how = message_date(b"Date: Mon, 1 Jan 2024 10:00:00 -0000\r\n\r\n", now)
    assert d == dt.datetime(2024, 1, 1, 10, tzinfo=UTC)
    # nothing usable: the copy's time (None); far future and pre-1970 count as unusable
    assert message_date(b"Subject: x\r\n\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n", now) == (None, "none")
    assert message_date(b"Date: Mon, 1 Jan 2035 10:00:00 +0000\r\n\r\n", now) == (None, "none")
    assert message_date(b"Date: Mon, 1 Jan 1900 10:00:00 +0000\r\n\r\n", now) == (None, "none")
    assert message_date(b"Received: no date here\r\n\r\n", now) == (None, "none")
    assert message_date(b"", now) == (None, "none")


# ---------------------------------------------------------------- against Dovecot's pop3d

def test_first_pass_copies_the_inbox_byte_identical_then_incremental(dovecot_pair, tmp_path):
    pair = dovecot_pair
    pw = pair.users[A].old_password
    seed(*pair.source_account(A), {"INBOX": corpus(), "Sent": [_msg(100)]})
    bare_login(pair.source.pop3_port, A, pw)   # Dovecot's own new/ -> cur/ move, before we look
    maildir = pair.source.maildir(A)
    before = maildir_state(maildir)
    cfg = pop3_cfg(tmp_path, pair, sync={"batch_messages": 4})

    progress = Progress()
    res = sync_once(cfg, A, pw, progress=progress)
    assert res.error is None and res.complete, (res.error, res.folders)
    assert res.copied == len(corpus())
    assert progress.total == progress.done == len(corpus()) and progress.bytes == res.bytes > 0
    # byte-identical, unflagged, INTERNALDATE = Date: (the seeded INTERNALDATE is the Date: header)
    assert dst_box(pair) == src_inbox(pair)
    assert set(snapshot(*pair.target_master_account(A))) == {"INBOX"}   # POP3 sees the INBOX only
    # the source is untouched: same files, same names (so same flags), same bytes; no DELE, no \Seen
    assert maildir_state(maildir) == before
    assert_no_retr_no_dele(pair.source.log_path)

    again = sync_once(cfg, A, pw)
    assert again.complete and again.copied == 0 and again.present == len(corpus())
    assert maildir_state(maildir) == before

    seed(*pair.source_account(A), {"INBOX": [_msg(200), _msg(201)]})
    third = sync_once(cfg, A, pw)
    assert third.complete and third.copied == 2 and third.present == len(corpus())
    assert dst_box(pair) == src_inbox(pair)

    store = Store.in_state_dir(str(tmp_path / "state"))
    try:
        (rep,) = store.reports(A)
    finally:
        store.close()
    assert (rep.path, rep.target_name, rep.source_count, rep.target_count, rep.copied, rep.present,
            rep.error) == ("INBOX", "INBOX", len(corpus()) + 2, len(corpus()) + 2, 2, len(corpus()), None)
    assert len(pop3_rows(tmp_path)) == len(corpus()) + 2
    assert all(u is not None and t is not None and s is None for u, t, s in pop3_rows(tmp_path))


def test_mailsyncctl_sync_and_report_with_a_pop3_source(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [_msg(i) for i in range(3)]})
    cfg = pop3_cfg(tmp_path, pair)
    pwf = password_file(tmp_path, pair.users[A].old_password)
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", pwf, "--progress", "none")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "copied 3" in r.stdout
    rep = ctl("--config", cfg, "report", A)
    assert rep.returncode == 0 and "INBOX" in rep.stdout and "phase=synced" in rep.stdout, rep.stdout


def test_internaldate_from_date_then_received_then_copy_time(dovecot_pair, tmp_path):
    pair = dovecot_pair
    now_seeded = dt.datetime(2023, 3, 3, 3, 3, 3, tzinfo=UTC)   # the source's INTERNALDATE: not used
    dated = make_message(1, date=dt.datetime(2019, 7, 8, 9, 10, 11, tzinfo=TZ8))
    received = (b"Received: from mx.example.org by mx.example.com with ESMTPS id 1;\r\n"
                b"\tSat, 9 Feb 2019 10:11:12 +0100\r\n"
                b"Received: from laptop by mx.example.org; Fri, 8 Feb 2019 00:00:00 +0000\r\n"
                b"Subject: no date\r\nFrom: a@example.org\r\n\r\nDate: Mon, 1 Jan 2001 00:00:00 +0000\r\n")
    bad_date = b"Subject: bad date\r\nDate: sometime last week\r\nFrom: a@example.org\r\n\r\nhi\r\n"
    seed(*pair.source_account(A), {"INBOX": [Msg(m, (), now_seeded) for m in (dated, received, bad_date)]})
    t0 = dt.datetime.now(UTC)
    res = sync_once(pop3_cfg(tmp_path, pair), A, pair.users[A].old_password)
    t1 = dt.datetime.now(UTC)
    assert res.complete and res.copied == 3
    got = {sha: dt.datetime.fromisoformat(when) for sha, _, when in dst_box(pair)}
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in (("dated", dated), ("received", received),
                                                         ("bad", bad_date))}
    assert got[sha["dated"]] == dt.datetime(2019, 7, 8, 1, 10, 11, tzinfo=UTC)
    assert got[sha["received"]] == dt.datetime(2019, 2, 9, 9, 11, 12, tzinfo=UTC)   # the newest Received
    assert t0 - dt.timedelta(seconds=2) <= got[sha["bad"]] <= t1 + dt.timedelta(seconds=2)  # time of the copy


def test_layout_under_prefix_puts_the_inbox_where_the_imap_engine_would(dovecot_pair, tmp_path):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [_msg(i) for i in range(3)]})
    cfg = pop3_cfg(tmp_path, pair, folders={"layout": "under", "prefix": "Migrated"})
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete and res.copied == 3
    assert res.folders[0].target_name == "Migrated/INBOX"
    assert dst_box(pair, box="Migrated/INBOX") == src_inbox(pair)
    assert dst_box(pair) == []
    # excluded INBOX: nothing to do, said so
    (tmp_path / "x").mkdir()
    cfg2 = pop3_cfg(tmp_path / "x", pair, folders={"exclude": ["INBOX"]})
    res2 = sync_once(cfg2, B, pair.users[B].old_password)
    assert res2.error is None and res2.copied == 0 and res2.folders == []
    assert [s.path for s in res2.skipped_folders] == ["INBOX"]


def test_wrong_password_is_a_clear_error(dovecot_pair, tmp_path):
    cfg = pop3_cfg(tmp_path, dovecot_pair)
    res = sync_once(cfg, A, "not-the-password")
    assert res.error_kind == "AuthFailed"
    assert f"source 127.0.0.1:{dovecot_pair.source.pop3_port}: login refused for {A}" in res.error
    assert "not-the-password" not in res.error
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", password_file(tmp_path, "not-the-password"))
    assert r.returncode == 1 and "login refused for alice@example.com" in r.stderr
    assert "Traceback" not in r.stderr and "not-the-password" not in r.stderr + r.stdout


def _tls_source(make_dovecot, test_cert):
    """Dovecot with STLS on pop3_port, and implicit TLS on .pop3s_port (devserver keeps pop3s off:
    extra_conf turns it on)."""
    port = free_port()
    d = make_dovecot("tlssrc", ssl=test_cert, extra_conf=f"""
service pop3-login {{
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {port}
  }}
}}""")
    d.pop3s_port = port
    return d


def test_stls_and_implicit_tls_with_verified_certificates(make_dovecot, dovecot_pair, test_cert, tmp_path):
    pair = dovecot_pair
    tls = _tls_source(make_dovecot, test_cert)
    for user in (A, B):
        seed("127.0.0.1", tls.imap_port, user, pair.users[user].old_password,
             {"INBOX": [_msg(i) for i in range(3)]})
    # STLS on 110-style port, host name checked against the certificate
    cfg = pop3_cfg(tmp_path, pair, port=tls.pop3_port,
                   source={"security": "starttls", "ca_file": test_cert[0], "host": "localhost"})
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete and res.copied == 3, res.error
    # implicit TLS (995-style)
    (tmp_path / "b").mkdir()
    cfg = pop3_cfg(tmp_path / "b", pair, port=tls.pop3s_port,
                   source={"security": "tls", "ca_file": test_cert[0]})
    res = sync_once(cfg, B, pair.users[B].old_password)
    assert res.complete and res.copied == 3, res.error
    assert dst_box(pair, B) == sorted(snapshot("127.0.0.1", tls.imap_port, B, pair.users[B].old_password)["INBOX"])


def test_tls_failures_never_fall_back_to_cleartext(make_dovecot, dovecot_pair, test_cert, tmp_path):
    pair = dovecot_pair
    tls = _tls_source(make_dovecot, test_cert)
    pw = pair.users[A].old_password
    cases = [
        # certificate not trusted (no ca_file)
        (dict(port=tls.pop3_port, source={"security": "starttls"}), "TLS certificate not trusted"),
        (dict(port=tls.pop3s_port, source={"security": "tls"}), "TLS certificate not trusted"),
        # the plain source offers no STLS: an error, not a cleartext login
        (dict(port=pair.source.pop3_port, source={"security": "starttls"}), "does not offer STLS"),
        # TLS spoken to a cleartext port
        (dict(port=pair.source.pop3_port, source={"security": "tls"}), "TLS"),
    ]
    for i, (kw, words) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        res = sync_once(pop3_cfg(tmp_path / str(i), pair, **kw), A, pw)
        assert res.error_kind in ("TLSFailure", "Unreachable") and words in res.error, (kw, res.error)
        assert res.copied == 0
    # no cleartext login reached the plain server
    with open(pair.source.log_path, errors="replace") as f:
        assert "pop3-login: Login" not in f.read()


def test_a_message_the_target_refuses_is_skipped_and_reported(dovecot_pair, make_dovecot, tmp_path):
    pair = dovecot_pair
    pair.target.stop()
    pair.target = make_dovecot("target2", {A: "x", B: "y"}, master=pair.master, extra_conf="""
mail_plugins = $mail_plugins quota
plugin {
  quota = maildir:User quota
  quota_max_mail_size = 100k
}""")
    seed(*pair.source_account(A), {"INBOX": [_msg(1), _msg(2, size=300_000), _msg(3)]})
    cfg = pop3_cfg(tmp_path, pair)
    pwf = password_file(tmp_path, pair.users[A].old_password)
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", pwf)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "skipped message: folder=INBOX (pop3)" in r.stdout and "POP3 UIDL" in r.stdout, r.stdout
    assert len(dst_box(pair)) == 2
    rep = ctl("--config", cfg, "report", A)
    assert "skipped message: folder=INBOX (pop3)" in rep.stdout
    r2 = ctl("--config", cfg, "sync", A, "--add", "--password-file", pwf)     # no retry, no duplicate
    assert r2.returncode == 3 and len(dst_box(pair)) == 2
    assert "copied 0" in r2.stdout


# crashes between the journal, APPEND and the commit: tests/test_writer.py, for both engines


def test_kill_9_mid_pass_then_rerun_gives_exactly_one_copy(dovecot_pair, tmp_path):
    pair = dovecot_pair
    pw = pair.users[A].old_password
    msgs = [Msg(make_message(i, size=2000 + (i % 7) * 3000, msgid=(i % 5 != 0)), (), _date(i)) for i in range(1200)]
    msgs += msgs[:5]   # duplicates: matching is by multiset
    seed(*pair.source_account(A), {"INBOX": msgs})
    bare_login(pair.source.pop3_port, A, pw)
    before = maildir_state(pair.source.maildir(A))
    cfg = pop3_cfg(tmp_path, pair, sync={"batch_messages": 7})
    pwf = password_file(tmp_path, pw)
    kills = 0
    for delay in (0.5, 0.25, 0.9, 0.4):
        p = ctl_popen("--config", cfg, "sync", A, "--add", "--password-file", pwf, "--progress", "none")
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", pwf, "--progress", "none")
    assert r.returncode == 0, r.stderr
    assert dst_box(pair) == src_inbox(pair)
    assert inflight_count(tmp_path) == 0
    # killed sessions (no RSET, no QUIT) changed nothing either: TOP, never RETR, so no \\Seen to store
    assert maildir_state(pair.source.maildir(A)) == before
    assert_no_retr_no_dele(pair.source.log_path)


# ---------------------------------------------------------------- a server without UIDL

class FakePop3:
    """A tiny POP3 server (USER/PASS, STAT, LIST, RETR, RSET, NOOP, QUIT; UIDL refused) in a thread."""

    def __init__(self, user: str, password: str, messages: list[bytes]):
        self.user, self.password = user, password
        self.messages = list(messages)
        self.commands: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        msgs = list(self.messages)   # the maildrop as of this session
        f = conn.makefile("rb")

        def send(b: bytes) -> None:
            conn.sendall(b)

        send(b"+OK fake ready\r\n")
        authed = user = None
        try:
            for line in f:
                cmd, _, arg = line.decode().strip().partition(" ")
                cmd = cmd.upper()
                self.commands.append(cmd)
                if cmd == "CAPA":
                    send(b"+OK\r\nUSER\r\nTOP\r\n.\r\n")
                elif cmd == "USER":
                    user = arg
                    send(b"+OK\r\n")
                elif cmd == "PASS":
                    authed = user == self.user and arg == self.password
                    send(b"+OK logged in\r\n" if authed else b"-ERR [AUTH] bad\r\n")
                elif not authed and cmd != "QUIT":
                    send(b"-ERR log in first\r\n")
                elif cmd == "STAT":
                    send(f"+OK {len(msgs)} {sum(map(len, msgs))}\r\n".encode())
                elif cmd == "LIST":
                    send(b"+OK\r\n" + b"".join(f"{i + 1} {len(m)}\r\n".encode() for i, m in enumerate(msgs))
                         + b".\r\n")
                elif cmd == "RETR":
                    m = msgs[int(arg) - 1]
                    body = b"".join(b"." + ln if ln.startswith(b".") else ln for ln in m.splitlines(True))
                    send(b"+OK\r\n" + body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
                elif cmd in ("RSET", "NOOP"):
                    send(b"+OK\r\n")
                elif cmd == "QUIT":
                    send(b"+OK bye\r\n")
                    break
                else:  # UIDL, DELE, TOP, ...: refused
                    send(b"-ERR unknown command\r\n")
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture
def fake_pop3():
    servers = []

    def make(messages):
        s = FakePop3(A, "fake-pw", messages)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_server_without_uidl_fails_with_a_clear_error(dovecot_pair, tmp_path, fake_pop3):
    fake = fake_pop3([make_message(i) for i in range(3)])
    cfg = pop3_cfg(tmp_path, dovecot_pair, port=fake.port)
    res = sync_once(cfg, A, "fake-pw")
    assert res.error_kind == "ProtocolError" and not res.complete
    assert "POP3 server has no UIDL" in res.error
    assert "set source.pop3_no_uidl: fingerprint" in res.error
    assert res.copied == 0 and dst_box(dovecot_pair) == []
    assert "DELE" not in fake.commands


def test_no_uidl_fallback_matches_by_content(dovecot_pair, tmp_path, fake_pop3):
    pair = dovecot_pair
    msgs = [make_message(i) for i in range(5)] + [make_message(50, msgid=False)] * 2
    fake = fake_pop3(msgs)
    cfg = pop3_cfg(tmp_path, pair, port=fake.port, sync={"batch_messages": 3})
    res = sync_once(cfg, A, "fake-pw", pop3_fallback=True)
    assert res.complete and res.copied == 7, res.error
    want = sorted(hashlib.sha256(m).hexdigest() for m in msgs)
    assert sorted(sha for sha, _, _ in dst_box(pair)) == want
    again = sync_once(cfg, A, "fake-pw", pop3_fallback=True)
    assert again.complete and again.copied == 0 and again.present == 7
    # one more copy of a message already there, and a new one: both copied once
    fake.messages += [make_message(50, msgid=False), make_message(60)]
    third = sync_once(cfg, A, "fake-pw", pop3_fallback=True)
    assert third.complete and third.copied == 2 and third.present == 7
    want = sorted(hashlib.sha256(m).hexdigest() for m in fake.messages)
    assert sorted(sha for sha, _, _ in dst_box(pair)) == want
    assert all(u is None for u, _, _ in pop3_rows(tmp_path))
    # the fake refuses TOP: RETR instead, and RSET before QUIT so that no \\Seen would be stored
    assert "DELE" not in fake.commands and {"TOP", "RETR", "RSET"} <= set(fake.commands)


def test_fallback_rows_are_claimed_by_uidl_later(dovecot_pair, tmp_path, fake_pop3):
    """Copied by content from a server without UIDL, then the same mail served with UIDLs: nothing twice."""
    pair = dovecot_pair
    pw = pair.users[A].old_password
    msgs = [make_message(i, date=_date(i)) for i in range(4)]
    seed(*pair.source_account(A), {"INBOX": [Msg(m, (), _date(i)) for i, m in enumerate(msgs)]})
    fake = fake_pop3(msgs[:3])
    res = sync_once(pop3_cfg(tmp_path, pair, port=fake.port), A, "fake-pw", pop3_fallback=True)
    assert res.copied == 3
    res = sync_once(pop3_cfg(tmp_path, pair), A, pw)   # Dovecot, with UIDL
    assert res.complete and res.copied == 1 and res.present == 3
    assert dst_box(pair) == src_inbox(pair)
    assert all(u is not None for u, _, _ in pop3_rows(tmp_path))


def test_renumbered_uidls_are_matched_by_content_not_copied_again(dovecot_pair, tmp_path):
    """Dovecot's UIDLs change with the mailbox's UIDVALIDITY (or pop3_uidl_format): re-identify, don't duplicate."""
    pair = dovecot_pair
    pw = pair.users[A].old_password
    seed(*pair.source_account(A), {"INBOX": [_msg(i) for i in range(4)] + [_msg(9, msgid=False)] * 2})
    cfg = pop3_cfg(tmp_path, pair)
    assert sync_once(cfg, A, pw).copied == 6
    old = {u for u, _, _ in pop3_rows(tmp_path)}
    pair.source.stop()
    pair.source.extra_conf = "pop3_uidl_format = %g"
    pair.source.start()
    seed(*pair.source_account(A), {"INBOX": [_msg(20)]})
    res = sync_once(cfg, A, pw)
    assert res.complete and res.copied == 1 and res.present == 6, res.folders
    assert dst_box(pair) == src_inbox(pair)
    new = {u for u, _, _ in pop3_rows(tmp_path)}
    assert len(new) == 7 and not (new & old)   # every row now carries the server's current UIDL


def test_a_lost_source_connection_is_retried_and_the_pass_resumes(dovecot_pair, tmp_path, monkeypatch):
    from mailsyncd.errors import ConnectionLost
    from mailsyncd.sync import pop3
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [_msg(i) for i in range(9)]})
    cfg = pop3_cfg(tmp_path, pair, sync={"batch_messages": 3, "retry_backoff": 0.01})
    real = pop3.Pop3Source.fetch_many
    calls = {"n": 0}

    def flaky(self, wanted):
        calls["n"] += 1
        if calls["n"] == 2:
            self._p.sock.close()   # the connection drops under the session
            raise ConnectionLost("source: connection lost (test)")
        return real(self, wanted)

    monkeypatch.setattr(pop3.Pop3Source, "fetch_many", flaky)
    res = sync_once(cfg, A, pair.users[A].old_password)
    assert res.complete and res.copied == 9 and res.present == 0, (res.error, res.folders)
    assert dst_box(pair) == src_inbox(pair)


def _sessions(log_path: str) -> list[str]:
    with open(log_path, errors="replace") as f:
        return [ln for ln in f if "pop3(" in ln and "Disconnected" in ln]


def test_a_message_over_max_message_size_is_skipped_once_and_reported(dovecot_pair, tmp_path, caplog):
    """Never read, recorded as skipped by its UIDL: the next pass neither reads nor retries it."""
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [_msg(1), _msg(2, size=300_000), _msg(3)]})
    cfg = pop3_cfg(tmp_path, pair, sync={"max_message_size": "128KiB"})
    pw = pair.users[A].old_password
    with caplog.at_level("INFO"):
        res = sync_once(cfg, A, pw)
    assert res.error is None and res.copied == 2 and res.skipped == 1 and not res.complete, res.folders
    assert res.folders[0].error is None
    assert len(dst_box(pair)) == 2
    skips = [r for r in caplog.records if "event=message_skipped" in r.getMessage()]
    assert len(skips) == 1 and "too large: LIST says" in skips[0].getMessage()
    (uidl, tuid, why), = [r for r in pop3_rows(tmp_path) if r[2] is not None]
    assert tuid is None and uidl and "the limit is 131072" in why and f"POP3 UIDL {uidl}" in why
    # only its headers were read (TOP n 0), never the body
    first = _sessions(pair.source.log_path)
    assert first and "retr=0/0," in first[-1]
    assert int(first[-1].split("top=")[1].split("/")[1].split(",")[0]) < 300_000

    caplog.clear()
    with caplog.at_level("INFO"):
        again = sync_once(cfg, A, pw)
    assert again.error is None and again.copied == 0 and again.present == 2 and again.skipped == 1
    assert not [r for r in caplog.records if "event=message_skipped" in r.getMessage()]
    last = _sessions(pair.source.log_path)[len(first):]
    assert last and all("top=0/0," in ln and "retr=0/0," in ln for ln in last), last   # not touched
    assert len(pop3_rows(tmp_path)) == 3

    rep = ctl("--config", cfg, "report", A)
    assert rep.returncode == 0, rep.stderr
    lines = [ln for ln in rep.stdout.splitlines() if ln.startswith("skipped message:")]
    assert len(lines) == 1 and "too large: LIST says" in lines[0] and "the limit is 131072" in lines[0], rep.stdout


def test_over_size_without_uidl_is_keyed_by_size_and_headers(dovecot_pair, tmp_path, fake_pop3):
    big = make_message(2, size=300_000)
    fake = fake_pop3([make_message(1), big, make_message(3)])
    cfg = pop3_cfg(tmp_path, dovecot_pair, port=fake.port, sync={"max_message_size": "128KiB"})
    res = sync_once(cfg, A, "fake-pw", pop3_fallback=True)
    assert res.error is None and res.copied == 2 and res.skipped == 1, res.folders
    again = sync_once(cfg, A, "fake-pw", pop3_fallback=True)
    assert again.error is None and again.copied == 0 and again.present == 2 and again.skipped == 1
    assert [s for _, _, s in pop3_rows(tmp_path)].count(None) == 2 and len(pop3_rows(tmp_path)) == 3


def test_pop3_commands_pass_the_choke_point(dovecot_pair):
    from mailsyncd.errors import UnsafeCommand
    from mailsyncd.net import popguard
    p = popguard.POP3("127.0.0.1", dovecot_pair.source.pop3_port, timeout=10)
    try:
        with pytest.raises(UnsafeCommand):
            p.user("alice@example.com\r\nDELE 1")
        p.user(A)
        p.pass_(dovecot_pair.users[A].old_password)
    finally:
        p.quit()
