"""The README's first command: the demo runs the real daemon end to end."""

import imaplib
import os
import re
import signal
import socket
import ssl
import time

import pytest
from syncenv import ctl


@pytest.mark.dovecot
@pytest.mark.timeout(300)
def test_demo_logs_in_with_the_old_password_and_migrates():
    r = ctl("demo", "--messages", "80")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "logs in with the OLD password" in r.stdout
    assert "IDENTICAL: 80 messages in 6 folders" in r.stdout
    assert "progress messages=80/80 (100%)" in r.stderr
    assert "Traceback" not in r.stderr


def _processes_mentioning(text: str) -> list[str]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmd:
            out.append(f"{pid}: {cmd}")
    return out


@pytest.mark.dovecot
@pytest.mark.timeout(300)
def test_demo_serve_runs_until_ctrl_c_and_a_client_logs_in_as_printed(tmp_path):
    from syncenv import ctl_popen
    out_path = tmp_path / "demo.out"
    with open(out_path, "wb") as out, open(tmp_path / "demo.err", "wb") as err:
        p = ctl_popen("demo", "--serve", "--messages", "20", stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 240
        while "Press Ctrl-C to stop everything." not in out_path.read_text():
            assert p.poll() is None, out_path.read_text() + (tmp_path / "demo.err").read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.2)
        text = out_path.read_text()
        port = int(re.search(r"IMAP server:\s+127\.0\.0\.1\s+port (\d+)\s+security: SSL/TLS", text).group(1))
        user = re.search(r"user name:\s+(\S+)", text).group(1)
        password = re.search(r"password:\s+(\S+)", text).group(1)
        cert = re.search(r"accept it when the client asks, or trust (\S+)", text).group(1)
        root = re.search(r"Config written to (\S+)/mailsyncd\.yaml", text).group(1)
        time.sleep(2)                      # still serving after the migration is done
        c = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ssl.create_default_context(cafile=cert))
        assert c.login(user, password)[0] == "OK"
        typ, data = c.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) > 0
        c.logout()
        assert _processes_mentioning(root), "no server of the demo found running"

        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 0, (tmp_path / "demo.err").read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "stopping mailsyncd and both Dovecot servers" in out_path.read_text()
    assert "Traceback" not in (tmp_path / "demo.err").read_text()
    assert _processes_mentioning(root) == []
    assert not os.path.exists(root)        # without --keep: nothing left behind
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.dovecot
@pytest.mark.timeout(300)
def test_demo_keep_says_the_servers_are_stopped():
    r = ctl("demo", "--keep", "--messages", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    root = re.search(r"Kept (\S+)\. The servers are STOPPED now", r.stdout).group(1)
    try:
        assert os.path.exists(os.path.join(root, "mailsyncd.yaml"))
        assert _processes_mentioning(root) == []
    finally:
        import shutil
        shutil.rmtree(root, ignore_errors=True)
