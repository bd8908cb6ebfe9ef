"""PROXY protocol from trusted load balancers (issue 13, item 3): mailsyncd nodes behind a real HAProxy.

The pure parts (which peer is trusted, what a header says, the listener's timer) run in process with a
fake clock; the rest with real Dovecot, real daemons and Debian's HAProxy (mailsyncd/testing/haproxy.py).
Clients bind to 127.0.0.2 / 127.0.0.3, so that their address differs from HAProxy's (127.0.0.1).
"""

from __future__ import annotations

import imaplib
import ipaddress
import json
import os
import logging
import re
import socket
import ssl
import struct
import time

import pytest
from proxyenv import Daemon
from syncenv import REPO
from test_dashboard import HASH, PASSWORD
from test_selfservice import Web, web_daemon
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mailsyncd.config import ConfigError
from mailsyncd.config.root import parse_config
from mailsyncd.proxyproto.header import V2_PREFIX, BadHeader, HeaderReader, TrustedProxies
from mailsyncd.proxyproto.listener import ProxyHeaderFactory
from mailsyncd.testing.haproxy import Frontend

A, B = "alice@example.com", "bob@example.com"
FORGED = "198.51.100.7"
pytestmark = pytest.mark.timeout(180)


def v1(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 143) -> bytes:
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 143, *, command: int = 1,
       fam: int = 0x11) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_PREFIX + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


V2_LOCAL = V2_PREFIX + bytes([0x20, 0x00]) + struct.pack("!H", 0)


# -- pure: the trust decision, the header, the config ------------------------------------------------

