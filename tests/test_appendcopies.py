"""What APPEND costs in memory: each message is sent as it is, never copied (issue 16).

imaplib's APPEND mapped line ends with a regular expression (one piece per line, then joined:
several times the message's size), imapclient's MULTIAPPEND copied each message twice.
Measured in-process with tracemalloc: deterministic, unlike RSS or time.
"""

from __future__ import annotations

import datetime as dt
import tracemalloc

from mailsyncd.config import Endpoint
from mailsyncd.net.imap import connect as open_conn
from seed import connect

A = "alice@example.com"
MIB = 1024**2


def _message(n: int, tag: bytes) -> bytes:
    line = b"x" * 70 + b"\r\n"
    return b"Subject: " + tag + b"\r\n\r\n" + line * (n // len(line))


def _peak_over(fn) -> int:
    """Bytes allocated at the peak of fn() above what was allocated before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def _target(pair):
    ep = Endpoint(host="127.0.0.1", port=pair.target.imap_port, security="none", protocol="imap",
                  dangerously_allow_cleartext=True)
    c = open_conn(ep, role="target")
    c.login(*pair.target_account(A)[2:])
    c.capabilities()        # cached before measuring
    return c


def test_append_and_multiappend_send_messages_without_copying_them(dovecot_pair):
    one, two, three = _message(4 * MIB, b"one"), _message(2 * MIB, b"two"), _message(2 * MIB, b"three")
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    c = _target(dovecot_pair)
    try:
        single = _peak_over(lambda: c.append("INBOX", one, ("\\Seen",), when))
        multi = _peak_over(lambda: c.multiappend("INBOX", [{"msg": two, "flags": ("\\Flagged",), "date": when},
                                                           {"msg": three}]))
    finally:
        c.logout()
    assert single < MIB // 4, f"APPEND of a 4 MiB message allocated {single} bytes"
    assert multi < MIB // 4, f"MULTIAPPEND of 2 x 2 MiB allocated {multi} bytes"
    with connect(*dovecot_pair.target_account(A)) as check:
        check.select_folder("INBOX")
        got = check.fetch(check.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
    assert [got[u][b"BODY[]"] for u in sorted(got)] == [one, two, three]
    assert [tuple(f for f in got[u][b"FLAGS"] if f != b"\\Recent") for u in sorted(got)] == \
        [(b"\\Seen",), (b"\\Flagged",), ()]
    assert got[min(got)][b"INTERNALDATE"].timestamp() == when.timestamp()


def test_append_still_maps_bare_line_ends_to_crlf(dovecot_pair):
    """A message with bare LF or CR goes through imaplib's mapping as before (the target gets CRLF)."""
    c = _target(dovecot_pair)
    try:
        c.append("INBOX", b"Subject: lf\n\nbody\rmore\n", ())
    finally:
        c.logout()
    with connect(*dovecot_pair.target_account(A)) as check:
        check.select_folder("INBOX")
        (body,) = [d[b"BODY[]"] for d in check.fetch(check.search("ALL"), ["BODY.PEEK[]"]).values()]
    assert body == b"Subject: lf\r\n\r\nbody\r\nmore\r\n"


def test_crlf_only():
    from mailsyncd.net.imapguard import crlf_only
    assert crlf_only(b"a\r\nb\r\n") and crlf_only(b"")
    assert not crlf_only(b"a\nb\r\n") and not crlf_only(b"a\rb\r\n") and not crlf_only(b"a\r\n\r")
