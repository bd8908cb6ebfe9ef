"""One classifier of server refusals (mailsyncd.errors.classify), and the login paths that use it."""

from __future__ import annotations

import pytest

from mailsyncd.auth import source
from mailsyncd.config import parse_config
from mailsyncd.errors import AUTH, PERMANENT, TEMPORARY, THROTTLED, append_waits, classify, looks_throttled
from mailsyncd.imap.targetlogin import Failed, TargetLogin


@pytest.mark.parametrize("text, kind", [
    # response codes decide first, whatever the words say
    ("NO [AUTHENTICATIONFAILED] Invalid credentials, please try again", AUTH),
    ("-ERR [AUTH] too many bad passwords", AUTH),
    ("NO [UNAVAILABLE] Internal error occurred. Refer to server log for more information.", TEMPORARY),
    ("NO [SERVERBUG] oops", TEMPORARY),
    ("-ERR [SYS/TEMP] mail system busy", TEMPORARY),
    ("NO [LIMIT] Too many commands", THROTTLED),
    ("NO [INUSE] mailbox in use", THROTTLED),
    ("-ERR [IN-USE] maildrop already locked", THROTTLED),
    ("-ERR [LOGIN-DELAY] wait 300 seconds", THROTTLED),
    ("NO [TOOBIG] message too large", PERMANENT),
    ("-ERR [SYS/PERM] account disabled, try again later", PERMANENT),
    (b"P1 NO [LIMIT] slow down", THROTTLED),
    # an unknown code decides nothing: the words do
    ("NO [ALERT] Too many simultaneous connections. (Failure)", THROTTLED),
    ("folder [Gmail]/All Mail: connection lost during login", TEMPORARY),
    ("Maximum number of connections from user+IP exceeded (mail_max_userip_connections=10)", THROTTLED),
    ("Account exceeded command or bandwidth limits", THROTTLED),
    ("-ERR maildrop locked", TEMPORARY),
    ("Please try again later", TEMPORARY),
    ("NO [ALERT] Please log in via your web browser", PERMANENT),
    ("NO Authentication failed.", PERMANENT),
])
def test_codes_first_then_words(text, kind):
    assert classify(text) == kind


def test_throttling_signs_for_the_scheduler():
    assert looks_throttled("NO [UNAVAILABLE] try later") and looks_throttled("Too many connections")
    assert not looks_throttled("NO [AUTHENTICATIONFAILED] too many failures")
    # the target's quota is not the source limiting us
    assert not looks_throttled("append refused: NO [OVERQUOTA] Quota exceeded (mailbox for user is full)")


def _endpoint():
    cfg = parse_config({"state_dir": "/nonexistent", "domains": {"example.com": {
        "source": {"host": "127.0.0.1", "port": 1, "security": "none"},
        "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}}, path="/nonexistent/c.yaml")
    return cfg.domains["example.com"].source


def test_a_source_that_says_wrong_password_and_try_again_means_wrong_password():
    ep = _endpoint()
    assert source._refused(ep, "[AUTHENTICATIONFAILED] Invalid credentials, try again") == source.WRONG
    assert source._refused(ep, "-ERR [AUTH] Authentication failed, please try again") == source.WRONG
    assert source._refused(ep, "[UNAVAILABLE] backend down") == source.UNAVAILABLE
    assert source._refused(ep, "Maximum number of connections from user+IP exceeded") == source.UNAVAILABLE
    assert source._refused(ep, "Authentication failed.") == source.WRONG


def _target_answer(line: bytes) -> Failed:
    t = TargetLogin(mode="same", user="alice@example.com", secret="s3cret")
    t.receive(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n")
    out = t.receive(line)
    assert len(out) == 1 and isinstance(out[0], Failed), out
    return out[0]


def test_a_target_that_is_throttling_is_unavailable_not_a_refused_login():
    assert _target_answer(b"P1 NO Maximum number of connections from user+IP exceeded\r\n").kind == "unavailable"
    assert _target_answer(b"P1 NO [UNAVAILABLE] Temporary failure\r\n").kind == "unavailable"
    assert _target_answer(b"P1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n").kind == "auth"
    assert _target_answer(b"P1 NO [AUTHENTICATIONFAILED] Try again.\r\n").kind == "auth"


@pytest.mark.parametrize(("words", "waits"), [
    ("[OVERQUOTA] Quota exceeded (mailbox for user is full)", True),
    ("[UNAVAILABLE] Internal error occurred", True),
    ("[SERVERBUG] oops", True),
    ("[INUSE] Mailbox is locked", True),
    ("[TOOBIG] Message too large", False),
    ("[LIMIT] Mail too large", False),          # Dovecot: one message over quota_max_mail_size
    ("Invalid arguments", False),
])
def test_an_append_refusal_either_waits_for_a_later_pass_or_skips_the_message(words, waits):
    assert append_waits(words) is waits
