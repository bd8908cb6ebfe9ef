"""Provider quirks as data (mailsyncd/providers/presets.yaml, quirks.py): pure checks, no servers."""

from __future__ import annotations

import imaplib
from types import SimpleNamespace

import pytest
import yaml
from imapclient import exceptions as imapexc

from mailsyncd.providers import quirks
from mailsyncd.config import ConfigError, load_config
from mailsyncd.imap.folders import Mailbox, plan_folders
from mailsyncd.providers import PRESETS_PATH, PresetError, load_presets
from mailsyncd.net.imap import _login_error
from mailsyncd.text import server_words

QQ_URL = "http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256"
# The providers' own words, as quoted in presets.yaml (each with where it was seen).
APP_PASSWORD_REFUSALS = {
    "qq": [f"Please using authorized code to login. More information at {QQ_URL}",
           f"Login Fail. Please enter your authorization code to login. More information in {QQ_URL}",
           f"请使用授权码登录。详情请看: {QQ_URL}"],
    "google": ["[ALERT] Application-specific password required: https://support.google.com/accounts/answer/185833 "
               "(Failure)"],
}
# Refusals that do not say which password: never a hint.
GENERIC_REFUSALS = [
    "Login fail. Account is abnormal, service is not open, password is incorrect, login frequency limited, "
    "or system is busy.",
    "[AUTHENTICATIONFAILED] Invalid credentials (Failure)",
    "[AUTHENTICATIONFAILED] Authentication failed.",
    "LOGIN Login error password error",
]


def test_every_shipped_preset_has_valid_quirks():
    presets = load_presets()
    for key, p in presets.items():
        ap = p.app_password
        if ap is not None:
            assert ap.name_en and ap.name_zh, key
            assert ap.help_url is None or ap.help_url.startswith(("http://", "https://")), key
            for rx in ap.refusal_patterns:
                assert not rx.search(""), key
        assert all(s and "//" not in s for s in p.skip_folders), key
    # the quirks the issue names are in the data
    assert presets["qq"].app_password.name_zh == "授权码"
    assert presets["netease_qiye"].app_password.name_zh == "客户端授权密码"
    assert presets["netease_163"].send_id and presets["netease_126"].send_id and presets["netease_qiye"].send_id
    assert "[Gmail]/All Mail" in presets["google"].skip_folders


@pytest.mark.parametrize("key", sorted(APP_PASSWORD_REFUSALS))
def test_the_cited_refusals_match_their_preset_only(key):
    presets = load_presets()
    for text in APP_PASSWORD_REFUSALS[key]:
        assert presets[key].app_password.refusal_matches(text), text
        for other in presets.values():
            if other.key != key and other.app_password is not None:
                assert not other.app_password.refusal_matches(text), (other.key, text)


def test_generic_refusals_give_no_hint():
    for p in load_presets().values():
        if p.app_password is not None:
            for text in GENERIC_REFUSALS:
                assert not p.app_password.refusal_matches(text), (p.key, text)


def _presets_with(tmp_path, key: str, **quirk_changes) -> str:
    doc = yaml.safe_load(PRESETS_PATH.read_text(encoding="utf-8"))
    doc["presets"][key]["quirks"].update(quirk_changes)
    path = tmp_path / "presets.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("change, expected", [
    ({"app_password": {"name_en": "x", "name_zh": "y", "refusal_patterns": ["(unclosed"]}},
     "preset 'qq': quirks.app_password.refusal_patterns[0]: '(unclosed' is not a valid regular expression"),
    ({"app_password": {"name_en": "x", "name_zh": "y", "refusal_patterns": ["(?i).*"]}},
     "preset 'qq': quirks.app_password.refusal_patterns[0]: '(?i).*' matches an empty text"),
    ({"app_password": {"name_en": "x", "name_zh": "y", "refusal_patterns": "授权码"}},
     "preset 'qq': quirks.app_password.refusal_patterns: must be a list of regular expressions"),
    ({"app_password": {"name_en": "x", "name_zh": "y", "refusal_patterns": [], "url": "https://a"}},
     "preset 'qq': quirks.app_password: unknown key(s) url"),
    ({"app_password": {"name_en": "x\x1b]0;BYE", "name_zh": "y", "refusal_patterns": []}},
     "preset 'qq': quirks.app_password.name_en: must be one short line"),
    ({"app_password": {"name_en": "x", "name_zh": "授权码" * 21, "refusal_patterns": []}},
     "preset 'qq': quirks.app_password.name_zh: must be one short line"),
    ({"app_password": {"name_en": "x", "name_zh": "y", "help_url": "javascript:alert(1)", "refusal_patterns": []}},
     "preset 'qq': quirks.app_password.help_url: must be an http(s) URL"),
    ({"app_password": ["授权码"]}, "preset 'qq': quirks.app_password: must be a mapping"),
    ({"skip_folders": "[Gmail]/All Mail"}, "preset 'qq': quirks.skip_folders: must be a list of folder names"),
    ({"skip_folders": ["[Gmail]//All Mail"]}, "preset 'qq': quirks.skip_folders[0]: must be a folder name"),
    ({"skip_foldrs": []}, "preset 'qq': quirks: unknown key(s) skip_foldrs"),
])
def test_a_bad_quirk_is_a_clear_error(tmp_path, change, expected):
    path = _presets_with(tmp_path, "qq", **change)
    with pytest.raises(PresetError) as e:
        load_presets(path)
    assert any(expected in err for err in e.value.errors), e.value.errors
    assert all(err.startswith(path + ": ") for err in e.value.errors)


# -- config: how a source gets its preset ---------------------------------------------------------

