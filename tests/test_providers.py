"""`source: {host: auto}` detection (mailsyncd.providers) and `mailsyncctl detect`.

Never uses the outside network: DNS comes from a real authoritative server on 127.0.0.1
(tests/dnsserver.py, dnslib, UDP+TCP) that a ``dns.resolver.Resolver(configure=False)`` asks;
probes go to real throwaway Dovecot servers (or tiny local sockets) on 127.0.0.1, whose probe
names resolve to 127.0.0.1 through that DNS server.  Test domains are under ``.test``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading

import pytest
import yaml

from dnsserver import TestDNS
from mailsyncd import providers
from mailsyncd.cli import detect as detect_cli
from mailsyncd.testing import free_port, make_test_cert
from mailsyncd.providers import (
    DetectionFailed, PresetError, ProbeError, detect, imap_probe, load_presets, match_mx,
)

ZONES = """
; ---- MX -> presets
exmail.test.            300 IN MX 5  mxbiz1.qq.com.
exmail.test.            300 IN MX 10 mxbiz2.qq.com.
netease.test.           300 IN MX 10 mx.qiye.163.com.
netease.test.           300 IN MX 20 mx2.qiye.163.com.
hichina.test.           300 IN MX 5  mxn.mxhichina.com.
hichina.test.           300 IN MX 10 mxw.mxhichina.com.
aliyun.test.            300 IN MX 5  mx1.qiye.aliyun.com.
gsuite.test.            300 IN MX 1  aspmx.l.google.com.
gsuite.test.            300 IN MX 5  alt1.aspmx.l.google.com.
m365.test.              300 IN MX 0  m365-test.mail.protection.outlook.com.
icloud.test.            300 IN MX 10 mx01.mail.icloud.com.
; the lowest preference decides: the backup MX would be Google
mixed.test.             300 IN MX 20 aspmx.l.google.com.
mixed.test.             300 IN MX 10 mxbiz1.qq.com.
; an own MX first, a known provider as backup
backup.test.            300 IN MX 10 mx.backup.test.
backup.test.            300 IN MX 20 mxw.mxhichina.com.
nullmx.test.            300 IN MX 0  .

; ---- SRV (MX not a preset)
srvprio.test.           300 IN MX 10 mx.srvprio.test.
_imaps._tcp.srvprio.test. 300 IN SRV 20 1 993 imap-backup.srvprio.test.
_imaps._tcp.srvprio.test. 300 IN SRV 10 1 10993 imap-main.srvprio.test.
_imap._tcp.srvprio.test.  300 IN SRV 30 1 143 imap-old.srvprio.test.
; equal priority: implicit TLS beats STARTTLS (RFC 8314), then weight decides
srvtie.test.            300 IN MX 10 mx.srvtie.test.
_imap._tcp.srvtie.test.   300 IN SRV 5 100 143 starttls.srvtie.test.
_imaps._tcp.srvtie.test.  300 IN SRV 5 1  993 light.srvtie.test.
_imaps._tcp.srvtie.test.  300 IN SRV 5 50 993 heavy.srvtie.test.
; "." = not offered: IMAP switched off, POP3 over TLS published
srvdot.test.            300 IN MX 10 mx.srvdot.test.
_imaps._tcp.srvdot.test.  300 IN SRV 0 0 0 .
_imap._tcp.srvdot.test.   300 IN SRV 0 0 0 .
_pop3s._tcp.srvdot.test.  300 IN SRV 0 1 995 pop.srvdot.test.
_pop3._tcp.srvdot.test.   300 IN SRV 0 0 0 .
; everything "." -> the SRV step fails, with the reason
srvnone.test.           300 IN MX 10 mx.srvnone.test.
_imaps._tcp.srvnone.test. 300 IN SRV 0 0 0 .
_imap._tcp.srvnone.test.  300 IN SRV 0 0 0 .
_pop3s._tcp.srvnone.test. 300 IN SRV 0 0 0 .
_pop3._tcp.srvnone.test.  300 IN SRV 0 0 0 .
; the domain ranks POP3 first (RFC 6186 s. 3.4), we still prefer IMAP
srvpop.test.            300 IN MX 10 mx.srvpop.test.
_pop3s._tcp.srvpop.test.  300 IN SRV 0 1 995 pop.srvpop.test.
_imaps._tcp.srvpop.test.  300 IN SRV 10 1 993 imap.srvpop.test.
; SRV pointing at a preset's server: its quirks apply
srvpreset.test.         300 IN MX 10 mx.srvpreset.test.
_imaps._tcp.srvpreset.test. 300 IN SRV 0 1 993 imap.qiye.163.com.

