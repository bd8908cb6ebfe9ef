"""A hostile old server (tests/hostileserver.py) against a real Dovecot target, through `mailsyncctl sync`.

Each scenario: nothing the source sends acts on the target, memory stays bounded, the
bad folder fails cleanly with the server's words, no traceback, and the others are copied.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from hostileserver import BAD_WORDS, Box, HostileServer
from seed import Msg, connect, make_message, seed, snapshot
from syncenv import REPO, ctl, make_config, password_file

A = "alice@example.com"
D = dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
pytestmark = pytest.mark.timeout(180)


def _raw(i: int) -> bytes:
    return make_message(100 + i, size=2000)


def _source(scenario_folder: str, how: str) -> HostileServer:
    folders = {"INBOX": Box([(1, _raw(1), (b"\\Seen",)), (2, _raw(2), ()), (3, _raw(3), (b"\\Flagged",))]),
               "Evil": Box([(1, _raw(4), ()), (2, _raw(5), (b"\\Seen",)), (3, _raw(6), ())])}
    return HostileServer(A, "old-pw", folders, misbehave={(scenario_folder, 2): how})


def _run(tmp_path, pair, srv: HostileServer):
    cfg = make_config(tmp_path, pair, source={"port": srv.port}, sync={"retries": 1, "retry_backoff": 0.01})
    r = ctl("--config", cfg, "sync", A, "--add", "--password-file", password_file(tmp_path, "old-pw"),
            "--progress", "none", timeout=150)
    rep = ctl("--config", cfg, "report", A)
    return r, rep


def _target(pair) -> dict:
    return snapshot(*pair.target_account(A))


def _no_traceback(*outs: str) -> None:
    for out in outs:
        assert "Traceback" not in out, out


def test_crlf_in_a_flag_literal_does_not_reach_the_target(dovecot_pair, tmp_path):
    pair = dovecot_pair
    mine = [Msg(make_message(900 + i), ("\\Flagged",), D) for i in range(2)]   # the user's mail on the new server
    seed(*pair.target_account(A), {"INBOX": mine})
    before = _target(pair)["INBOX"]
    with _source("INBOX", "crlf_flag") as srv:
        r, rep = _run(tmp_path, pair, srv)
    after = _target(pair)
    assert "PWNED" not in after
    assert after["INBOX"][:2] == before, "the user's existing mail on the target changed"
    _no_traceback(r.stdout + r.stderr, rep.stdout + rep.stderr)
    assert len(after["INBOX"]) == 5 and len(after["Evil"]) == 3, r.stdout + r.stderr
    assert all(flags == ("\\Seen",) for _, flags, _ in after["INBOX"][2:3])   # the hostile one: \Seen only
    assert r.returncode == 0, r.stdout + r.stderr
    # one log line naming account, folder and UID, with the flag escaped (no raw CR/LF in the log)
    lines = [ln for ln in r.stderr.splitlines() if "event=flag_dropped" in ln]
    assert len(lines) == 1 and "user=alice@example.com" in lines[0] and "folder=INBOX" in lines[0], r.stderr
    assert "uid=2" in lines[0] and "\\r\\nZ1 UID STORE" in lines[0]
    assert "\r" not in r.stderr


# Linux counts in a child's peak RSS the memory of the process it was (v)forked from, up to its exec:
# measured straight from pytest (hundreds of MB after a long run) that says nothing about mailsyncctl.
# So a small Python starts mailsyncctl and reports that grandchild's own peak.
_RSS_WRAPPER = """import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(p.pid, 0)
sys.stderr.write(f"\\npeak-rss-kib={usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _peak_rss(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``mailsyncctl ARGS``; its result and its own peak RSS in KiB."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-m", "mailsyncd.cli.ctl", *args],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    head, _, tail = r.stderr.rpartition("\npeak-rss-kib=")
    r.stderr = head
    return r, int(tail.strip())


def test_oversized_literal_is_skipped_unread_and_the_folder_goes_on(dovecot_pair, tmp_path):
    with _source("Evil", "oversized") as srv:
        cfg = make_config(tmp_path, dovecot_pair, source={"port": srv.port},
                          sync={"retries": 1, "retry_backoff": 0.01})
        r, rss_kib = _peak_rss(tmp_path, "--config", cfg, "sync", A, "--add", "--password-file",
                               password_file(tmp_path, "old-pw"), "--progress", "none")
        rep = ctl("--config", cfg, "report", A)
        rss_mb = rss_kib / 1024
        print(f"mailsyncctl sync max RSS: {rss_mb:.0f} MB; streamed before the client went away: {srv.streamed}")
        assert rss_mb < 200, rss_mb
        # the client closed with the literal unread: the stream broke long before 300 MB
        assert srv.stream_stopped and srv.stream_stopped[0].startswith("client went away"), srv.stream_stopped
        assert srv.streamed[0] < 64 * 1024**2, srv.streamed
    _no_traceback(r.stdout + r.stderr, rep.stdout + rep.stderr)
    assert r.returncode == 3, r.stdout + r.stderr    # incomplete: one message skipped
    skipped = [ln for ln in rep.stdout.splitlines() if ln.startswith("skipped message:")]
    assert len(skipped) == 1 and "folder=Evil uid=2" in skipped[0], rep.stdout
    assert "314572800" in skipped[0] and "RFC822.SIZE said 86" in skipped[0], skipped[0]
    after = _target(dovecot_pair)
    assert len(after["Evil"]) == 2 and len(after["INBOX"]) == 3


@pytest.mark.parametrize("how, words", [
    ("unbalanced", "unparsable FETCH response"),
    ("bad", BAD_WORDS.decode()),
    ("long_line", "got more than 1000000 bytes"),
    ("drop", "connection lost"),
])
def test_malformed_answer_fails_only_that_folder_with_the_servers_words(dovecot_pair, tmp_path, how, words):
    with _source("Evil", how) as srv:
        r, rep = _run(tmp_path, dovecot_pair, srv)
    _no_traceback(r.stdout + r.stderr, rep.stdout + rep.stderr)
    assert r.returncode == 3, r.stdout + r.stderr
    evil = [ln for ln in rep.stdout.splitlines() if ln.lstrip().startswith("Evil")]
    assert evil and words in rep.stdout, rep.stdout
    assert any("folder='Evil'" in ln and "event=folder_failed" in ln and words in ln
               for ln in r.stderr.splitlines()), r.stderr
    after = _target(dovecot_pair)
    assert len(after["INBOX"]) == 3


def test_garbage_status_fails_only_that_folder(dovecot_pair, tmp_path):
    with _source("INBOX", "none") as srv:
        srv.misbehave[("Evil", 0)] = "bad_status"
        r, rep = _run(tmp_path, dovecot_pair, srv)
    _no_traceback(r.stdout + r.stderr, rep.stdout + rep.stderr)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "event=status_refused folder='Evil'" in r.stderr and "unparsable STATUS answer" in r.stderr
    assert "source refused STATUS" in rep.stdout
    assert len(_target(dovecot_pair)["INBOX"]) == 3


def test_folder_names_with_control_characters_are_refused(dovecot_pair, tmp_path):
    with _source("INBOX", "none") as srv:
        srv.evil_names = [b"x\r\nZ4 CREATE PWNED2\r\nY", b"bell\x07\x00nul", b"utf7&;-bad", b"nul&AAA-"]
        r, rep = _run(tmp_path, dovecot_pair, srv)
    _no_traceback(r.stdout + r.stderr, rep.stdout + rep.stderr)
    for out in (r.stdout, r.stderr, rep.stdout):
        assert "\r" not in out and "\x07" not in out and "\x00" not in out
    assert r.returncode == 0, r.stdout + r.stderr
    after = _target(dovecot_pair)
    assert set(after) == {"INBOX", "Evil"}
    assert r.stderr.count("event=folder_name_refused") == 4
    # listed by the report as folders not synced: the raw name escaped, and why
    crlf, bad = "refused: its name holds CR, LF or NUL", "refused: its name is not valid modified UTF-7"
    want = {f"not synced: x\\r\\nZ4 CREATE PWNED2\\r\\nY: {crlf}", f"not synced: bell\\x07\\x00nul: {crlf}",
            f"not synced: utf7&;-bad: {bad}", f"not synced: nul&AAA-: {crlf}"}
    for out in (r.stdout, rep.stdout):
        assert {ln for ln in out.splitlines() if ln.startswith("not synced:")} == want, out


def test_the_source_is_only_examined(dovecot_pair, tmp_path):
    """The fake answers EXAMINE and SELECT alike: check that the engine only ever asked for EXAMINE."""
    with _source("INBOX", "none") as srv:
        seen: list[bytes] = []
        orig = srv._fetch

        def spy(conn, tag, args, folder):
            seen.append(args)
            return orig(conn, tag, args, folder)
        srv._fetch = spy
        r, _ = _run(tmp_path, dovecot_pair, srv)
    assert r.returncode == 0, r.stdout + r.stderr
    assert seen and all(b"BODY[]" not in a.upper() or b"BODY.PEEK[]" in a.upper() for a in seen)


def test_choke_point_refuses_crlf_in_any_argument(dovecot_pair):
    """Straight at the guarded client: a CRLF argument never reaches a real server, the session stays usable."""
    from mailsyncd.errors import UnsafeCommand
    from mailsyncd.net.imap import connect as open_conn
    from mailsyncd.config import Endpoint
    ep = Endpoint(host="127.0.0.1", port=dovecot_pair.target.imap_port, security="none", protocol="imap",
                  dangerously_allow_cleartext=True)
    c = open_conn(ep, role="target")
    try:
        with pytest.raises(UnsafeCommand):
            c.login("alice\r\nZ3 CREATE PWNED", "x")
        c.login(*dovecot_pair.target_account(A)[2:])
        c.select_folder("INBOX")
        # (folder names through imapclient are modified UTF-7: control characters are encoded, not sent)
        for attempt in (lambda: c._imap._simple_command("CREATE", 'x\r\nZ3 CREATE "PWNED"'),
                        lambda: c._raw_command(b"CREATE", [b"x\r\nZ3 CREATE PWNED"], uid=False),
                        lambda: c.append("INBOX", b"Subject: x\r\n\r\nx\r\n", ["x\r\nZ3 CREATE PWNED"]),
                        lambda: c.multiappend("INBOX", [{"msg": b"S: x\r\n\r\nx\r\n", "flags": ["a\nb"]},
                                                        {"msg": b"S: y\r\n\r\ny\r\n"}]),
                        lambda: c.add_flags([1], ["y\r\nZ2 EXPUNGE"]),
                        lambda: c.id_({"name": "x\0y"})):
            with pytest.raises(UnsafeCommand):
                attempt()
        assert c.noop()[0] is not None      # still in sync with the server
        assert "PWNED" not in [n for _, _, n in c.list_folders()]
    finally:
        c.logout()
    with connect(*dovecot_pair.target_account(A)) as check:
        assert check.select_folder("INBOX")[b"EXISTS"] == 0
