"""The folder you open goes next (issue 14, item 3), with real clients through the front door and a real
Dovecot pair.  ``pass_interval`` is a day, so after the first pass only the focus can copy anything."""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import ssl
import subprocess
import time

import pytest
from faultproxy import FaultProxy
from proxyenv import Daemon
from seed import Msg, make_message, seed, snapshot
from test_frontdoor import A, Raw, old_pw

pytestmark = pytest.mark.timeout(240)
DAY = {"pass_interval": 86400}


@contextlib.contextmanager
def _migrated(tmp_path, pair, *, source=None, frontdoor=None, cert=None):
    """A daemon whose first pass (after alice's first login) is done."""
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(3)]})
    # sync.watch off: folders seeded after the first pass are copied only because the client opens them
    # (a watch would see them arrive and copy them first: tests/test_watch.py)
    with Daemon(tmp_path, pair, cert, scheduler=DAY, source=source, frontdoor=frontdoor,
                sync={"watch": "off"}) as d:
        if cert:
            c = imaplib.IMAP4_SSL("127.0.0.1", d.imaps_port, ssl_context=ssl._create_unverified_context())
        else:
            c = imaplib.IMAP4("127.0.0.1", d.imap_port)
        c.login(A, old_pw(pair))
        c.logout()
        d.wait_log("event=pass_done account=alice@example.com ok=True", timeout=60)
        yield d


def _login(d, pair) -> Raw:
    r = Raw(d.imap_port)
    assert r.cmd(b"a", b"LOGIN " + A.encode() + b" " + old_pw(pair).encode())[-1].startswith(b"a OK")
    return r


def _exists(lines: list[bytes]) -> int:
    return int(next(re.match(rb"\* (\d+) EXISTS", ln).group(1) for ln in lines if re.match(rb"\* \d+ EXISTS", ln)))


def _timings(lines: list[bytes]) -> list[bytes]:
    # Dovecot's tagged OK says how long the command took: the one thing two runs may differ in
    return [re.sub(rb" \(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)\.", b"", ln) for ln in lines]


def test_a_small_incomplete_folder_opens_complete_and_nothing_else_waits(tmp_path, dovecot_pair):
    pair = dovecot_pair
    with _migrated(tmp_path, pair) as d:
        # new folders at the source since the (only) pass: 300 messages each, nowhere on the target yet
        seed(*pair.source_account(A), {"Projects": [Msg(make_message(100 + i)) for i in range(300)],
                                       "Later": [Msg(make_message(1000 + i)) for i in range(300)]})
        c = imaplib.IMAP4("127.0.0.1", d.imap_port)
        c.login(A, old_pw(pair))
        t0 = time.monotonic()
        typ, data = c.select("INBOX")                  # complete: goes through untouched
        inbox_s = time.monotonic() - t0
        assert typ == "OK" and int(data[0]) == 3
        t0 = time.monotonic()
        typ, data = c.select("Projects", readonly=True)   # EXAMINE
        held_s = time.monotonic() - t0
        assert typ == "OK" and int(data[0]) == 300, (typ, data)
        assert c.untagged_responses.get("ALERT") is None
        c.logout()
        assert snapshot(*pair.source_account(A))["Projects"] == snapshot(*pair.target_account(A))["Projects"]
        log = d.log()
        assert "folder='INBOX' verb=SELECT left=None verdict=pass held=0.0" in log
        assert re.search(r"folder='Projects' verb=EXAMINE left=300 verdict=hold held=\S+ why='copy done'", log), log
        assert inbox_s < 1.0 and held_s < 3.0

        # pipelined behind the held SELECT: order kept, and every response byte what the target itself says
        r = _login(d, pair)
        pipeline = (b"b SELECT Later (CONDSTORE)\r\nc UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE)\r\n"
                    b"d EXAMINE {5}\r\nINBOX\r\ne NOOP\r\n")
        r.send(pipeline[:-10])
        r.send(pipeline[-10:])
        got = r.until(b"b") + r.until(b"c") + r.until(b"d") + r.until(b"e")
        r.close()
        assert _exists(got) == 300
        direct = Raw(pair.target.imap_port)
        host, port, user, pw = pair.target_master_account(A)
        assert direct.cmd(b"a", f'LOGIN "{user}" "{pw}"'.encode())[-1].startswith(b"a OK")
        direct.send(b"b SELECT Later (CONDSTORE)\r\nc UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE)\r\n")
        want = direct.until(b"b") + direct.until(b"c")
        direct.send(b"d EXAMINE {5}\r\n")
        want.append(direct.line())                   # the literal's "+ OK", which the pipeline had too
        assert want[-1].startswith(b"+")
        direct.send(b"INBOX\r\ne NOOP\r\n")
        want += direct.until(b"d") + direct.until(b"e")
        direct.close()
        assert _timings(got) == _timings(want)
        # no full pass ran, and a complete folder (INBOX) cost no pass: one focused pass per opened folder
        d.wait_log("folders=['Later'] copied=300")
        assert d.log().count("event=pass_start account=alice@example.com host") == 3
        assert d.log().count("focused=yes") == 2


