"""Pure-logic tests for mailsyncd.config (no network)."""

import copy
import os
import shutil
from pathlib import Path

import pytest

from mailsyncd.config import (
    Config, ConfigError, Domain, Endpoint, FolderRules, SyncSettings, UnknownDomain,
    load_config, parse_config, summary,
)

REPO = Path(__file__).resolve().parent.parent
D = 'domains."example.com"'


@pytest.fixture
def cfgdir(tmp_path):
    (tmp_path / "master.secret").write_text("s3cret-pw\n")
    (tmp_path / "ca.pem").write_text("not really a cert\n")
    return tmp_path


def base():
    return {
        "domains": {
            "example.com": {
                "source": {"host": "127.0.0.1", "port": 10143, "security": "none", "protocol": "imap"},
                "target": {"host": "127.0.0.1", "port": 11143, "security": "none", "auth": "master",
                           "master_user": "master", "master_password_file": "./master.secret"},
                "folders": {"layout": "mirror"},
            }
        }
    }


def patched(changes):
    """base() with changes applied: {"a.b.c": value}; value DELETE removes the key."""
    data = base()
    for dotted, value in changes.items():
        *parents, last = dotted.split("|")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return data


DELETE = object()
SRC = "domains|example.com|source|"
TGT = "domains|example.com|target|"
FLD = "domains|example.com|folders|"


def parse(cfgdir, data):
    return parse_config(data, path=str(cfgdir / "mailsyncd.yaml"))


def errors_of(cfgdir, data):
    with pytest.raises(ConfigError) as ei:
        parse(cfgdir, data)
    assert str(ei.value) == "\n".join(ei.value.errors)
    return ei.value.errors


# ---------------------------------------------------------------- defaults

def test_defaults(cfgdir):
    data = {"domains": {"Example.COM": {"source": {"host": "old.example.net"},
                                        "target": {"host": "new.example.net"}}}}
    cfg = parse(cfgdir, data)
    assert isinstance(cfg, Config)
    assert cfg.path == str(cfgdir / "mailsyncd.yaml")
    assert cfg.state_dir == str(cfgdir / "state")
    assert cfg.log_level == "info"
    assert cfg.sync == SyncSettings(4, 200, 2 * 1024**2, 5, 1.0, 3600.0)
    assert list(cfg.domains) == ["example.com"]
    d = cfg.domains["example.com"]
    assert isinstance(d, Domain) and d.name == "example.com"
    assert d.source == Endpoint(host="old.example.net", port=993, security="tls", protocol="imap",
                                username="{address}", verify_tls=True, ca_file=None, timeout=60.0,
                                dangerously_allow_cleartext=False, auth="same", master_user=None,
                                master_password_file=None, master_separator="*", send_id=True)
    assert d.target.auth == "same" and d.target.port == 993
    assert d.folders == FolderRules("mirror", "", (), (), True)
    assert d.sync == cfg.sync
    with pytest.raises(TypeError):
        cfg.domains["x.org"] = d  # read-only mapping
    with pytest.raises(AttributeError):
        cfg.log_level = "debug"  # frozen


@pytest.mark.parametrize("protocol,security,port", [
    ("imap", "tls", 993), ("imap", "starttls", 143), ("imap", "none", 143),
    ("pop3", "tls", 995), ("pop3", "starttls", 110), ("pop3", "none", 110),
])
def test_default_port(cfgdir, protocol, security, port):
    cfg = parse(cfgdir, patched({SRC + "port": DELETE, SRC + "protocol": protocol, SRC + "security": security}))
    assert cfg.domains["example.com"].source.port == port


