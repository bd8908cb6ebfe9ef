"""RFC 6186 s. 6 and private addresses: what a forged MX/SRV answer must not achieve.

Real DNS (tests/dnsserver.py) and a real Dovecot with TLS on 127.0.0.1; nothing is mocked.
"""

from __future__ import annotations

import dataclasses

import pytest

from conftest import SOURCE_USERS
from dnsserver import TestDNS
from mailsyncd.config import parse_config
from mailsyncd.testing import make_test_cert
from mailsyncd.errors import TLSFailure
from mailsyncd.providers import DetectionFailed, detect, srv_tls_name
from mailsyncd.net import imap as imapconn


def _no_probe(host, port, security, timeout):
    raise AssertionError(f"probe must not run here ({host}:{port})")


@pytest.mark.parametrize("domain,target,name", [
    ("example.com", "example.com", "example.com"),
    ("example.com", "imap.example.com", "imap.example.com"),
    ("example.com", "a.b.example.com", "a.b.example.com"),
    ("example.com", "mail.provider.test", "example.com"),
    ("example.com", "badexample.com", "example.com"),        # not a subdomain, only a suffix
])
def test_srv_tls_name(domain, target, name):
    assert srv_tls_name(domain, target) == name


ZONE = """
private.test.             300 IN MX  10 mx.private.test.
_imaps._tcp.private.test. 300 IN SRV 0 1 993 imap.private.test.
imap.private.test.        300 IN A   10.1.2.3
linklocal.test.             300 IN MX  10 mx.linklocal.test.
_imaps._tcp.linklocal.test. 300 IN SRV 0 1 993 imap.linklocal.test.
imap.linklocal.test.        300 IN AAAA fe80::1
loop.test.                300 IN MX  10 mx.loop.test.
_imap._tcp.loop.test.     300 IN SRV 0 1 143 lo.loop.test.
lo.loop.test.             300 IN A   127.0.0.1
public.test.              300 IN MX  10 mx.public.test.
_imaps._tcp.public.test.  300 IN SRV 0 1 993 imap.public.test.
imap.public.test.         300 IN A   93.184.216.34
exmail.test.              300 IN MX  10 mxbiz1.qq.com.
mxbiz1.qq.com.            300 IN A   192.168.0.9
"""


@pytest.fixture(scope="module")
def dns_server():
    with TestDNS(ZONE) as srv:
        yield srv


@pytest.mark.parametrize("domain,address", [("private.test", "10.1.2.3"), ("linklocal.test", "fe80::1"),
                                            ("loop.test", "127.0.0.1")])
def test_srv_answers_pointing_inside_are_refused_unless_allowed(dns_server, domain, address):
    r = dns_server.resolver(timeout=2.0)
    with pytest.raises(DetectionFailed) as e:
        detect(domain, resolver=r, probe=_no_probe, probe_prefixes=())
    assert any(address in s and "non-public address, refused" in s for s in e.value.steps), e.value.steps
    d = detect(domain, resolver=r, probe=_no_probe, probe_prefixes=(), allow_private=True)
    assert d.step == "srv" and d.host.endswith(domain)


def test_a_public_srv_answer_is_used(dns_server):
    d = detect("public.test", resolver=dns_server.resolver(timeout=2.0), probe=_no_probe, probe_prefixes=())
    assert (d.host, d.step) == ("imap.public.test", "srv")


def test_an_mx_answer_pointing_inside_is_refused_unless_allowed(dns_server):
    r = dns_server.resolver(timeout=2.0)
    with pytest.raises(DetectionFailed) as e:
        detect("exmail.test", resolver=r, probe=_no_probe, probe_prefixes=())
    assert any("192.168.0.9" in s and "refused" in s for s in e.value.steps), e.value.steps
    assert detect("exmail.test", resolver=r, probe=_no_probe, probe_prefixes=(), allow_private=True).step == "preset"


def test_config_dns_allow_private(tmp_path):
    base = {"state_dir": "s", "domains": {"example.com": {"source": {"host": "auto"},
                                                          "target": {"host": "127.0.0.1"}}}}
    assert parse_config(base, path=str(tmp_path / "c.yaml")).dns.allow_private is False
    cfg = parse_config({**base, "dns": {"allow_private": True}}, path=str(tmp_path / "c.yaml"))
    assert cfg.dns.allow_private is True
    with pytest.raises(Exception, match=r"dns\.allow_private.*true or false"):
        parse_config({**base, "dns": {"allow_private": "yes"}}, path=str(tmp_path / "c.yaml"))


# -- the certificate is checked against the mail domain, not the SRV target ------------------------

def _source_endpoint(tmp_path, dns_port: int, src_port: int, ca: str):
    cfg = parse_config({"state_dir": "s", "dns": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": 2,
                                                  "allow_private": True},
                        "domains": {"example.com": {"source": {"host": "auto", "ca_file": ca},
                                                    "target": {"host": "127.0.0.1"}}}},
                       path=str(tmp_path / "c.yaml"))
    from mailsyncd.providers.autodetect import resolve
    cfg, found, failed = resolve(cfg)
    assert not failed, failed
    return cfg.domains["example.com"].source, found["example.com"]


@pytest.mark.parametrize("cert_for,accepted", [("example.com", True), ("mail.provider.test", False)])
def test_an_srv_target_outside_the_domain_must_show_the_domains_certificate(make_dovecot, tmp_path, cert_for,
                                                                            accepted):
    certdir = tmp_path / "cert"
    certdir.mkdir()
    cert = make_test_cert(str(certdir), cn=cert_for)
    src = make_dovecot("source", SOURCE_USERS, ssl=cert)
    with TestDNS(f"""
            example.com.              300 IN MX  10 mx.example.com.
            _imaps._tcp.example.com.  300 IN SRV 0 1 {src.imaps_port} mail.provider.test.
            mail.provider.test.       300 IN A   127.0.0.1
            """) as dns:
        ep, found = _source_endpoint(tmp_path, dns.port, src.imaps_port, cert[0])
    assert (ep.host, ep.tls_name, found.tls_name) == ("mail.provider.test", "example.com", "example.com")
    assert any("must name example.com" in r for r in found.reasons)
    # connect by address: the test machine cannot resolve mail.provider.test, the name check is what counts
    ep = dataclasses.replace(ep, host="127.0.0.1")
    if accepted:
        imapconn.connect(ep, role="source").logout()
    else:
        # a forged SRV answer pointing at a host with a good certificate for ITSELF is refused
        with pytest.raises(TLSFailure, match="not trusted"):
            imapconn.connect(ep, role="source")