def test_a_large_incomplete_folder_opens_at_once_with_one_alert_before_the_reply(tmp_path, dovecot_pair):
    pair = dovecot_pair
    with _migrated(tmp_path, pair, frontdoor={"copy_on_open": 100}) as d:
        seed(*pair.source_account(A), {"Big": [Msg(make_message(100 + i)) for i in range(300)]})
        seed(*pair.target_account(A), {"Big": []})     # the user's client sees it (LIST) and opens it
        r = _login(d, pair)
        t0 = time.monotonic()
        lines = r.cmd(b"b", b"SELECT Big")
        took = time.monotonic() - t0
        alerts = [i for i, ln in enumerate(lines) if b"[ALERT]" in ln]
        assert len(alerts) == 1 and lines[-1].startswith(b"b OK"), lines
        assert lines[alerts[0]] == b"* OK [ALERT] Mailbox migration in progress: 300 older messages of this " \
                                   b"folder are still arriving.", lines
        assert took < 2.0, took
        # the focus went on copying it: the folder fills without waiting for the next pass
        d.wait_log("event=focus_done account=alice@example.com folder='Big' state=done", timeout=60)
        assert _exists(r.cmd(b"c", b"SELECT Big")) == 300
        assert not [ln for ln in r.cmd(b"d", b"NOOP") if b"[ALERT]" in ln]
        r.close()


def test_a_stalled_source_never_holds_the_select_past_the_deadline(tmp_path, dovecot_pair):
    pair = dovecot_pair
    with FaultProxy(pair.source.imap_port, "source") as proxy:
        with _migrated(tmp_path, pair, source={"port": proxy.port, "timeout": 5},
                       frontdoor={"copy_on_open_deadline": 1.0}) as d:
            seed(*pair.source_account(A), {"Stuck": [Msg(make_message(100 + i)) for i in range(5)]})
            seed(*pair.target_account(A), {"Stuck": []})
            proxy.hang(8)                 # the old server accepts, then says nothing at all
            r = _login(d, pair)           # the password was checked a moment ago: the source is not asked
            t0 = time.monotonic()
            lines = r.cmd(b"b", b"SELECT Stuck")
            took = time.monotonic() - t0
            r.close()
            assert lines[-1].startswith(b"b OK") and _exists(lines) == 0
            assert 1.0 <= took < 1.6, took           # it WAS held, and for no longer than the deadline
            assert re.search(r"folder='Stuck' verb=SELECT left=None verdict=wait held=1\.\d+s why='deadline'",
                             d.log()), d.log()[-3000:]