; ---- nothing at all
nothing.test.           300 IN MX 10 mx.example.net.
"""


@pytest.fixture(scope="module")
def dns_server():
    with TestDNS(ZONES) as srv:
        yield srv


@pytest.fixture
def resolver(dns_server):
    return dns_server.resolver(timeout=2.0)


def _no_probe(host, port, security, timeout):
    raise AssertionError(f"probe must not run here ({host}:{port})")


# ============================================================================ presets

REQUIRED = {"exmail", "qq", "netease_qiye", "netease_163", "netease_126", "net263", "cn35", "aliyun",
            "google", "microsoft365", "yahoo", "zoho", "icloud"}


def test_shipped_presets_load_and_are_complete():
    presets = load_presets()
    assert REQUIRED <= set(presets)
    for key, p in presets.items():
        assert p.key == key
        assert p.name and p.name_zh and p.mx
        assert p.imap or p.pop3
        for s in (p.imap, p.pop3):
            if s is not None:
                assert s.security in ("tls", "starttls") and 1 <= s.port <= 65535
        assert p.auth_hint_en and p.auth_hint_zh
        assert p.max_connections is None or p.max_connections >= 1
    assert presets["netease_qiye"].send_id and presets["netease_163"].send_id
    assert not presets["exmail"].send_id
    assert presets["exmail"].imap == ("imap.exmail.qq.com", 993, "tls")
    assert presets["icloud"].pop3 is None
    assert "授权码" in presets["qq"].auth_hint_zh
    assert providers.default_presets() == presets


def test_every_preset_has_a_source_comment():
    text = open(providers.PRESETS_PATH, encoding="utf-8").read()
    for key in load_presets():
        block = text.split(f"\n  {key}:\n", 1)[1].split("\n  ", 1)[0]
        assert block.lstrip().startswith("#"), f"preset {key}: no comment saying where the values come from"


def _broken_copy(tmp_path, mutate) -> str:
    doc = yaml.safe_load(open(providers.PRESETS_PATH, encoding="utf-8"))
    mutate(doc["presets"])
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return str(path)


def test_broken_presets_name_the_preset_and_the_key(tmp_path):
    def mutate(ps):
        ps["exmail"]["imap"]["port"] = "99x"
        del ps["google"]["name_zh"]
        ps["qq"]["quirks"]["auth_hint"] = {"en": "only english"}
        ps["yahoo"]["mx"].append("mxbiz1.qq.com")  # exmail's
        ps["zoho"]["imap"]["security"] = "ssl"
        ps["icloud"]["quirks"]["max_connections"] = 0
        ps["aliyun"]["extra"] = 1
    path = _broken_copy(tmp_path, mutate)
    with pytest.raises(PresetError) as ei:
        load_presets(path)
    msg = str(ei.value)
    for expected in ("preset 'exmail': imap.port: must be an integer 1..65535, not '99x'",
                     "preset 'google': missing key 'name_zh'",
                     "preset 'qq': quirks.auth_hint: must be a mapping with exactly the keys en and zh",
                     "preset 'yahoo': mx: pattern 'mxbiz1.qq.com' is already used by preset 'exmail'",
                     "preset 'zoho': imap.security: must be one of tls, starttls, not 'ssl'",
                     "preset 'icloud': quirks.max_connections: must be an integer 1..1000 or null, not 0",
                     "preset 'aliyun': unknown key(s) extra"):
        assert expected in msg
    assert all(e.startswith(path + ": ") for e in ei.value.errors)
    assert len(ei.value.errors) == 7


@pytest.mark.parametrize("text, expected", [
    ("presets: [1, 2]\n", "single key 'presets'"),
    ("presets:\n  x: {name: [\n", "not valid YAML"),
    ("presets:\n  bad: {name: B, name_zh: B, mx: ['MX.Upper.COM.'], imap: null, pop3: null, "
     "quirks: {auth_hint: {en: a, zh: b}}}\n", "is not a pattern like"),
])
def test_broken_presets_other_shapes(tmp_path, text, expected):
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PresetError, match=expected):
        load_presets(path)


def test_missing_presets_file(tmp_path):
    with pytest.raises(PresetError, match="cannot read"):
        load_presets(tmp_path / "nope.yaml")


def test_match_mx_patterns():
    assert match_mx(["mxbiz1.qq.com"]).key == "exmail"
    assert match_mx(["MX3.QQ.COM."]).key == "qq"              # case and trailing dot
    assert match_mx(["mx.qiye.163.com"]).key == "netease_qiye"  # "*.qiye.163.com"
    assert match_mx(["qiye.163.com"]) is None                    # "*." needs a label below
    assert match_mx(["alt3.aspmx.l.google.com"]).key == "google"  # below a plain pattern
    assert match_mx(["xaspmx.l.google.com"]) is None             # label boundary
    assert match_mx(["tenant.mail.protection.outlook.com"]).key == "microsoft365"
    assert match_mx(["mx.example.net", "mxw.mxhichina.com"]).key == "aliyun"  # first matching host
    assert match_mx(["mx.example.net"]) is None
    assert match_mx([]) is None


# ============================================================================ step 1: MX presets

@pytest.mark.parametrize("domain, key, host", [
    ("exmail.test", "exmail", "imap.exmail.qq.com"),
    ("netease.test", "netease_qiye", "imap.qiye.163.com"),
    ("hichina.test", "aliyun", "imap.qiye.aliyun.com"),
    ("aliyun.test", "aliyun", "imap.qiye.aliyun.com"),
    ("gsuite.test", "google", "imap.gmail.com"),
    ("m365.test", "microsoft365", "outlook.office365.com"),
])
def test_mx_selects_preset(resolver, domain, key, host):
    d = detect(domain, resolver=resolver, probe=_no_probe)
    assert (d.step, d.preset.key, d.host, d.port, d.security, d.protocol) == \
        ("preset", key, host, 993, "tls", "imap")
    assert d.domain == domain
    assert any(r.startswith("MX: ") and f"-> preset {key} " in r for r in d.reasons), d.reasons
    assert d.reasons[-1] == f"decision: preset {key}: IMAP {host}:993 (tls)"


def test_mx_reason_names_the_host_and_pattern(resolver):
    d = detect("hichina.test", resolver=resolver, probe=_no_probe)
    assert d.reasons[0] == ("MX: mxn.mxhichina.com -> preset aliyun (Alibaba Mail; pattern '*.mxhichina.com'; "
                            "MX: mxn.mxhichina.com (5), mxw.mxhichina.com (10))")


def test_mx_preference_order_decides(resolver):
    assert detect("mixed.test", resolver=resolver, probe=_no_probe).preset.key == "exmail"
    d = detect("backup.test", resolver=resolver, probe=_no_probe)  # own MX first, provider as backup
    assert d.preset.key == "aliyun"


def test_preset_quirks_map_onto_endpoint(resolver):
    d = detect("user@NetEase.test.", resolver=resolver, probe=_no_probe)  # address, case, final dot
    assert d.domain == "netease.test"
    assert d.endpoint_settings() == {"host": "imap.qiye.163.com", "port": 993, "security": "tls",
                                     "protocol": "imap", "preset": "netease_qiye", "send_id": True,
                                     "max_connections": 5}
    g = detect("gsuite.test", resolver=resolver, probe=_no_probe).endpoint_settings()
    assert "send_id" not in g and g["max_connections"] == 8


def test_prefer_pop3_and_fallback(resolver):
    d = detect("exmail.test", resolver=resolver, probe=_no_probe, prefer="pop3")
    assert (d.protocol, d.host, d.port) == ("pop3", "pop.exmail.qq.com", 995)
    d = detect("icloud.test", resolver=resolver, probe=_no_probe, prefer="pop3")  # iCloud: no POP3
    assert (d.protocol, d.host) == ("imap", "imap.mail.me.com")
    assert "preset: icloud offers no POP3; using IMAP" in d.reasons


def test_null_mx_and_missing_domain_are_reasons(resolver):
    with pytest.raises(DetectionFailed) as ei:
        detect("nullmx.test", resolver=resolver, probe_ports=())
    assert ei.value.steps[0] == "MX: nullmx.test has a null MX (RFC 7505): it receives no mail"
    with pytest.raises(DetectionFailed) as ei:
        detect("nosuch.test", resolver=resolver, probe_ports=())
    assert ei.value.steps[0] == "MX: look-up of nosuch.test failed: no such name (NXDOMAIN)"


# ============================================================================ step 2: SRV

def test_srv_lowest_priority_wins(resolver):
    d = detect("srvprio.test", resolver=resolver, probe=_no_probe)
    assert (d.step, d.host, d.port, d.security, d.protocol, d.preset) == \
        ("srv", "imap-main.srvprio.test", 10993, "tls", "imap", None)
    assert d.reasons[0] == "MX: no preset matches mx.srvprio.test (10)"
    assert any("imap-backup.srvprio.test:993 (priority 20" in r for r in d.reasons)  # listed, not chosen
    assert d.reasons[-1] == "decision: SRV _imaps._tcp.srvprio.test: IMAP imap-main.srvprio.test:10993 (tls)"


def test_srv_tie_implicit_tls_then_weight(resolver):
    d = detect("srvtie.test", resolver=resolver, probe=_no_probe)
    assert (d.host, d.port, d.security) == ("heavy.srvtie.test", 993, "tls")


def test_srv_dot_means_not_offered(resolver):
    d = detect("srvdot.test", resolver=resolver, probe=_no_probe)
    assert (d.step, d.protocol, d.host, d.port, d.security) == ("srv", "pop3", "pop.srvdot.test", 995, "tls")
    assert "SRV: _imaps._tcp.srvdot.test has target '.': IMAP (implicit TLS) not offered" in d.reasons
    assert "SRV: _imap._tcp.srvdot.test has target '.': IMAP (STARTTLS) not offered" in d.reasons
    assert "SRV: no IMAP service published; using POP3" in d.reasons


def test_srv_all_dots_fall_through_to_probe(resolver):
    seen = []

    def probe(host, port, security, timeout):
        seen.append((host, port, security))
        return None

    with pytest.raises(DetectionFailed) as ei:
        detect("srvnone.test", resolver=resolver, probe=probe)
    steps = ei.value.steps
    assert sum("has target '.'" in s for s in steps) == 4
    assert seen == [("imap.srvnone.test", 993, "tls"), ("imap.srvnone.test", 143, "starttls"),
                    ("mail.srvnone.test", 993, "tls"), ("mail.srvnone.test", 143, "starttls")]
    assert "probe: mail.srvnone.test:143 (starttls): no IMAP server answered" in steps


def test_srv_domain_ranks_pop3_first_but_imap_preferred(resolver):
    d = detect("srvpop.test", resolver=resolver, probe=_no_probe)
    assert (d.protocol, d.host) == ("imap", "imap.srvpop.test")
    assert any(r.startswith("SRV: the domain ranks POP3 first") for r in d.reasons)
    d = detect("srvpop.test", resolver=resolver, probe=_no_probe, prefer="pop3")
    assert (d.protocol, d.host, d.port) == ("pop3", "pop.srvpop.test", 995)


def test_srv_target_of_a_preset_brings_its_quirks(resolver):
    d = detect("srvpreset.test", resolver=resolver, probe=_no_probe)
    assert d.step == "srv" and d.preset.key == "netease_qiye"
    assert d.endpoint_settings()["send_id"] is True


# ============================================================================ nothing found

def test_nothing_found_lists_every_step(resolver, dns_server):
    dns_server.queries.clear()
    with pytest.raises(DetectionFailed) as ei:
        detect("nothing.test", resolver=resolver)  # default probe, resolving with our DNS server
    e = ei.value
    assert e.domain == "nothing.test"
    assert e.steps == (
        "MX: no preset matches mx.example.net (10)",
        "SRV: no _imaps._tcp/_imap._tcp/_pop3s._tcp/_pop3._tcp records for nothing.test",
        "probe: imap.nothing.test: no such host (NXDOMAIN)",
        "probe: mail.nothing.test: no such host (NXDOMAIN)",
    )
    assert "no mail server found for nothing.test" in str(e)
    # every look-up went to the local server (nothing to the outside network)
    names = {q[0] for q in dns_server.queries}
    assert {"nothing.test", "_imaps._tcp.nothing.test", "imap.nothing.test", "mail.nothing.test"} <= names


def test_bad_arguments():
    with pytest.raises(ValueError):
        detect("not a domain", resolver=object())
    with pytest.raises(ValueError):
        detect("example.test", prefer="smtp")
    with pytest.raises(ValueError):
        detect("example.test", probe_ports=((993, "ssl"),))


def test_unreadable_ca_file_is_refused_before_any_lookup(resolver, dns_server, tmp_path):
    dns_server.queries.clear()
    with pytest.raises(ValueError, match="cannot load CA file"):
        detect("nothing.test", resolver=resolver, ca_file=str(tmp_path / "missing.pem"))
    assert dns_server.queries == []


# ============================================================================ step 3: probing

def _probe_zone(dns_server, *names):
    dns_server.add("\n".join(f"{n}. 300 IN A 127.0.0.1" for n in names))


def test_probe_finds_dovecot_on_tls_port(dns_server, resolver, make_dovecot, tmp_path):
    cert, key = make_test_cert(str(tmp_path / "tls"), cn="imap.probe1.test")
    dv = make_dovecot("old", ssl=(cert, key))
    _probe_zone(dns_server, "imap.probe1.test")
    d = detect("probe1.test", resolver=resolver, ca_file=cert,
               probe_ports=((dv.imaps_port, "tls"), (dv.imap_port, "starttls")))
    assert (d.step, d.host, d.port, d.security, d.protocol, d.preset) == \
        ("probe", "imap.probe1.test", dv.imaps_port, "tls", "imap", None)
    assert d.reasons[:2] == ("MX: probe1.test has no MX records",
                             "SRV: no _imaps._tcp/_imap._tcp/_pop3s._tcp/_pop3._tcp records for probe1.test")
    assert any(r.startswith(f"probe: imap.probe1.test:{dv.imaps_port} (tls): IMAP answered, CAPABILITY ")
               and "IMAP4rev1" in r for r in d.reasons)


def test_probe_falls_back_to_starttls(dns_server, resolver, make_dovecot, tmp_path):
    cert, key = make_test_cert(str(tmp_path / "tls"), cn="imap.probe2.test")
    dv = make_dovecot("old", ssl=(cert, key))
    _probe_zone(dns_server, "imap.probe2.test")
    closed = free_port()
    d = detect("probe2.test", resolver=resolver, ca_file=cert,
               probe_ports=((closed, "tls"), (dv.imap_port, "starttls")))
    assert (d.host, d.port, d.security) == ("imap.probe2.test", dv.imap_port, "starttls")
    assert f"probe: imap.probe2.test:{closed} (tls): 127.0.0.1: connection refused" in d.reasons


def test_probe_uses_mail_host_when_imap_host_missing(dns_server, resolver, make_dovecot, tmp_path):
    cert, key = make_test_cert(str(tmp_path / "tls"), cn="mail.probe3.test")
    dv = make_dovecot("old", ssl=(cert, key))
    _probe_zone(dns_server, "mail.probe3.test")
    d = detect("probe3.test", resolver=resolver, ca_file=cert, probe_ports=((dv.imaps_port, "tls"),))
    assert (d.host, d.port) == ("mail.probe3.test", dv.imaps_port)
    assert "probe: imap.probe3.test: no such host (NXDOMAIN)" in d.reasons


def test_probe_verifies_certificates(dns_server, resolver, make_dovecot, tmp_path):
    cert, key = make_test_cert(str(tmp_path / "tls"), cn="imap.probe4.test")
    dv = make_dovecot("old", ssl=(cert, key))
    _probe_zone(dns_server, "imap.probe4.test", "imap.probe4b.test")
    ports = ((dv.imaps_port, "tls"), (dv.imap_port, "starttls"))
    with pytest.raises(DetectionFailed) as ei:  # self-signed, not in the system's CAs
        detect("probe4.test", resolver=resolver, probe_ports=ports)
    bad = [s for s in ei.value.steps if "TLS certificate not accepted for imap.probe4.test" in s]
    assert len(bad) == 2, ei.value.steps  # implicit TLS and STARTTLS alike
    with pytest.raises(DetectionFailed) as ei:  # trusted, but issued for another name
        detect("probe4b.test", resolver=resolver, probe_ports=ports, ca_file=cert)
    assert any("TLS certificate not accepted for imap.probe4b.test" in s for s in ei.value.steps)


def test_probe_refuses_cleartext_only_imap(dns_server, resolver, make_dovecot):
    dv = make_dovecot("old")  # ssl = no: no STARTTLS on 143
    _probe_zone(dns_server, "imap.probe5.test")
    with pytest.raises(DetectionFailed) as ei:
        detect("probe5.test", resolver=resolver, probe_ports=((dv.imap_port, "starttls"),))
    assert f"probe: imap.probe5.test:{dv.imap_port} (starttls): IMAP without STARTTLS " \
           f"(cleartext only: not used)" in ei.value.steps


def test_imap_probe_returns_capabilities_after_tls(dns_server, resolver, make_dovecot, tmp_path):
    cert, key = make_test_cert(str(tmp_path / "tls"), cn="imap.probe6.test")
    dv = make_dovecot("old", ssl=(cert, key))
    _probe_zone(dns_server, "imap.probe6.test")
    caps = imap_probe("imap.probe6.test", dv.imap_port, "starttls", 5.0, resolver=resolver, ca_file=cert)
    words = caps.upper().split()
    assert "IMAP4REV1" in words and "STARTTLS" not in words  # asked again over TLS
    caps = imap_probe("imap.probe6.test", dv.imaps_port, "tls", 5.0, resolver=resolver, ca_file=cert)
    assert "IMAP4REV1" in caps.upper().split()


class _FakeServer:
    """One-shot TCP server on 127.0.0.1 that sends ``greeting`` and records what it receives."""

    def __init__(self, greeting: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2)
            conn.sendall(self.greeting)
            try:
                while chunk := conn.recv(4096):
                    self.received += chunk
                    if b"CAPABILITY" in self.received:
                        conn.sendall(b"* CAPABILITY IMAP4rev1 LOGINDISABLED\r\np1 OK done\r\n")
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize("greeting, why", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "not an IMAP server (greeting 'SSH-2.0-OpenSSH_9.2')"),
    (b"* BYE too many connections\r\n", "server refused the connection: * BYE too many connections"),
    (b"* OK IMAP ready\r\n", "IMAP without STARTTLS (cleartext only: not used)"),
])
def test_probe_reasons_for_odd_servers(dns_server, resolver, greeting, why):
    srv = _FakeServer(greeting)
    try:
        _probe_zone(dns_server, "imap.odd.test")
        with pytest.raises(ProbeError) as ei:
            imap_probe("imap.odd.test", srv.port, "starttls", 3.0, resolver=resolver)
        assert str(ei.value) == why
    finally:
        srv.close()
    assert b"LOGIN" not in srv.received.replace(b"LOGOUT", b"")  # never credentials


def test_injected_probe_errors_are_reasons(resolver):
    calls = []

    def probe(host, port, security, timeout):
        calls.append((host, port))
        if host.startswith("imap."):
            raise ProbeError("no such host (NXDOMAIN)", no_host=True)
        if port == 993:
            raise ConnectionResetError("reset by peer")
        return "IMAP4rev1 IDLE"

    d = detect("nothing.test", resolver=resolver, probe=probe)
    assert calls == [("imap.nothing.test", 993), ("mail.nothing.test", 993), ("mail.nothing.test", 143)]
    assert (d.step, d.host, d.port, d.security) == ("probe", "mail.nothing.test", 143, "starttls")
    assert "probe: mail.nothing.test:993 (tls): ConnectionResetError: reset by peer" in d.reasons


# ============================================================================ mailsyncctl detect

def _args(domain, srv, **kw):
    ns = dict(domain=domain, json=False, dns_server=f"127.0.0.1:{srv.port}", timeout=2.0,
              prefer="imap", ca_file=None)
    ns.update(kw)
    return argparse.Namespace(**ns)


def test_cli_found_text(dns_server, capsys):
    assert detect_cli.cmd_detect(_args("netease.test", dns_server)) == 0
    out = capsys.readouterr().out
    assert out.startswith("netease.test: IMAP imap.qiye.163.com:993 (implicit TLS)\n")
    assert "decided by: provider preset, matched on the domain's MX records" in out
    assert "MX: mx.qiye.163.com -> preset netease_qiye (NetEase Qiye Mail;" in out
    assert "provider: NetEase Qiye Mail / 网易企业邮箱 (preset netease_qiye)" in out
    assert "send_id: yes" in out and "max_connections: 5" in out
    assert "客户端授权密码" in out  # the auth hint, zh
    assert "    host: imap.qiye.163.com\n    port: 993\n    security: tls\n    protocol: imap\n" \
           "    preset: netease_qiye\n    send_id: true\n    max_connections: 5" in out


def test_cli_found_json(dns_server, capsys):
    assert detect_cli.cmd_detect(_args("srvprio.test", dns_server, json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["found"] is True and doc["step"] == "srv" and doc["preset"] is None
    assert doc["endpoint"] == {"host": "imap-main.srvprio.test", "port": 10993, "security": "tls",
                               "protocol": "imap"}
    assert doc["reasons"][0] == "MX: no preset matches mx.srvprio.test (10)"


def test_cli_not_found(dns_server, capsys):
    assert detect_cli.cmd_detect(_args("nothing.test", dns_server)) == 1
    out = capsys.readouterr().out
    assert out.startswith("nothing.test: no mail server found\n")
    for line in ("  MX: no preset matches mx.example.net (10)",
                 "  SRV: no _imaps._tcp/_imap._tcp/_pop3s._tcp/_pop3._tcp records for nothing.test",
                 "  probe: imap.nothing.test: no such host (NXDOMAIN)",
                 "  probe: mail.nothing.test: no such host (NXDOMAIN)"):
        assert line in out.splitlines()
    assert detect_cli.cmd_detect(_args("nothing.test", dns_server, json=True)) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["found"] is False and len(doc["steps"]) == 4


def test_cli_bad_input(dns_server, capsys):
    assert detect_cli.cmd_detect(_args("example.test", dns_server, dns_server="dns.example:53")) == 2
    assert "not an IP address" in capsys.readouterr().err
    assert detect_cli.cmd_detect(_args("nodots", dns_server)) == 2
    assert detect_cli.cmd_detect(_args("example.test", dns_server, timeout=0)) == 2
    assert detect_cli.cmd_detect(_args("example.test", dns_server, ca_file="/nonexistent.pem")) == 2
    assert "cannot load CA file" in capsys.readouterr().err


def test_cli_add_parser_registers_detect():
    ap = argparse.ArgumentParser(prog="mailsyncctl")
    sub = ap.add_subparsers(dest="cmd", required=True)
    detect_cli.add_parser(sub)
    args = ap.parse_args(["detect", "example.com", "--json", "--dns-server", "[::1]:5353", "--prefer", "pop3"])
    assert (args.cmd, args.domain, args.json, args.dns_server, args.prefer, args.timeout) == \
        ("detect", "example.com", True, "[::1]:5353", "pop3", 5.0)


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("::1", ("::1", 53)), ("[::1]:5353", ("::1", 5353)), ("[2001:db8::1]", ("2001:db8::1", 53)),
])
def test_parse_dns_server(text, expected):
    assert detect_cli.parse_dns_server(text) == expected


@pytest.mark.parametrize("text", ["localhost", "1.2.3.4:0", "1.2.3.4:x", "[::1", "[::1]x"])
def test_parse_dns_server_rejects(text):
    with pytest.raises(ValueError):
        detect_cli.parse_dns_server(text)


def test_cli_runs_as_module(dns_server):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "mailsyncd.cli.detect", "hichina.test",
                        "--dns-server", f"127.0.0.1:{dns_server.port}", "--timeout", "2"],
                       capture_output=True, text=True, cwd=root, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hichina.test: IMAP imap.qiye.aliyun.com:993 (implicit TLS)")
