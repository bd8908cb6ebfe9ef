"""Pure logic of the front door's login: throttling and the target login state machine."""

from __future__ import annotations

import base64

import pytest

from mailsyncd.auth.throttle import Limits, Throttle
from mailsyncd.imap.targetlogin import (
    Done,
    Failed,
    ResponseReader,
    Send,
    StartTLS,
    TargetLogin,
)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_network_bucket_bounds_checks_over_all_users_and_refills():
    clock = Clock()
    th = Throttle(Limits(network_burst=3, network_refill=60, user_network_burst=100, user_hourly=10000), clock)
    allowed = sum(th.take("10.0.0.1/32", f"u{i}@x", known=False) is None for i in range(1000))
    assert allowed == 3
    assert th.take("10.0.0.2/32", "u1@x", known=False) is None      # other networks are not affected
    clock.t += 60
    assert th.take("10.0.0.1/32", "u1@x", known=False) is None
    assert th.take("10.0.0.1/32", "u1@x", known=False) == "network"


def test_user_network_bucket_and_refund_on_success():
    clock = Clock()
    th = Throttle(Limits(network_burst=100, user_network_burst=2, user_network_refill=300), clock)
    assert th.take("1.1.1.1/32", "a@x", known=False) is None
    th.give_back("1.1.1.1/32", "a@x", known=False)                # a right password costs nothing
    assert th.take("1.1.1.1/32", "a@x", known=False) is None
    assert th.take("1.1.1.1/32", "a@x", known=False) is None
    assert th.take("1.1.1.1/32", "a@x", known=False) == "user+network"
    assert th.take("2.2.2.2/32", "a@x", known=False) is None      # another network: its own budget


def test_user_circuit_breaker_spares_known_networks():
    clock = Clock()
    th = Throttle(Limits(user_hourly=3), clock)
    assert sum(th.take(f"10.0.0.{i}/32", "a@x", known=False) is None for i in range(100)) == 3
    assert th.take("10.0.1.1/32", "a@x", known=False) == "user"
    assert th.take("192.0.2.1/32", "a@x", known=True) is None      # the user's own network
    clock.t += 1200                                                # 3 an hour: one more
    assert th.take("10.0.1.1/32", "a@x", known=False) is None


def test_failure_delay_doubles_to_a_cap_and_resets():
    clock = Clock()
    th = Throttle(Limits(delay_base=2, delay_max=15), clock)
    assert [th.failed("9.9.9.9") for _ in range(6)] == [2, 4, 8, 15, 15, 15]
    th.succeeded("9.9.9.9", "a@x")
    assert th.failed("9.9.9.9") == 2
    clock.t += 1000
    assert th.failed("9.9.9.9") == 2                          # a quiet spell ends the streak


def _run(login: TargetLogin, *server: bytes) -> list:
    out = []
    for chunk in server:
        out += login.receive(chunk)
    return out


def test_master_login_with_sasl_ir_and_id():
    lg = TargetLogin(mode="master", user="a@x", secret="m-pw", master_user="master",
                     id_fields={"x-originating-ip": "10.1.2.3"})
    acts = _run(lg, b"* OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN] ready\r\n")
    sent = b"".join(a.data for a in acts if isinstance(a, Send))
    assert b'P1 ID ("x-originating-ip" "10.1.2.3")\r\n' in sent
    blob = base64.b64encode(b"a@x\0master\0m-pw")
    assert b"P2 AUTHENTICATE PLAIN " + blob + b"\r\n" in sent
    acts = _run(lg, b'* ID NIL\r\nP1 OK ID done\r\nP2 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n')
    assert acts == [Done("IMAP4rev1 IDLE MOVE", b"")]
    assert "m-pw" not in repr(lg)


def test_starttls_then_continuation_then_capability_command():
    lg = TargetLogin(mode="master", user="a@x", secret="s", master_user="m", starttls=True)
    assert _run(lg, b"* OK hi\r\n") == [Send(b"P1 STARTTLS\r\n")]
    acts = _run(lg, b"P1 OK go\r\n")
    assert isinstance(acts[0], StartTLS) and acts[1] == Send(b"P2 AUTHENTICATE PLAIN\r\n")
    assert _run(lg, b"+ \r\n") == [Send(base64.b64encode(b"a@x\0m\0s") + b"\r\n")]
    assert _run(lg, b"P2 OK done\r\n") == [Send(b"P3 CAPABILITY\r\n")]
    assert _run(lg, b"* CAPABILITY IMAP4rev1 IDLE\r\nP3 OK\r\n") == [Done("IDLE IMAP4rev1", b"")]


@pytest.mark.parametrize("answer,kind", [
    (b"P1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", "auth"),
    (b"P1 NO [UNAVAILABLE] Temporary failure\r\n", "unavailable"),
    (b"* BYE shutting down\r\n", "unavailable"),
    (b"garbage\r\n", "protocol"),
])
def test_failures_are_classified(answer, kind):
    lg = TargetLogin(mode="same", user="a@x", secret="pw")
    acts = _run(lg, b"* OK ready\r\n")
    assert acts == [Send(b'P1 LOGIN "a@x" "pw"\r\n')]
    res = _run(lg, answer)
    assert len(res) == 1 and isinstance(res[0], Failed) and res[0].kind == kind
    assert "pw\"" not in res[0].detail


def test_non_ascii_password_uses_plain_not_login():
    lg = TargetLogin(mode="same", user="a@x", secret="pässwort")
    (act,) = _run(lg, b"* OK [CAPABILITY IMAP4rev1 SASL-IR] hi\r\n")
    assert act.data.startswith(b"P1 AUTHENTICATE PLAIN ")


def test_master_separator_uses_login_with_user_star_master():
    lg = TargetLogin(mode="master_separator", user="a@x", secret="mpw", master_user="admin", separator="*")
    assert _run(lg, b"* OK hi\r\n") == [Send(b'P1 LOGIN "a@x*admin" "mpw"\r\n')]


def test_hostile_target_cannot_make_us_buffer_forever():
    lg = TargetLogin(mode="same", user="a@x", secret="pw")
    acts = _run(lg, b"* OK " + b"x" * 70000)
    assert isinstance(acts[-1], Failed) and acts[-1].kind == "protocol"
    rr = ResponseReader()
    rr.feed(b"* ID ({3}\r\nabc)\r\n")
    assert rr.next() == b"* ID ({3}\r\nabc)"


def test_the_target_login_passes_the_one_command_guard():
    lg = TargetLogin(mode="master_separator", user="a@x", secret="mpw", master_user="admin",
                     id_fields={"x-originating-ip": "10.1.2.3\r\nZ1 CREATE PWNED"})
    actions = lg.receive(b"* OK ready\r\n")
    assert b"PWNED" not in b"".join(a.data for a in actions if isinstance(a, Send))
    assert any(isinstance(a, Failed) and "CR, LF or NUL" in a.detail for a in actions), actions


def test_a_user_name_with_crlf_goes_as_sasl_plain_never_on_a_line():
    lg = TargetLogin(mode="master_separator", user="a@x\r\nZ1 DELETE INBOX", secret="mpw", master_user="admin")
    sent = b"".join(a.data for a in _run(lg, b"* OK [CAPABILITY IMAP4rev1 SASL-IR] ready\r\n")
                    if isinstance(a, Send))
    assert b"DELETE" not in sent and sent.count(b"\r\n") == 1 and b"AUTHENTICATE PLAIN " in sent