def test_full_settings(cfgdir):
    data = patched({
        "state_dir": "/var/lib/mailsyncd", "log_level": "debug",
        SRC + "username": "{local}", SRC + "ca_file": "ca.pem", SRC + "timeout": 5,
        SRC + "verify_tls": False, SRC + "send_id": False,
        TGT + "auth": "master_separator", TGT + "master_separator": "%",
        "domains|example.com|folders": {"layout": "under", "prefix": "Migrated/Old",
                                        "map": {"Sent Items": "Sent", "INBOX/Old": "Archive/Old"},
                                        "exclude": ["Junk", "Public/*"], "special_use": False,
                                        "namespaces": ["personal", "shared"],
                                        "special_use_names": {"sent": "Sent Items"}},
    })
    cfg = parse(cfgdir, data)
    assert cfg.state_dir == "/var/lib/mailsyncd" and cfg.log_level == "debug"
    d = cfg.domains["example.com"]
    assert d.source.ca_file == str(cfgdir / "ca.pem") and os.path.isabs(d.source.ca_file)
    assert d.source.timeout == 5.0 and isinstance(d.source.timeout, float)
    assert (d.source.verify_tls, d.source.send_id) == (False, False)
    assert d.source.login_name("Bob@Example.com") == "Bob"
    assert d.target.login_name("bob@example.com") == "bob@example.com"
    assert d.target.master_password_file == str(cfgdir / "master.secret")
    assert d.target.master_separator == "%"
    assert d.folders == FolderRules("under", "Migrated/Old",
                                    (("Sent Items", "Sent"), ("INBOX/Old", "Archive/Old")),
                                    ("Junk", "Public/*"), False, ("personal", "shared"),
                                    (("sent", "Sent Items"),))


# ---------------------------------------------------------------- validation errors