def test_trust_decision():
    t = TrustedProxies(TrustedProxies.parse(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"]))
    for host in ("127.0.0.1", "10.255.0.1", "::ffff:10.1.2.3", "2001:db8::5"):
        assert t.trusts(host), host
    for host in ("127.0.0.2", "11.0.0.1", "::1", "fe80::1%eth0", "", None, "localhost", "10.0.0.1x"):
        assert not t.trusts(host), host
    assert not TrustedProxies() and not TrustedProxies().trusts("127.0.0.1")
    assert TrustedProxies.parse(["192.0.2.9", "::1"]) == ("192.0.2.9/32", "::1/128")
    with pytest.raises(ValueError, match="did you mean 10.0.0.0/8"):
        TrustedProxies.parse(["10.0.0.1/8"])
    with pytest.raises(ValueError, match="not an IP address or network"):
        TrustedProxies.parse(["haproxy.example.com"])


def test_header_reader_v1_v2_in_pieces_and_refusals():
    data = v2("192.0.2.5", sport=5555) + b"a LOGIN"
    r = HeaderReader()
    for i in range(len(data) - 8):                        # one byte at a time: nothing until it is whole
        assert r.feed(data[i:i + 1]) is None
    h = r.feed(data[len(data) - 8:])
    assert (h.version, h.source.host, h.source.port, h.rest) == (2, "192.0.2.5", 5555, b"a LOGIN")
    h = HeaderReader().feed(v1("192.0.2.6") + b"x")
    assert (h.version, h.source.host, h.destination.port, h.rest) == (1, "192.0.2.6", 143, b"x")
    h = HeaderReader().feed(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
    assert h.source.host == "2001:db8::1"
    assert HeaderReader().feed(V2_LOCAL).source is None              # a health check: no client
    for bad in (b"a LOGIN alice pw\r\n", b"GET / HTTP/1.1\r\n", b"PROXY TCP4 <script> 1.2.3.4 1 2\r\n",
                b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
                b"PROXY " + b"9" * 120, v2("1.2.3.4", fam=0x12),                 # UDP is not a TCP client
                V2_PREFIX + bytes([0x31, 0x11]) + struct.pack("!H", 12) + bytes(12),  # version 3
                V2_PREFIX + bytes([0x21, 0x11]) + struct.pack("!H", 60000)):     # absurd length
        with pytest.raises(BadHeader):
            HeaderReader().feed(bad)


def _cfg(listen: dict, frontdoor: dict | None = None):
    doc = {"domains": {"example.com": {"source": {"host": "s.example", "port": 993},
                                       "target": {"host": "t.example", "port": 993}}},
           "listen": listen, "tls": None, "frontdoor": {"allow_plaintext_login": True, **(frontdoor or {})}}
    return parse_config(doc, path="/nonexistent/mailsyncd.yaml")


def test_a_v1_unknown_header_bare_or_not_is_read_without_a_client_address():
    # "PROXY UNKNOWN\r\n" is what the specification shows (HAProxy sends it for a non-TCP client)
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        h = HeaderReader().feed(line + b"a1 NOOP\r\n")
        assert (h.version, h.source, h.destination, h.rest) == (1, None, None, b"a1 NOOP\r\n")


def test_twisteds_private_proxy_parsers_still_do_what_header_py_relies_on():
    """header.py imports Twisted's private PROXY parsers (why: its comment).  Pinned here: the names, and
    the answers it builds on.  If this fails after a Twisted upgrade, re-check header.py against the new
    parsers (or move to a public API, if Twisted now has one that fits) before anything else."""
    import twisted.protocols.haproxy as public
    from twisted.internet.address import IPv6Address, UNIXAddress
    from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
    from twisted.protocols.haproxy._v1parser import V1Parser
    from twisted.protocols.haproxy._v2parser import V2Parser
    now_public = {n for n in ("V1Parser", "V2Parser", "InvalidProxyHeader", "convertError", "ProxyInfo")
                  if hasattr(public, n)}
    assert not now_public, f"Twisted now exports {now_public}: import them from twisted.protocols.haproxy"
    assert V2Parser.PREFIX == b"\r\n\r\n\x00\r\nQUIT\n" == V2_PREFIX
    # v1: the line without its CRLF; TCP4/TCP6 give TCP addresses, anything else raises (UNKNOWN: header.py)
    info = V1Parser.parse(b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 143")
    assert (info.source, info.destination) == (IPv4Address("TCP", "192.0.2.1", 40000),
                                               IPv4Address("TCP", "127.0.0.1", 143))
    info = V1Parser.parse(b"PROXY TCP6 2001:db8::1 ::1 40000 143")
    assert info.source == IPv6Address("TCP", "2001:db8::1", 40000)
    for bad in (b"PROXY TCP5 1 2 3 4", b"PROXY TCP4 192.0.2.1", b"HELLO TCP4 192.0.2.1 127.0.0.1 1 2", b"PROXY"):
        with pytest.raises(InvalidProxyHeader):
            V1Parser.parse(bad)
    # v2: the whole header; PROXY over TCP gives TCP addresses, LOCAL and UNSPEC none, UNIX UNIXAddress
    info = V2Parser.parse(v2("192.0.2.44", dport=993))
    assert (info.source, info.destination) == (IPv4Address("TCP", "192.0.2.44", 40000),
                                               IPv4Address("TCP", "127.0.0.1", 993))
    six = V2_PREFIX + bytes([0x21, 0x21]) + struct.pack("!H", 36) + socket.inet_pton(socket.AF_INET6, "2001:db8::2") \
        + socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("!HH", 1, 2)
    src = V2Parser.parse(six).source                   # an IPv6Address, its text not compressed (header.py does)
    assert isinstance(src, IPv6Address) and (src.type, ipaddress.ip_address(src.host), src.port) == (
        "TCP", ipaddress.ip_address("2001:db8::2"), 1)
    assert V2Parser.parse(v2("192.0.2.44", fam=0x12)).source.type == "UDP"     # header.py refuses non-TCP
    assert V2Parser.parse(V2_LOCAL).source is None
    assert V2Parser.parse(V2_PREFIX + bytes([0x21, 0x00]) + struct.pack("!H", 0)).source is None
    unix = V2_PREFIX + bytes([0x21, 0x31]) + struct.pack("!H", 216) + b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")
    assert V2Parser.parse(unix).source == UNIXAddress(b"/a")
    for bad in (v2("192.0.2.44")[:20], v2("192.0.2.44", command=2), b"x" * 12 + v2("192.0.2.44")[12:]):
        with pytest.raises(InvalidProxyHeader):
            V2Parser.parse(bad)


def test_config_proxy_protocol_needs_trusted_proxies():
    with pytest.raises(ConfigError) as e:
        _cfg({"imap": "127.0.0.1:1143", "proxy_protocol": True})
    assert e.value.errors == ["listen.proxy_protocol: is on, but frontdoor.trusted_proxies is empty: list the load "
                              "balancers' addresses (CIDR), else every connection would be refused"]
    with pytest.raises(ConfigError) as e:
        _cfg({"imap": "127.0.0.1:1143", "proxy_protocol": ["imaps", "ftp"]}, {"trusted_proxies": ["10.0.0.5/8"]})
    assert any(x.startswith("listen.proxy_protocol: must be true, false, or a list") for x in e.value.errors)
    assert any("frontdoor.trusted_proxies: '10.0.0.5/8' has host bits set" in x for x in e.value.errors)
    c = _cfg({"imap": "127.0.0.1:1143", "proxy_protocol": ["http", "imap", "http"]}, {"trusted_proxies": ["10.0.0.5"]})
    assert c.listen.proxy_protocol == ("http", "imap") and not c.listen.proxied("imaps")
    # true: every listener, also those systemd passes in (they have no address in the file)
    c = _cfg({"imap": "127.0.0.1:1143", "proxy_protocol": True}, {"trusted_proxies": ["10.0.0.5", "fd00::/8"]})
    assert c.listen.proxy_protocol == ("imap", "imaps", "http") and c.listen.proxied("http")
    assert c.frontdoor.trusted_proxies == ("10.0.0.5/32", "fd00::/8")
    assert _cfg({"imap": "127.0.0.1:1143"}).listen.proxy_protocol == ()


# -- in process: the listener's decisions, with a fake clock ---------------------------------------

class _Seen(Protocol):
    def connectionMade(self):
        self.factory.made.append((self.transport.getPeer().host, self.transport.getHost().port))

    def dataReceived(self, data):
        self.factory.data.append(data)


def _listener(clock, trusted=("127.0.0.1/32",)):
    inner = Factory.forProtocol(_Seen)
    inner.made, inner.data, inner.addrs = [], [], []
    build = inner.buildProtocol
    inner.buildProtocol = lambda addr: (inner.addrs.append(addr.host), build(addr))[1]
    return ProxyHeaderFactory(inner, clock, lambda: trusted, name="imap"), inner


def _connect(factory, peer: str):
    p = factory.buildProtocol(IPv4Address("TCP", peer, 50000))
    if p is None:
        return None, None
    t = StringTransport(peerAddress=IPv4Address("TCP", peer, 50000), hostAddress=IPv4Address("TCP", "127.0.0.1", 143))
    p.makeConnection(t)
    return p, t


def test_listener_trust_timeout_header_and_local(caplog):
    caplog.set_level(logging.DEBUG, "mailsyncd.proxy")
    clock = Clock()
    f, inner = _listener(clock)
    assert _connect(f, "127.0.0.2") == (None, None)                         # untrusted: closed at once
    assert "event=proxy_untrusted ip=127.0.0.2 listener=imap" in caplog.text
    # trusted, the header in two pieces: the client is built with the header's address
    p, t = _connect(f, "127.0.0.1")
    data = v2("192.0.2.44", dport=993) + b"a CAPABILITY\r\n"
    p.dataReceived(data[:7])
    assert inner.addrs == [] and inner.made == []
    p.dataReceived(data[7:])
    assert inner.addrs == ["192.0.2.44"] and inner.made == [("192.0.2.44", 993)]
    assert inner.data == [b"a CAPABILITY\r\n"]
    clock.advance(3600)
    assert not t.disconnecting                                              # the header timer was cancelled
    # trusted, silent: closed after the header timeout, not before
    p, t = _connect(f, "127.0.0.1")
    clock.advance(4.9)
    assert not t.disconnecting
    clock.advance(0.2)
    assert t.disconnecting and "event=proxy_header_bad ip=127.0.0.1 listener=imap reason='timeout'" in caplog.text
    # trusted, garbage: closed at once
    p, t = _connect(f, "127.0.0.1")
    p.dataReceived(b"a LOGIN alice secret\r\n")
    assert t.disconnecting and "reason='not a PROXY protocol header'" in caplog.text
    assert "secret" not in caplog.text
    # a v2 LOCAL header (HAProxy's health check): read, then closed; no client is built
    p, t = _connect(f, "127.0.0.1")
    p.dataReceived(V2_LOCAL)
    assert t.disconnecting and inner.addrs == ["192.0.2.44"]
    assert "event=proxy_local ip=127.0.0.1" in caplog.text


# -- real: daemons behind HAProxy -------------------------------------------------------------------

class IMAPFrom(imaplib.IMAP4):
    """imaplib from a chosen loopback source address (so that it differs from HAProxy's)."""

    def __init__(self, port: int, source: str):
        self.source = source
        super().__init__("127.0.0.1", port, timeout=20)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def imap_when_free(port: int, source: str, deadline: float = 15.0) -> IMAPFrom:
    """IMAPFrom, once the per-address cap has let go of this address's previous connection: closing
    ours does not close HAProxy's connection to the daemon at the same instant."""
    end = time.monotonic() + deadline
    while True:
        try:
            return IMAPFrom(port, source)
        except imaplib.IMAP4.error as e:   # the greeting was BYE
            if "Too many connections" not in str(e) or time.monotonic() > end:
                raise
        time.sleep(0.05)


class IMAPSFrom(imaplib.IMAP4_SSL):
    def __init__(self, port: int, source: str, ctx):
        self.source = source
        super().__init__("127.0.0.1", port, ssl_context=ctx, timeout=20)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def proxied(d: Daemon, listeners=True, trusted=("127.0.0.1",)) -> Daemon:
    d.doc["listen"]["proxy_protocol"] = listeners
    d.doc["frontdoor"]["trusted_proxies"] = list(trusted)
    d.save()
    return d


def closed(s: socket.socket) -> bool:
    """The peer closed (or reset: it closed with our bytes unread) without sending a byte."""
    try:
        return s.recv(4096) == b""
    except ConnectionResetError:
        return True
    finally:
        s.close()


def wait_text(path: str, pattern: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while True:
        with open(path, errors="replace") as f:
            text = f.read()
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in {path}:\n{text[-3000:]}")
        time.sleep(0.05)


def test_logins_through_haproxy_v2_and_v1_reach_two_nodes_with_the_real_address(tmp_path, dovecot_pair,
                                                                                make_haproxy):
    pair = dovecot_pair
    nodes = []
    for n in ("node1", "node2"):
        (tmp_path / n).mkdir()
        nodes.append(proxied(Daemon(tmp_path / n, pair)).start())
    try:
        ha = make_haproxy([Frontend("imap", [("127.0.0.1", d.imap_port) for d in nodes]),
                           Frontend("imap_v1", [("127.0.0.1", nodes[0].imap_port)], send_proxy="send-proxy")])
        nodes[0].wait_log("event=proxy_local")            # HAProxy's health check (v2 LOCAL): read and closed
        for user, src in ((A, "127.0.0.2"), (B, "127.0.0.3")):                  # round robin: one each
            c = IMAPFrom(ha.port("imap"), src)
            assert c.login(user, pair.users[user].old_password)[0] == "OK"
            assert c.select("INBOX")[0] == "OK"
            c.logout()
        nodes[0].wait_log(f"event=relay_start ip=127.0.0.2 user={A}")
        nodes[1].wait_log(f"event=relay_start ip=127.0.0.3 user={B}")
        c = IMAPFrom(ha.port("imap_v1"), "127.0.0.3")                          # PROXY v1
        assert c.login(A, pair.users[A].old_password)[0] == "OK"
        c.logout()
        nodes[0].wait_log(f"event=relay_start ip=127.0.0.3 user={A}")
        # the target saw the clients through ID x-originating-ip, not HAProxy's 127.0.0.1
        log = wait_text(pair.target.log_path, r"Login: user=<bob@example\.com>.*rip=127\.0\.0\.3")
        assert re.search(r"Login: user=<alice@example\.com>.*rip=127\.0\.0\.2", log)
        for d in nodes:
            text = d.log()
            assert "event=proxy_header_bad" not in text and "event=proxy_untrusted" not in text
            assert not re.search(r"event=relay_start ip=127\.0\.0\.1 ", text)
        assert " is DOWN" not in ha.log()                 # the health checks pass
    finally:
        for d in nodes:
            d.stop()


def test_connection_caps_and_login_throttle_count_the_real_client(tmp_path, dovecot_pair, make_haproxy):
    pair = dovecot_pair
    fd = {"max_preauth_per_ip": 1, "network_burst": 2, "network_refill": 3600}
    with proxied(Daemon(tmp_path, pair, frontdoor=fd)) as d:
        port = make_haproxy([Frontend("imap", [("127.0.0.1", d.imap_port)])]).port("imap")
        held = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
        assert held.recv(4096).startswith(b"* OK")
        again = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
        assert again.recv(4096).startswith(b"* BYE Too many connections from your address")
        again.close()
        d.wait_log("event=connection_refused ip=127.0.0.2 cap=per_client")
        held.close()
        # the login throttle's network budget is 127.0.0.2's, not HAProxy's
        answers = []
        for i in range(3):
            c = imap_when_free(port, "127.0.0.2")
            with pytest.raises(imaplib.IMAP4.error) as e:
                c.login(A, f"wrong-{i}")
            answers.append(str(e.value))
            c.shutdown()
        assert "UNAVAILABLE" not in answers[0] and "UNAVAILABLE" not in answers[1]
        assert "UNAVAILABLE" in answers[2], answers
        d.wait_log("event=login_failed ip=127.0.0.2 user=alice@example.com reason='throttled: budget=network")
        c = IMAPFrom(port, "127.0.0.3")                   # another client through the same HAProxy
        assert c.login(A, pair.users[A].old_password)[0] == "OK"
        c.logout()


def test_untrusted_peer_with_a_forged_header_is_closed_and_never_believed(tmp_path, dovecot_pair):
    pair = dovecot_pair
    with proxied(Daemon(tmp_path, pair)) as d:
        for header in (v1(FORGED), v2(FORGED)):
            s = socket.create_connection(("127.0.0.1", d.imap_port), timeout=10, source_address=("127.0.0.3", 0))
            s.sendall(header + f"a LOGIN {A} {pair.users[A].old_password}\r\n".encode())
            assert closed(s)                              # not even a greeting

        d.wait_log("event=proxy_untrusted ip=127.0.0.3 listener=imap")
        # a trusted peer that sends no PROXY header: closed at once, nothing served
        s = socket.create_connection(("127.0.0.1", d.imap_port), timeout=10, source_address=("127.0.0.1", 0))
        s.sendall(b"a CAPABILITY\r\n")
        assert closed(s)
        d.wait_log("event=proxy_header_bad ip=127.0.0.1 listener=imap reason='not a PROXY protocol header'")
        st = d.status_after()
        assert st["logins"]["source_checks"] == 0 and st["sessions"] == 0
    assert FORGED not in d.log()
    with open(pair.target.log_path, errors="replace") as f:
        assert FORGED not in f.read()
    with open(pair.source.log_path, errors="replace") as f:
        assert FORGED not in f.read()


def test_implicit_tls_behind_haproxy_header_before_tls(tmp_path, dovecot_pair, test_cert, make_haproxy):
    pair = dovecot_pair
    with proxied(Daemon(tmp_path, pair, test_cert), ["imaps"]) as d:
        ha = make_haproxy([Frontend("imaps", [("127.0.0.1", d.imaps_port)])])
        c = IMAPSFrom(ha.port("imaps"), "127.0.0.2", d.client_tls())
        assert c.login(A, pair.users[A].old_password)[0] == "OK"
        assert c.select("INBOX")[0] == "OK"
        c.logout()
        d.wait_log(f"event=relay_start ip=127.0.0.2 user={A}")
        wait_text(pair.target.log_path, r"Login: user=<alice@example\.com>.*rip=127\.0\.0\.2")
        # the imap (STARTTLS) listener is not in the list: it still serves direct clients
        direct = imaplib.IMAP4("127.0.0.1", d.imap_port, timeout=20)
        direct.starttls(d.client_tls())
        assert direct.login(B, pair.users[B].old_password)[0] == "OK"
        direct.logout()


def test_starttls_behind_haproxy(tmp_path, dovecot_pair, test_cert, make_haproxy):
    pair = dovecot_pair
    with proxied(Daemon(tmp_path, pair, test_cert)) as d:
        ha = make_haproxy([Frontend("imap", [("127.0.0.1", d.imap_port)], send_proxy="send-proxy")])
        c = IMAPFrom(ha.port("imap"), "127.0.0.3")
        c.starttls(d.client_tls())                       # TLS starts under the PROXY wrapper
        assert c.login(B, pair.users[B].old_password)[0] == "OK"
        c.logout()
        d.wait_log(f"event=relay_start ip=127.0.0.3 user={B}")
        # the imaps listener is proxied too: a direct TLS client is closed before any handshake
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            IMAPSFrom(d.imaps_port, "127.0.0.2", d.client_tls())
        d.wait_log("event=proxy_untrusted ip=127.0.0.2 listener=imaps")


def test_web_behind_haproxy_real_client_and_never_local(tmp_path, dovecot_pair, make_haproxy):
    pair = dovecot_pair
    with proxied(web_daemon(tmp_path, pair, scheduler={"pass_interval": 3600})) as d:
        ha = make_haproxy([Frontend("http", [("127.0.0.1", d.http_port)])])
        w = Web(ha.port("http"), source="127.0.0.2")
        # 127.0.0.2 is a loopback address, but it came in a PROXY header: the load balancer's machine,
        # not this one -- without admin.password_hash the API and the dashboard stay closed
        assert w.get("/api/status").status == 403
        d.wait_log("event=admin_auth_failed ip=127.0.0.2 path=/api/status reason=not_loopback")
        assert w.get("/admin").status == 403
        d.wait_log("event=admin_refused ip=127.0.0.2 reason=not_loopback")
        # the self-service page works and knows the client
        r = Web(ha.port("http"), source="127.0.0.3").start(A, pair.users[A].old_password)
        assert r.status == 303, r
        d.wait_log(f"event=selfservice_start ip=127.0.0.3 user={A}")
        # with a dashboard password: HTTP Basic through HAProxy, throttled and logged per real client
        d.doc["admin"] = {"password_hash": HASH}
        d.save()
        d.sighup()
        d.wait_log("event=reloaded generation=2")
        assert w.get("/api/status", headers={"Authorization": _basic("admin", "wrong")}).status == 401
        d.wait_log("event=admin_auth_failed ip=127.0.0.2 path=/api/status reason=wrong_password")
        assert w.get("/api/status", headers={"Authorization": _basic("admin", PASSWORD)}).status == 200
    assert not re.search(r"event=(admin_auth_failed|selfservice_start) ip=127\.0\.0\.1 ", d.log())


def _basic(user: str, password: str) -> str:
    import base64
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_readme_shows_the_tested_haproxy_config():
    from mailsyncd.testing.haproxy import example_config
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "```haproxy\n" + example_config() + "```\n" in readme


def test_https_web_behind_haproxy(tmp_path, dovecot_pair, test_cert, make_haproxy):
    with proxied(web_daemon(tmp_path, dovecot_pair, test_cert), ["http"]) as d:
        ha = make_haproxy([Frontend("https", [("127.0.0.1", d.http_port)])])
        r = Web(ha.port("https"), d.client_tls(), source="127.0.0.2").get("/")
        assert r.status == 200 and r.header("Strict-Transport-Security")     # TLS after the header
        assert any(c.startswith("__Host-") and "Secure" in c for c in r.set_cookies), r.set_cookies
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            Web(d.http_port, d.client_tls(), source="127.0.0.2").get("/")       # direct: closed
        d.wait_log("event=proxy_untrusted ip=127.0.0.2 listener=http")


def test_sockets_from_systemd_get_the_proxy_header_too(tmp_path, test_cert):
    """Socket activation: proxy_protocol: true also wraps the listeners systemd passes in (no address in
    the file), with the TLS of imaps inside the PROXY reader.  Wiring only: the daemon is never started."""
    from fakes import FakeReactor
    from twisted.protocols.tls import TLSMemoryBIOFactory

    from mailsyncd import daemon as daemon_mod
    from mailsyncd.config import load_config
    from mailsyncd.proxy.frontdoor import FrontDoorFactory

    path = tmp_path / "mailsyncd.yaml"
    path.write_text(json.dumps({
        "state_dir": str(tmp_path / "state"), "tls": {"cert": test_cert[0], "key": test_cert[1]},
        "listen": {"proxy_protocol": True}, "frontdoor": {"trusted_proxies": ["10.0.0.5"]},
        "domains": {"example.com": {"source": {"host": "127.0.0.1", "port": 1, "security": "none"},
                                    "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}}))
    d = daemon_mod.Daemon(load_config(str(path)), FakeReactor(), fds={"imap": [101], "imaps": [102]})
    try:
        adopted = {srv.fd: srv for srv in d.listeners}
        for fd, inner in ((101, FrontDoorFactory), (102, TLSMemoryBIOFactory)):
            assert isinstance(adopted[fd].factory, ProxyHeaderFactory) and adopted[fd].tls_options is None
            assert isinstance(adopted[fd].factory.wrappedFactory, inner)
            assert adopted[fd].factory.trusted().trusts("10.0.0.5") and not adopted[fd].factory.trusted().trusts(
                "127.0.0.1")
    finally:
        d.store.close()


def test_a_scan_from_untrusted_peers_logs_one_line_per_address_per_minute(caplog):
    caplog.set_level(logging.DEBUG, "mailsyncd.proxy")
    clock = Clock()
    f, _inner = _listener(clock)

    def lines(what: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(what)]
    for _ in range(1000):
        assert _connect(f, "127.0.0.2") == (None, None)
    _connect(f, "127.0.0.3")
    assert lines("event=proxy_untrusted ") == ["event=proxy_untrusted ip=127.0.0.2 listener=imap",
                                               "event=proxy_untrusted ip=127.0.0.3 listener=imap"]
    clock.advance(59.9)
    _connect(f, "127.0.0.2")
    assert lines("event=proxy_untrusted_more") == []
    clock.advance(0.1)              # the minute's summary: the 1000 that followed the first; none for .3
    assert lines("event=proxy_untrusted_more") == [
        "event=proxy_untrusted_more ip=127.0.0.2 listener=imap refused=1000 seconds=60"]
    _connect(f, "127.0.0.2")
    _connect(f, "127.0.0.3")        # .3 was forgotten after its quiet minute: a first refusal again
    clock.advance(60)
    assert lines("event=proxy_untrusted_more")[1:] == [
        "event=proxy_untrusted_more ip=127.0.0.2 listener=imap refused=1 seconds=60"]
    assert len(lines("event=proxy_untrusted ")) == 3
    clock.advance(60)               # quiet: both forgotten, no timer left
    assert f.refusals.pending == {} and clock.getDelayedCalls() == []
    # memory is bounded: past max_tracked addresses, new ones share one entry
    f.refusals.max_tracked = 2
    for i in range(2, 60):
        _connect(f, f"127.0.1.{i}")
    assert set(f.refusals.pending) == {"127.0.1.2", "127.0.1.3", "*"} and f.refusals.pending["*"] == 55
    assert len(caplog.records) < 20


def test_a_peer_dropped_from_trusted_proxies_by_a_reload_is_not_believed_for_a_header_still_coming(caplog):
    clock = Clock()
    trusted = ["127.0.0.1/32"]
    inner = Factory.forProtocol(_Seen)
    inner.made, inner.data = [], []
    f = ProxyHeaderFactory(inner, clock, lambda: tuple(trusted), name="imap")
    p, t = _connect(f, "127.0.0.1")                      # accepted while trusted...
    p.dataReceived(v1(FORGED)[:10])
    trusted[:] = ["10.0.0.0/8"]                          # ...then a reload takes the peer off the list
    p.dataReceived(v1(FORGED)[10:] + b"a LOGIN alice pw\r\n")
    assert inner.made == [] and t.disconnecting
    assert "event=proxy_header_bad ip=127.0.0.1 listener=imap reason='peer no longer in trusted_proxies'" \
        in caplog.text


def test_an_ipv4_mapped_client_address_in_a_header_is_the_ipv4_address():
    # one client, one address: the caps, the throttle's streaks, the logs fail2ban reads and the web's rules
    # must not see "::ffff:192.0.2.5" and "192.0.2.5" as two clients
    h = HeaderReader().feed(b"PROXY TCP6 ::ffff:192.0.2.5 ::ffff:127.0.0.1 40000 143\r\n")
    assert (type(h.source), h.source.host, h.source.port) == (IPv4Address, "192.0.2.5", 40000)
    assert (type(h.destination), h.destination.host) == (IPv4Address, "127.0.0.1")
    body = socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.6") + socket.inet_pton(socket.AF_INET6, "::1") \
        + struct.pack("!HH", 1, 2)
    h = HeaderReader().feed(V2_PREFIX + bytes([0x21, 0x21]) + struct.pack("!H", len(body)) + body)
    assert (type(h.source), h.source.host) == (IPv4Address, "192.0.2.6") and h.destination.host == "::1"