def _config(tmp_path, source: dict, target_extra: dict | None = None) -> str:
    src = {"host": "127.0.0.1", "port": 1143, "security": "none", **source}
    tgt = {"host": "127.0.0.1", "port": 2143, "security": "none", **(target_extra or {})}
    doc = {"state_dir": str(tmp_path / "state"), "domains": {"example.com": {"source": src, "target": tgt}}}
    path = tmp_path / "mailsyncd.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return str(path)


def test_source_preset_brings_its_quirks(tmp_path):
    src = load_config(_config(tmp_path, {"preset": "netease_163"})).domains["example.com"].source
    assert (src.preset, src.send_id, src.max_connections) == ("netease_163", True, 5)
    src = load_config(_config(tmp_path, {"preset": "google", "max_connections": 3})).domains["example.com"].source
    assert (src.preset, src.max_connections) == ("google", 3)        # what the admin wrote wins
    assert quirks.skip_folders(src) == load_presets()["google"].skip_folders
    # the provider's own server name is enough
    src = load_config(_config(tmp_path, {"host": "imap.qq.com", "security": "tls"})).domains["example.com"].source
    assert src.preset == "qq" and quirks.app_password(src)[1].name_zh == "授权码"
    # any other host: no preset, no quirks
    src = load_config(_config(tmp_path, {})).domains["example.com"].source
    assert src.preset is None and quirks.skip_folders(src) == () and quirks.app_password(src) is None
    assert quirks.imap_refusal(src) == "Authentication failed."


@pytest.mark.parametrize("source, target, expected", [
    ({"preset": "nosuch"}, None, 'domains."example.com".source.preset: not a known provider preset (known: aliyun,'),
    ({}, {"preset": "qq"}, 'domains."example.com".target.preset: only valid on the source'),
    ({"preset": "netease_qiye", "send_id": False}, None,
     'domains."example.com".source.send_id: false, but preset \'netease_qiye\' (NetEase Qiye Mail) requires IMAP ID'),
])
def test_bad_preset_settings_name_the_key(tmp_path, source, target, expected):
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, source, target))
    assert any(err.startswith(expected) for err in e.value.errors), e.value.errors


def test_refusal_texts_for_the_client():
    src = SimpleNamespace(preset="qq")
    line = quirks.imap_refusal(src)
    assert line == ("QQ Mail wants an authorization code (授权码), not the account password "
                    f"(https://service.mail.qq.com/cgi-bin/help?subtype=1&&id=28&&no=1001256). / "
                    "QQ邮箱需要使用授权码登录，而不是邮箱密码。")
    assert "\r" not in line and "\n" not in line
    zh = quirks.web_refusal(src, "zh", "{provider}拒绝了这个密码：需要使用{name_zh}登录。")
    assert zh.startswith("QQ邮箱拒绝了这个密码：需要使用授权码登录。 QQ邮箱客户端登录不能使用QQ密码")
    assert quirks.wants_app_password(src, APP_PASSWORD_REFUSALS["qq"][0])
    assert not quirks.wants_app_password(SimpleNamespace(preset=None), APP_PASSWORD_REFUSALS["qq"][0])
    assert not quirks.wants_app_password(src, "")


# -- the source's words, as the login error carries them --------------------------------------------

def test_server_words_decode_utf8_and_gbk():
    assert server_words("请使用授权码登录".encode()) == "请使用授权码登录"
    assert server_words("请使用授权码登录".encode("gbk")) == "请使用授权码登录"      # Tencent's SMTP did this
    assert server_words(b"\xff\xfe plain") != ""


@pytest.mark.parametrize("raw", ["请使用授权码登录。详情请看".encode("gbk"), "请使用授权码登录。".encode(),
                                 b"Please using authorized code to login.", b"a 'quoted' \"word\" \\ back"])
def test_login_error_keeps_the_servers_words(raw):
    # imapclient turns imaplib's NO into LoginError(str(error(bytes))): the repr of the bytes
    e = imapexc.LoginError(str(imaplib.IMAP4.error(raw)))
    err = _login_error("source h:1", "alice@example.com", e)
    assert err.server_text == server_words(raw)
    assert str(err) == f"source h:1: login refused for alice@example.com: {server_words(raw)}"


def test_login_error_escapes_control_characters():
    err = _login_error("source h:1", "u", imapexc.LoginError(str(imaplib.IMAP4.error(b"no\x1b[2Jway\r\n"))))
    assert "\x1b" not in str(err) and "\\x1b[2Jway" in str(err)


# -- skip_folders in the folder plan ---------------------------------------------------------------

def test_plan_skips_the_presets_folders():
    from mailsyncd.config import FolderRules
    src = [Mailbox("INBOX", "/", ()), Mailbox("[Gmail]", "/", ("\\Noselect",)),
           Mailbox("[Gmail]/All Mail", "/", ()), Mailbox("[Gmail]/Important", "/", ("\\Important",)),
           Mailbox("[Gmail]/Sent Mail", "/", ("\\Sent",)), Mailbox("Work", "/", ())]
    tgt = [Mailbox("INBOX", "/", ())]
    plans, skipped = plan_folders(src, tgt, FolderRules(), skip=load_presets()["google"].skip_folders)
    assert {p.path for p in plans} == {"INBOX", "[Gmail]/Sent Mail", "Work"}
    reasons = {s.path: s.reason for s in skipped}
    assert reasons["[Gmail]/All Mail"] == reasons["[Gmail]/Important"] == \
        "the provider's preset skips it (quirks.skip_folders)"
    # without the quirk, Important would be copied (All Mail is known by name as a virtual view)
    plans, skipped = plan_folders(src, tgt, FolderRules())
    assert "[Gmail]/Important" in {p.path for p in plans}
    assert {s.path: s.reason for s in skipped}["[Gmail]/All Mail"].startswith("virtual folder")