@pytest.mark.parametrize("changes,path,fragment", [
    ({SRC + "port": "abc"}, f"{D}.source.port", "must be an integer 1-65535 (got 'abc')"),
    ({SRC + "port": 0}, f"{D}.source.port", "1-65535"),
    ({SRC + "port": 70000}, f"{D}.source.port", "1-65535"),
    ({SRC + "port": True}, f"{D}.source.port", "1-65535"),
    ({SRC + "host": DELETE}, f"{D}.source.host", "required"),
    ({SRC + "host": "my host"}, f"{D}.source.host", "host name"),
    ({SRC + "security": "ssl"}, f"{D}.source.security", "'tls', 'starttls', 'none'"),
    ({SRC + "protocol": "smtp"}, f"{D}.source.protocol", "'imap', 'pop3'"),
    ({TGT + "protocol": "pop3"}, f"{D}.target.protocol", "IMAP"),
    ({SRC + "username": "{user}"}, f"{D}.source.username", "{address}, {local}, {domain}"),
    ({SRC + "username": ""}, f"{D}.source.username", "template"),
    ({SRC + "verify_tls": "no"}, f"{D}.source.verify_tls", "true or false"),
    ({SRC + "ca_file": "missing.pem"}, f"{D}.source.ca_file", "does not exist"),
    ({SRC + "timeout": 0}, f"{D}.source.timeout", "> 0"),
    ({SRC + "timeout": "fast"}, f"{D}.source.timeout", "> 0"),
    ({SRC + "auth": "master"}, f"{D}.source.auth", "'same'"),
    ({SRC + "master_user": "m"}, f"{D}.source.master_user", "only valid on the target"),
    ({TGT + "auth": "root"}, f"{D}.target.auth", "'master', 'master_separator', 'same'"),
    ({TGT + "master_user": DELETE}, f"{D}.target.master_user", "required with auth: master"),
    ({TGT + "master_password_file": DELETE}, f"{D}.target.master_password_file", "required with auth: master"),
    ({TGT + "auth": "master_separator", TGT + "master_user": DELETE}, f"{D}.target.master_user",
     "required with auth: master_separator"),
    ({TGT + "auth": "same"}, f"{D}.target.master_user", "not used with auth: same"),
    ({TGT + "master_separator": "*"}, f"{D}.target.master_separator", "only used with auth: master_separator"),
    ({TGT + "master_password_file": "nope.secret"}, f"{D}.target.master_password_file", "does not exist"),
    ({TGT + "master_user": 7}, f"{D}.target.master_user", "non-empty string"),
    ({FLD + "layout": "flat"}, f"{D}.folders.layout", "'mirror', 'under'"),
    ({FLD + "layout": "under"}, f"{D}.folders.prefix", "required with layout: under"),
    ({FLD + "layout": "under", FLD + "prefix": ""}, f"{D}.folders.prefix", "non-empty"),
    ({FLD + "layout": "under", FLD + "prefix": "/Migrated"}, f"{D}.folders.prefix", "'/'"),
    ({FLD + "layout": "under", FLD + "prefix": "Migrated/"}, f"{D}.folders.prefix", "'/'"),
    ({FLD + "prefix": "Migrated"}, f"{D}.folders.prefix", "only used with layout: under"),
    ({FLD + "map": ["Sent"]}, f"{D}.folders.map", "must be a mapping"),
    ({FLD + "map": {"Sent": ""}}, f"{D}.folders.map.Sent", "non-empty"),
    ({FLD + "map": {"Sent": None}}, f"{D}.folders.map.Sent", "non-empty"),
    ({FLD + "map": {2020: "Archive"}}, f'{D}.folders.map."2020"', "non-empty"),
    ({FLD + "exclude": "Junk"}, f"{D}.folders.exclude", "list of non-empty strings"),
    ({FLD + "exclude": ["Junk", 3]}, f"{D}.folders.exclude", "list of non-empty strings"),
    ({FLD + "special_use": 1}, f"{D}.folders.special_use", "true or false"),
    ({FLD + "namespaces": ["personal", "public"]}, f"{D}.folders.namespaces", "unknown namespace 'public'"),
    ({FLD + "namespaces": ["shared"]}, f"{D}.folders.namespaces", "must include personal"),
    ({FLD + "namespaces": "personal"}, f"{D}.folders.namespaces", "list of non-empty strings"),
    ({FLD + "special_use_names": ["Sent"]}, f"{D}.folders.special_use_names", "must be a mapping"),
    ({FLD + "special_use_names": {"spam": "Junk"}}, f"{D}.folders.special_use_names.spam", "unknown role"),
    ({FLD + "special_use_names": {"sent": "/Sent"}}, f"{D}.folders.special_use_names.sent", "'/'"),
    ({"domains|example.com|folders": "mirror"}, f"{D}.folders", "must be a mapping"),
    ({"domains|example.com|source": DELETE}, f"{D}.source", "required"),
    ({"domains|example.com|target": DELETE}, f"{D}.target", "required"),
    ({"domains": {}}, "domains", "non-empty mapping"),
    ({"domains": ["example.com"]}, "domains", "non-empty mapping"),
    ({"domains": DELETE}, "domains", "required"),
    ({"log_level": "verbose"}, "log_level", "'debug', 'info', 'warning', 'error'"),
    ({"state_dir": ""}, "state_dir", "non-empty string"),
    ({"sync|connections": 17}, "sync.connections", "1-16"),
    ({"sync|connections": 0}, "sync.connections", "1-16"),
    ({"sync|batch_messages": 5001}, "sync.batch_messages", "1-5000"),
    ({"sync|batch_bytes": 1024}, "sync.batch_bytes", "64KiB to 1GiB"),
    ({"sync|batch_bytes": "2GiB"}, "sync.batch_bytes", "64KiB to 1GiB"),
    ({"sync|batch_bytes": "16MB"}, "sync.batch_bytes", "16MiB"),
    ({"sync|batch_bytes": "lots"}, "sync.batch_bytes", "size"),
    ({"sync|max_message_size": "2GiB"}, "sync.max_message_size", "64KiB to 1GiB"),
    ({"domains|example.com|sync|max_message_size": "big"}, 'domains."example.com".sync.max_message_size', "size"),
    ({"sync|recent_first": -1}, "sync.recent_first", "integer 0-36500"),
    ({"domains|example.com|sync|recent_first": "30d"}, 'domains."example.com".sync.recent_first', "integer"),
    ({"sync|retries": -1}, "sync.retries", "0-100"),
    ({"sync|retry_backoff": 0}, "sync.retry_backoff", "> 0"),
    ({"sync|retry_backoff": 61}, "sync.retry_backoff", "<= 60"),
    ({"sync|flag_rescan": -5}, "sync.flag_rescan", "> 0"),
    ({"sync": [1]}, "sync", "must be a mapping"),
    ({"domains|example.com|sync|connections": 99}, f"{D}.sync.connections", "1-16"),
])
def test_validation_error(cfgdir, changes, path, fragment):
    errors = errors_of(cfgdir, patched(changes))
    hits = [e for e in errors if e.startswith(path + ": ")]
    assert hits, errors
    assert any(fragment in e for e in hits), errors