def test_mbsync_gets_the_whole_of_a_folder_still_being_copied(tmp_path, dovecot_pair, test_cert):
    pair = dovecot_pair
    with _migrated(tmp_path, pair, cert=test_cert) as d:
        seed(*pair.source_account(A), {"Projects": [Msg(make_message(100 + i)) for i in range(300)]})
        seed(*pair.target_account(A), {"Projects": []})     # created, not yet filled
        local = tmp_path / "mbsync-mail"
        local.mkdir()
        pwfile = tmp_path / "mbsync.pw"
        pwfile.write_text(old_pw(pair))
        rc = tmp_path / "mbsyncrc"
        rc.write_text(f"""
IMAPAccount proxy
Host localhost
Port {d.imaps_port}
User {A}
PassCmd "cat {pwfile}"
SSLType IMAPS
CertificateFile {d.cert[0]}

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
        got = sum(len(os.listdir(local / "Projects" / sub)) for sub in ("cur", "new"))
        assert got == 300, d.log()[-3000:]
        assert re.search(r"folder='Projects' verb=SELECT left=\d+ verdict=hold held=\S+ why='copy done'", d.log())


def test_while_the_first_pass_runs_an_opened_folder_gets_a_worker_of_its_own(tmp_path, dovecot_pair):
    pair = dovecot_pair
    seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(1500)],
                                   "Work": [Msg(make_message(5000 + i)) for i in range(50)]})
    # one connection and one message per batch: the pass is busy with INBOX (the biggest) for a while
    with Daemon(tmp_path, pair, scheduler=DAY, sync={"batch_messages": 1, "connections": 1},
                source={"max_connections": 3}) as d:
        c = imaplib.IMAP4("127.0.0.1", d.imap_port)
        c.login(A, old_pw(pair))
        d.wait_log("event=pass_start account=alice@example.com")
        time.sleep(0.5)                                    # the pass has planned and is in INBOX
        t0 = time.monotonic()
        typ, data = c.select("Work")
        took = time.monotonic() - t0
        c.logout()
        assert typ == "OK" and int(data[0]) == 50, (typ, data, d.log()[-3000:])
        assert took < 3.0
        log = d.log()
        assert "event=focus_worker account=alice@example.com" in log
        assert "event=pass_done account=alice@example.com" not in log     # INBOX is still being copied
        d.wait_log("event=pass_done account=alice@example.com ok=True", timeout=180)
        assert snapshot(*pair.source_account(A)) == snapshot(*pair.target_account(A))



def test_mail_arriving_while_a_pass_copies_the_folder_is_in_it_when_opened_after(tmp_path, dovecot_pair):
    # sync.watch off: with the default (idle) the watch heard the 200 seeded messages and copied Projects
    # before the client opened it (the hook below then never fired: 3 failures in 6 runs on a loaded
    # machine); this test is about the open, not the watch.  A pass copies Projects up to its snapshot
    # (LIST-STATUS: 200); 40 more
    # arrive meanwhile and a client opens Projects then: it must get all 240, not be answered "copy done" by
    # the copy from the older snapshot.  The source's answers are held mid-copy (a hook in the proxy), so
    # the arrival and the open fall inside the copy whatever the machine's speed.
    import threading
    pair = dovecot_pair
    with FaultProxy(pair.source.imap_port, "source") as proxy:
        seed(*pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(3)]})
        with Daemon(tmp_path, pair, scheduler=DAY, source={"port": proxy.port}, sync={"watch": "off"},
                    frontdoor={"copy_on_open": 10000, "copy_on_open_deadline": 30}) as d:
            c = imaplib.IMAP4("127.0.0.1", d.imap_port)
            c.login(A, old_pw(pair))
            c.logout()
            d.wait_log("event=pass_done account=alice@example.com ok=True", timeout=60)
            seed(*pair.source_account(A), {"Projects": [Msg(make_message(100 + i)) for i in range(200)]})
            opened: list = []

            def open_it() -> None:
                c2 = imaplib.IMAP4("127.0.0.1", d.imap_port)
                c2.login(A, old_pw(pair))
                opened.append(c2.select("Projects", readonly=True))
                c2.logout()

            second = threading.Thread(target=open_it, daemon=True)

            def arrive() -> None:        # in the proxy's thread: the copy waits until this returns
                seed(*pair.source_account(A), {"Projects": [Msg(make_message(1000 + i)) for i in range(40)]})
                second.start()
                deadline = time.monotonic() + 20
                while d.log().count("event=focus account=alice@example.com folder='Projects'") < 2:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            proxy.at_literal_byte(proxy.literal_bytes + 20000, arrive)   # about a third of Projects
            first = imaplib.IMAP4("127.0.0.1", d.imap_port)
            first.login(A, old_pw(pair))
            typ, data = first.select("Projects", readonly=True)          # starts the copy of Projects
            first.logout()
            assert typ == "OK" and int(data[0]) >= 200, (typ, data)
            second.join(40)
            assert opened and opened[0][0] == "OK" and int(opened[0][1][0]) == 240, (opened, d.log()[-3000:])
            assert snapshot(*pair.source_account(A))["Projects"] == snapshot(*pair.target_account(A))["Projects"]
