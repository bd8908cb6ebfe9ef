"""Provider quirks end to end: the real daemon, a real Dovecot target, and

* a tiny fake source that refuses LOGIN with a provider's real words (Dovecot cannot change its
  refusal text): the front door's NO and the self-service page say which password is wanted, in
  the user's language, and only when the source's words asked for it;
* a real Dovecot source holding Gmail's label views: the `google` preset's skip_folders keeps
  them from being copied.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading

import pytest
from proxyenv import Daemon
from seed import Msg, make_message, seed, snapshot
from syncenv import make_config, sync_once
from test_selfservice import Web, web_daemon

pytestmark = pytest.mark.timeout(120)

QQ_URL = "http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256"
# password -> the NO text of the fake source (QQ Mail's words, see the qq preset in presets.yaml)
REFUSALS = {
    "web-password": f"Please using authorized code to login. More information at {QQ_URL}".encode(),
    "gbk-password": f"请使用授权码登录。详情请看: {QQ_URL}".encode("gbk"),
}
GENERIC = (b"Login fail. Account is abnormal, service is not open, password is incorrect, login frequency "
           b"limited, or system is busy.")


class FakeSource(socketserver.ThreadingTCPServer):
    """Greets, answers CAPABILITY and LOGOUT, refuses every LOGIN with the text its password selects."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.logins: list[str] = []
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        caps = b"IMAP4rev1 ID AUTH=PLAIN"
        self.wfile.write(b"* OK [CAPABILITY " + caps + b"] fake old provider ready\r\n")
        for line in self.rfile:
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            cmd, _, args = rest.partition(b" ")
            cmd = cmd.upper()
            if cmd == b"CAPABILITY":
                self.wfile.write(b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK done\r\n")
            elif cmd == b"LOGIN":
                user, password = (s.decode() for s in re.findall(rb'"((?:[^"\\]|\\.)*)"', args))
                self.server.logins.append(user)
                self.wfile.write(tag + b" NO " + REFUSALS.get(password, GENERIC) + b"\r\n")
            elif cmd == b"LOGOUT":
                self.wfile.write(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                return
            else:
                self.wfile.write(tag + b" BAD unknown command\r\n")


@pytest.fixture
def fake_qq():
    srv = FakeSource()
    yield srv
    srv.shutdown()
    srv.server_close()


def imap_login(port: int, user: str, password: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK")
        s.sendall(f'a1 LOGIN "{user}" "{password}"\r\n'.encode())
        while True:
            line = f.readline()
            assert line, "connection closed"
            if line.startswith(b"a1 "):
                return line.rstrip(b"\r\n")


def test_front_door_says_which_password_after_the_source_asked(tmp_path, dovecot_pair, fake_qq):
    source = {"host": "127.0.0.1", "port": fake_qq.port, "security": "none", "preset": "qq"}
    with Daemon(tmp_path, dovecot_pair, source=source) as d:
        hint = ("NO [AUTHENTICATIONFAILED] QQ Mail wants an authorization code (授权码), not the account "
                "password (https://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256). / "
                "QQ邮箱需要使用授权码登录，而不是邮箱密码。")
        assert imap_login(d.imap_port, "alice@example.com", "web-password").decode() == f"a1 {hint}"
        # the same words, sent in GBK
        assert imap_login(d.imap_port, "bob@example.com", "gbk-password").decode() == f"a1 {hint}"
        # the same wrong password again: the source is not asked, its words still hold
        assert imap_login(d.imap_port, "alice@example.com", "web-password").decode() == f"a1 {hint}"
        # a refusal that does not say why: the usual answer, nothing more
        assert imap_login(d.imap_port, "carol@example.com", "wrong") == \
            b"a1 NO [AUTHENTICATIONFAILED] Authentication failed."
        assert fake_qq.logins == ["alice@example.com", "bob@example.com", "carol@example.com"]
        log = d.log()
    assert re.search(r"event=login_failed ip=127\.0\.0\.1 user=alice@example\.com reason='wrong password at the "
                     r"source, which asks for an app password \(source 127\.0\.0\.1:\d+: login refused for "
                     r"alice@example\.com: Please using authorized code to login\..*\); hint: app_password'", log)
    assert re.search(r"user=bob@example\.com reason='wrong password at the source, which asks for an app "
                     r"password \(.*请使用授权码登录。.*\); hint: app_password'", log)
    assert re.search(r"user=alice@example\.com reason='same wrong password as a recent attempt \(source not "
                     r"asked\); hint: app_password'", log)
    carol = re.search(r"user=carol@example\.com reason='(.*)'", log).group(1)
    assert carol.startswith("wrong password or unknown user at the source") and "app_password" not in carol
    assert "web-password" not in log and "gbk-password" not in log


def test_self_service_page_says_it_in_the_users_language(tmp_path, dovecot_pair, fake_qq):
    source = {"host": "127.0.0.1", "port": fake_qq.port, "security": "none", "preset": "qq"}
    with web_daemon(tmp_path, dovecot_pair, source=source) as d:
        en = Web(d.http_port, accept_language="en-US,en;q=0.9").start("alice@example.com", "web-password")
        assert en.status == 200
        assert ("QQ Mail refused this password: it wants an authorization code (授权码) instead of your normal "
                "password. QQ Mail refuses the QQ password over IMAP/POP: use an authorization code") in en.text
        assert "The email address or password is not correct." not in en.text
        zh = Web(d.http_port, accept_language="zh-CN,zh;q=0.9").start("bob@example.com", "gbk-password")
        assert "QQ邮箱拒绝了这个密码：需要使用授权码登录，而不是邮箱密码。 QQ邮箱客户端登录不能使用QQ密码" in zh.text
        assert "https://service.mail.qq.com/cgi-bin/help?subtype=1&amp;&amp;id=28&amp;&amp;no=1001256" in zh.text
        # no app-password words from the source: the usual message
        plain = Web(d.http_port, accept_language="zh-CN").start("carol@example.com", "wrong")
        assert "邮箱地址或密码不正确。" in plain.text and "授权码" not in plain.text
        log = d.log()
    assert re.search(r"event=selfservice_failed ip=127\.0\.0\.1 user=alice@example\.com reason='wrong password "
                     r"at the source, which asks for an app password .*; hint: app_password'", log)
    assert "web-password" not in log


def test_gmail_label_views_are_not_copied(tmp_path, dovecot_pair):
    user = "alice@example.com"
    msgs = [Msg(make_message(i)) for i in range(3)]
    seed(*dovecot_pair.source_account(user), {
        "INBOX": msgs[:2], "[Gmail]/Sent Mail": msgs[2:],
        "[Gmail]/All Mail": msgs, "[Gmail]/Important": msgs[:1], "Work": msgs[1:2]})
    before = snapshot(*dovecot_pair.source_account(user))
    cfg = make_config(tmp_path, dovecot_pair, source={"preset": "google"})
    res = sync_once(cfg, user, dovecot_pair.users[user].old_password)
    assert res.error is None
    target = snapshot(*dovecot_pair.target_account(user))
    assert "[Gmail]/All Mail" not in target and "[Gmail]/Important" not in target
    assert sum(len(v) for v in target.values()) == 4      # 2 + 1 + 1: no message twice
    assert {s.path: s.reason for s in res.skipped_folders if "quirks" in s.reason} == {
        "[Gmail]/All Mail": "the provider's preset skips it (quirks.skip_folders)",
        "[Gmail]/Important": "the provider's preset skips it (quirks.skip_folders)"}
    assert snapshot(*dovecot_pair.source_account(user)) == before