@pytest.mark.parametrize("name", ["exa mple.com", "bob@example.com", "example..com", "example.com.",
                                  ".example.com", "-bad.com", ""])
def test_bad_domain_name(cfgdir, name):
    data = base()
    data["domains"] = {name: data["domains"]["example.com"]}
    errors = errors_of(cfgdir, data)
    assert any(e.startswith(f'domains."{name}": ') and "domain name" in e for e in errors), errors


def test_duplicate_domain_after_lowercasing(cfgdir):
    data = base()
    data["domains"]["EXAMPLE.com"] = copy.deepcopy(data["domains"]["example.com"])
    errors = errors_of(cfgdir, data)
    assert any(e.startswith('domains."EXAMPLE.com": duplicate') for e in errors), errors


def test_multiple_errors_reported_together(cfgdir):
    errors = errors_of(cfgdir, patched({
        SRC + "port": "abc", TGT + "master_user": DELETE, "log_level": "loud",
        "sync|connections": 0, FLD + "layout": "flat",
    }))
    for path in (f"{D}.source.port", f"{D}.target.master_user", "log_level",
                 "sync.connections", f"{D}.folders.layout"):
        assert any(e.startswith(path + ": ") for e in errors), (path, errors)
    assert len(errors) == 5, errors


@pytest.mark.parametrize("changes,path,fragment", [
    ({SRC + "hots": "x"}, f"{D}.source.hots", "unknown key (did you mean 'host'?)"),
    ({TGT + "master_usr": "x"}, f"{D}.target.master_usr", "did you mean 'master_user'?"),
    ({"stat_dir": "x"}, "stat_dir", "did you mean 'state_dir'?"),
    ({"sync|conections": 3}, "sync.conections", "did you mean 'connections'?"),
    ({FLD + "excludes": []}, f"{D}.folders.excludes", "did you mean 'exclude'?"),
    ({"domains|example.com|foldrs": {}}, f"{D}.foldrs", "did you mean 'folders'?"),
    ({"zzz": 1}, "zzz", "unknown key (allowed: state_dir, log_level, sync, domains, listen, tls, frontdoor, scheduler, dns, web, admin, notice, database)"),
])
def test_unknown_key(cfgdir, changes, path, fragment):
    errors = errors_of(cfgdir, patched(changes))
    assert any(e.startswith(path + ": ") and fragment in e for e in errors), errors


@pytest.mark.parametrize("data,fragment", [(None, "empty"), ([1, 2], "mapping"), ("text", "mapping")])
def test_top_level_not_a_mapping(cfgdir, data, fragment):
    errors = errors_of(cfgdir, data)
    assert len(errors) == 1 and errors[0].startswith(str(cfgdir / "mailsyncd.yaml")) and fragment in errors[0]


# ---------------------------------------------------------------- cleartext / loopback

@pytest.mark.parametrize("host,override,ok", [
    ("127.0.0.1", False, True),
    ("127.0.0.5", False, True),
    ("::1", False, True),
    ("localhost", False, True),
    ("LOCALHOST", False, True),
    ("10.0.0.1", False, False),
    ("192.168.1.1", False, False),
    ("mail.example.com", False, False),
    ("localhost.example.com", False, False),
    ("10.0.0.1", True, True),
    ("mail.example.com", True, True),
])
@pytest.mark.parametrize("side", ["source", "target"])
def test_cleartext_only_on_loopback(cfgdir, host, override, ok, side):
    prefix = SRC if side == "source" else TGT
    changes = {prefix + "host": host, prefix + "security": "none"}
    if override:
        changes[prefix + "dangerously_allow_cleartext"] = True
    if ok:
        ep = getattr(parse(cfgdir, patched(changes)).domains["example.com"], side)
        assert ep.dangerously_allow_cleartext is override
    else:
        errors = errors_of(cfgdir, patched(changes))
        [err] = [e for e in errors if e.startswith(f"{D}.{side}.security: ")]
        assert "cleartext" in err and "passwords" in err and "dangerously_allow_cleartext" in err


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_encrypted_to_remote_host_is_fine(cfgdir, security):
    parse(cfgdir, patched({SRC + "host": "imap.163.com", SRC + "security": security}))


