"""A hostile (authenticated) client through the real front door to a real Dovecot pair: what the relay gives
the client is byte for byte what the new server says to the same commands sent to it directly, whatever the
client splits, pipelines, hides in literals or names; and a flood of SELECTs of made-up folders starts only a
bounded number of passes."""

from __future__ import annotations

import re
import socket
import time

import pytest
from test_frontdoor import A, Raw, old_pw
from test_openfolder import _migrated, _timings

pytestmark = pytest.mark.timeout(240)

TRAP = b"Subject: x\r\n\r\nz SELECT Trap\r\ny EXAMINE {4}\r\n"
SCRIPT = (b"h1 APPEND NoSuchBox {%d+}\r\n" % len(TRAP) + TRAP + b"\r\n"
          + b'h2 SELECT "*"\r\nh3 EXAMINE "a%b"\r\nh4 SELECT "../../etc"\r\nh5 EXAMINE {5+}\r\nINBOX (CONDSTORE)\r\n'
          + b'h6 SELECT "a\\\\b"\r\nh7 SELECT a\0b\r\nh8 IDLE\r\nDONE\r\nh9 NOOP\r\n')
FLOOD = b"".join(b"f%d SELECT Made-up-%d\r\n" % (i, i) for i in range(40))


def _normal(lines: list[bytes]) -> list[bytes]:
    # what two sessions on one server may differ in: timings, \Recent counts
    return [ln for ln in _timings(lines) if not re.match(rb"\* \d+ RECENT$", ln)]


def _session(sock_port: int, login: bytes, *, bytewise: bool) -> list[bytes]:
    r = Raw(sock_port)
    assert r.cmd(b"a", b"LOGIN " + login)[-1].startswith(b"a OK")
    r.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if bytewise:                       # one byte per TCP segment, as far as the kernels allow
        for i in range(len(SCRIPT)):
            r.send(SCRIPT[i:i + 1])
            time.sleep(0.001)
    else:
        r.send(SCRIPT)
    out = r.until(b"h9")
    r.send(FLOOD)                      # pipelined, in one piece
    out += r.until(b"f39")
    out += r.cmd(b"z", b"LOGOUT")
    r.close()
    return out


def test_the_relay_hands_over_exactly_what_the_server_says_and_a_select_flood_is_bounded(tmp_path, dovecot_pair):
    pair = dovecot_pair
    with _migrated(tmp_path, pair, frontdoor={"copy_on_open_deadline": 1.0}) as d:
        passes_before = d.log().count("event=pass_start")
        t0 = time.monotonic()
        relayed = _session(d.imap_port, A.encode() + b" " + old_pw(pair).encode(), bytewise=True)
        took = time.monotonic() - t0
        log = d.log()
    _, port, user, pw = pair.target_account(A)
    direct = _session(port, user.encode() + b" " + pw.encode(), bytewise=False)
    assert _normal(relayed) == _normal(direct)
    assert any(ln.startswith(b"h5 OK") for ln in relayed) and any(ln.startswith(b"h1 NO") for ln in relayed)
    # the APPEND's literal was passed over: "Trap" was never taken for a folder someone opened
    assert "folder='Trap'" not in log and "folder='INBOX' verb=EXAMINE" in log, log[-3000:]
    # forty made-up names: the passes they may start are bounded (scheduler.UNKNOWN_LOOKS), the holds too
    assert log.count("event=pass_start") - passes_before <= 7, log[-5000:]
    assert took < 30, took
    assert "Traceback" not in log