# ---------------------------------------------------------------- sync settings

@pytest.mark.parametrize("value,expected", [
    (65536, 65536), ("64KiB", 65536), ("512KiB", 512 * 1024), ("512K", 512 * 1024),
    ("16MiB", 16 * 1024**2), ("16M", 16 * 1024**2), ("16m", 16 * 1024**2), ("1GiB", 1024**3),
    ("1G", 1024**3), (" 32 MiB ", 32 * 1024**2), ("1048576", 1048576),
])
def test_batch_bytes_sizes(cfgdir, value, expected):
    assert parse(cfgdir, patched({"sync|batch_bytes": value})).sync.batch_bytes == expected


def test_recent_first(cfgdir):
    assert parse(cfgdir, patched({})).sync.recent_first == 30
    assert parse(cfgdir, patched({"sync|recent_first": 0})).sync.recent_first == 0


def test_max_message_size(cfgdir):
    assert parse(cfgdir, patched({})).sync.max_message_size == 64 * 1024**2
    assert parse(cfgdir, patched({"sync|max_message_size": "16MiB"})).sync.max_message_size == 16 * 1024**2


def test_per_domain_sync_override(cfgdir):
    data = patched({"sync|connections": 4, "sync|retries": 9,
                    "domains|example.com|sync|connections": 8,
                    "domains|example.com|sync|batch_bytes": "1MiB"})
    data["domains"]["other.org"] = copy.deepcopy(data["domains"]["example.com"])
    del data["domains"]["other.org"]["sync"]
    cfg = parse(cfgdir, data)
    assert cfg.sync == SyncSettings(connections=4, retries=9)
    assert cfg.domains["example.com"].sync == SyncSettings(connections=8, retries=9, batch_bytes=1024**2)
    assert cfg.domains["other.org"].sync == cfg.sync


# ---------------------------------------------------------------- lookups

@pytest.fixture
def two_domains(cfgdir):
    data = base()
    data["domains"]["B.com"] = copy.deepcopy(data["domains"]["example.com"])
    return parse(cfgdir, data)


@pytest.mark.parametrize("address,domain", [
    ("bob@example.com", "example.com"), ("Bob@EXAMPLE.COM", "example.com"),
    ("x@b.com", "b.com"), ('"a@b"@Example.Com', "example.com"),
])
def test_domain_for(two_domains, address, domain):
    assert two_domains.domain_for(address).name == domain


def test_domain_for_unknown(two_domains):
    with pytest.raises(UnknownDomain) as ei:
        two_domains.domain_for("bob@X.org")
    assert isinstance(ei.value, LookupError)
    assert str(ei.value) == "no domain 'x.org' in config (known: b.com, example.com)"


@pytest.mark.parametrize("address", ["bob", "@example.com", "bob@", "", None])
def test_domain_for_not_an_address(two_domains, address):
    with pytest.raises(ValueError, match="not an email address"):
        two_domains.domain_for(address)


def test_login_name_templates():
    ep = Endpoint("h", 993, "tls", "imap", username="{local}+{domain}/{address}")
    assert ep.login_name("bob@example.com") == "bob+example.com/bob@example.com"
    with pytest.raises(ValueError):
        ep.login_name("bob")


# ---------------------------------------------------------------- secrets

def test_master_password_read_and_never_leaked(cfgdir):
    cfg = parse(cfgdir, base())
    target = cfg.domains["example.com"].target
    assert target.read_master_password() == "s3cret-pw"
    assert "s3cret-pw" not in repr(cfg) and "s3cret-pw" not in summary(cfg)


def test_master_password_errors_do_not_leak(cfgdir):
    secret = cfgdir / "master.secret"
    target = parse(cfgdir, base()).domains["example.com"].target
    secret.write_bytes(b"\xffs3cret-pw")
    with pytest.raises(ConfigError) as ei:
        target.read_master_password()
    assert "s3cret" not in str(ei.value) and ei.value.__cause__ is None and ei.value.__suppress_context__
    secret.unlink()
    with pytest.raises(ConfigError, match="master.secret"):
        target.read_master_password()


# ---------------------------------------------------------------- files

def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(str(tmp_path / "nope.yaml"))
    assert str(tmp_path / "nope.yaml") in str(ei.value)


def test_yaml_syntax_error_has_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("state_dir: ./state\ndomains:\n  example.com:\n    source: {host: [oops\n")
    with pytest.raises(ConfigError) as ei:
        load_config(str(p))
    [err] = ei.value.errors
    assert err.startswith(f"{p}, line ") and "column" in err and "invalid YAML" in err


def test_yaml_syntax_error_line_number(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("state_dir: ./state\nlog_level: info\n  oops: 1\n")
    with pytest.raises(ConfigError) as ei:
        load_config(str(p))
    assert f"{p}, line 3, column" in str(ei.value)


def test_load_relative_path_resolves_against_file(cfgdir, monkeypatch):
    (cfgdir / "sub").mkdir()
    _example_files(cfgdir / "sub")
    shutil.copy(REPO / "etc" / "mailsyncd.yaml", cfgdir / "sub" / "c.yaml")
    monkeypatch.chdir(cfgdir)
    cfg = load_config("sub/c.yaml")
    assert cfg.path == str(cfgdir / "sub" / "c.yaml")
    assert cfg.state_dir == str(cfgdir / "sub" / "state")
    assert cfg.domains["example.com"].target.master_password_file == str(cfgdir / "sub" / "master.secret")


def _example_files(d) -> None:
    (d / "master.secret").write_text("pw\n")
    (d / "tls").mkdir()
    (d / "tls" / "fullchain.pem").write_text("cert\n")
    (d / "tls" / "privkey.pem").write_text("key\n")


def test_example_config_loads(tmp_path):
    shutil.copy(REPO / "etc" / "mailsyncd.yaml", tmp_path / "mailsyncd.yaml")
    _example_files(tmp_path)
    cfg = load_config(str(tmp_path / "mailsyncd.yaml"))
    assert (str(cfg.listen.imap), str(cfg.listen.imaps)) == ("127.0.0.1:1143", "127.0.0.1:1993")
    assert cfg.tls.cert == str(tmp_path / "tls" / "fullchain.pem")
    assert cfg.frontdoor.verifier_ttl == 300 and not cfg.frontdoor.allow_plaintext_login
    d = cfg.domains["example.com"]
    assert (d.source.host, d.source.port, d.source.security, d.source.protocol) == ("127.0.0.1", 10143, "none", "imap")
    assert (d.target.port, d.target.auth, d.target.master_user) == (11143, "master", "master")
    assert d.folders.layout == "mirror"
    assert summary(cfg) == ("example.com: source 127.0.0.1:10143/none/imap -> "
                            "target 127.0.0.1:11143/none/auth=master; folders mirror")


def test_example_config_commented_examples_are_valid(tmp_path):
    # The commented-out examples in etc/mailsyncd.yaml must stay valid when enabled.
    text = (REPO / "etc" / "mailsyncd.yaml").read_text()
    text = text.replace("      layout: mirror", "      # layout: mirror")
    for line in ("layout: under", 'prefix: "Migrated"', "map:", '  "Sent Items": "Sent"',
                 '  "INBOX/Old": "Archive/Old"', "exclude:", '  - "Junk"', '  - "Public/*"'):
        assert f"# {line}" in text, line
        text = text.replace(f"# {line}", line, 1)
    text = text.replace("    # sync:\n    #   connections: 4", "    sync:\n      connections: 4")
    (tmp_path / "c.yaml").write_text(text)
    _example_files(tmp_path)
    d = load_config(str(tmp_path / "c.yaml")).domains["example.com"]
    assert d.folders == FolderRules("under", "Migrated", (("Sent Items", "Sent"), ("INBOX/Old", "Archive/Old")),
                                    ("Junk", "Public/*"), True)
    assert d.sync.connections == 4


def test_example_config_fails_without_secret():
    with pytest.raises(ConfigError) as ei:
        load_config(str(REPO / "etc" / "mailsyncd.yaml"))
    assert ei.value.errors[0] == (f"{D}.target.master_password_file: file does not exist: "
                                  f"{REPO / 'etc' / 'master.secret'} (got './master.secret')")
    assert [e.split(":")[0] for e in ei.value.errors[1:]] == ["tls.cert", "tls.key"]


def test_duplicate_key_is_an_error(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("state_dir: ./s\ndomains:\n  a.com: {}\n  a.com: {}\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert "line 4" in str(e.value) and "duplicate key 'a.com'" in str(e.value)


@pytest.mark.parametrize("listen,frontdoor,expect", [
    ({"imap": "0.0.0.0:143"}, {"allow_plaintext_login": True},
     "frontdoor.allow_plaintext_login: only allowed when listen.imap is a loopback address"),
    ({"imap": "localhost"}, None, 'listen.imap: must be "HOST:PORT"'),
    ({"imap": "127.0.0.1:70000"}, None, "listen.imap: port must be 1-65535"),
    ({"imaps": "[::1]:993"}, None, "listen.imaps: needs a tls: {cert: FILE, key: FILE} section"),
    ({"imap": "127.0.0.1:1143"}, None, "listen.imap: needs a tls: section for STARTTLS"),
    ({"imap": "127.0.0.1:1143"}, {"allow_plaintext_login": True, "idle_timeout": 60},
     "frontdoor.idle_timeout: must be at least 1800"),
    ({"imap": "127.0.0.1:1143"}, {"allow_plaintext_login": True, "verifer_ttl": 1},
     "frontdoor.verifer_ttl: unknown key (did you mean 'verifier_ttl'?)"),
    ({"imap": "127.0.0.1:1143"}, {"allow_plaintext_login": True, "copy_on_open": -1},
     "frontdoor.copy_on_open: must be an integer 0-100000"),
    ({"imap": "127.0.0.1:1143"}, {"allow_plaintext_login": True, "copy_on_open_deadline": 0},
     "frontdoor.copy_on_open_deadline: must be a number > 0 and <= 60"),
])
def test_front_door_settings_are_checked(tmp_path, listen, frontdoor, expect):
    doc = {"domains": {"a.com": {"source": {"host": "127.0.0.1", "security": "none"},
                                 "target": {"host": "127.0.0.1", "security": "none"}}}, "listen": listen}
    if frontdoor is not None:
        doc["frontdoor"] = frontdoor
    with pytest.raises(ConfigError) as ei:
        parse_config(doc, path=str(tmp_path / "c.yaml"))
    assert any(e.startswith(expect) for e in ei.value.errors), ei.value.errors


def test_front_door_loopback_plaintext_is_allowed(tmp_path):
    doc = {"domains": {"a.com": {"source": {"host": "127.0.0.1", "security": "none"},
                                 "target": {"host": "127.0.0.1", "security": "none"}}},
           "listen": {"imap": "[::1]:1143"}, "frontdoor": {"allow_plaintext_login": True, "verifier_ttl": 5}}
    cfg = parse_config(doc, path=str(tmp_path / "c.yaml"))
    assert (cfg.listen.imap.host, cfg.listen.imap.port) == ("::1", 1143)
    assert str(cfg.listen.imap) == "[::1]:1143" and cfg.frontdoor.verifier_ttl == 5


def _doc(**extra):
    doc = {"domains": {"a.com": {"source": {"host": "127.0.0.1", "security": "none"},
                                 "target": {"host": "127.0.0.1", "security": "none"}}}}
    doc.update(extra)
    return doc


def test_scheduler_and_cutover_settings(tmp_path):
    doc = _doc(scheduler={"pass_interval": 60, "max_accounts": 10})
    doc["domains"]["a.com"]["cutover"] = "2026-12-31T18:00:00+08:00"
    doc["domains"]["a.com"]["source"]["max_connections"] = 3
    cfg = parse_config(doc, path=str(tmp_path / "c.yaml"))
    assert cfg.scheduler.pass_interval == 60 and cfg.scheduler.max_accounts == 10
    assert cfg.scheduler.max_accounts_per_domain == 4
    d = cfg.domains["a.com"]
    assert d.cutover == 1798711200.0 and d.source.max_connections == 3


@pytest.mark.parametrize("value,expect", [
    ("2026-12-31T18:00:00", "needs a time zone"),
    ("next friday", "must be an ISO 8601 time"),
    (12, "must be an ISO 8601 time"),
])
def test_cutover_time_is_checked(tmp_path, value, expect):
    doc = _doc()
    doc["domains"]["a.com"]["cutover"] = value
    with pytest.raises(ConfigError) as ei:
        parse_config(doc, path=str(tmp_path / "c.yaml"))
    assert any(e.startswith('domains."a.com".cutover: ' + expect) for e in ei.value.errors), ei.value.errors


def test_scheduler_typo_is_named(tmp_path):
    with pytest.raises(ConfigError) as ei:
        parse_config(_doc(scheduler={"pass_intervall": 5}), path=str(tmp_path / "c.yaml"))
    assert ei.value.errors == ["scheduler.pass_intervall: unknown key (did you mean 'pass_interval'?)"]


def test_paths_may_use_the_systemd_credentials_directory(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "master").write_text("pw\n")
    doc = _doc()
    doc["domains"]["a.com"]["target"].update(auth="master", master_user="m",
                                             master_password_file="${CREDENTIALS_DIRECTORY}/master")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as ei:
        parse_config(doc, path=str(tmp_path / "c.yaml"))
    assert "uses $CREDENTIALS_DIRECTORY, which only the systemd service has" in str(ei.value)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = parse_config(doc, path=str(tmp_path / "c.yaml"))
    assert cfg.domains["a.com"].target.master_password_file == str(creds / "master")


@pytest.mark.parametrize("changes,path,fragment", [
    ({"web|hostnames": ["https://migrate.example.com"]}, "web.hostnames", "is not a host name"),
    ({"web|hostnames": ["migrate.example.com:443"]}, "web.hostnames", "no scheme, port or path"),
    ({"web|hostnames": "migrate.example.com"}, "web.hostnames", "must be a list"),
    ({"web|request_timeout": 0}, "web.request_timeout", "must be a number > 0"),
    ({"web|request_timeout": 7200}, "web.request_timeout", "<= 3600"),
    ({"web|max_connections": 0}, "web.max_connections", "integer 1-"),
    ({"web|max_connections_per_ip": "many"}, "web.max_connections_per_ip", "integer 1-"),
])
def test_web_listener_keys(cfgdir, changes, path, fragment):
    errors = errors_of(cfgdir, patched(changes))
    assert any(e.startswith(path + ": ") and fragment in e for e in errors), errors


def test_web_listener_defaults_and_values(cfgdir):
    web = parse(cfgdir, patched({})).web
    assert (web.hostnames, web.request_timeout, web.max_connections, web.max_connections_per_ip) == ((), 30.0, 1024, 64)
    web = parse(cfgdir, patched({"web|hostnames": ["Migrate.Example.com."], "web|request_timeout": 5,
                                 "web|max_connections": 10, "web|max_connections_per_ip": 2})).web
    assert (web.hostnames, web.request_timeout, web.max_connections, web.max_connections_per_ip) == (
        ("migrate.example.com",), 5.0, 10, 2)


def test_frontdoor_budget_keys_and_their_earlier_names(cfgdir):
    data = base()
    data["frontdoor"] = {"ip_burst": 7, "user_refill": 120, "user_hourly": 50, "preauth_deadline": 30,
                         "max_preauth_per_ip": 4, "max_pending_per_ip": 2, "source_wait": 3}
    fd = parse(cfgdir, data).frontdoor
    assert (fd.network_burst, fd.user_network_refill, fd.user_hourly) == (7, 120, 50)
    assert (fd.preauth_deadline, fd.max_preauth_per_ip, fd.max_pending_per_ip, fd.source_wait) == (30, 4, 2, 3)
    data["frontdoor"] = {"ip_burst": 7, "network_burst": 8, "max_preauth_per_ip": 0}
    errors = errors_of(cfgdir, data)
    assert any(e.startswith("frontdoor.ip_burst: renamed to frontdoor.network_burst") for e in errors), errors
    assert any(e.startswith("frontdoor.max_preauth_per_ip: ") for e in errors), errors
