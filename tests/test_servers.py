"""The real IMAP servers of the test harness, as a client sees them.

For each server: log in, NAMESPACE, LIST, CREATE a folder with a Chinese name (modified UTF-7 on
the wire), APPEND a message with flags, a keyword and an INTERNALDATE, FETCH it back.  The
servers' actual answers (NAMESPACE, separator, special-use, CAPABILITY) are pinned here: they
are what the namespace mapping has to cope with (Debian 12: Courier-IMAP 5.0.13, Cyrus IMAP
3.6.1, Dovecot 2.3.19).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import imapclient
import pytest

from conftest import SOURCE_USERS

USER = "alice@example.com"
CHINESE = "测试"
CHINESE_UTF7 = b"&bUuL1Q-"
MESSAGE = (b"From: a@example.com\r\nTo: alice@example.com\r\nSubject: probe\r\n"
           b"Message-ID: <probe-1@example.com>\r\n\r\nhello\r\n")
WHEN = datetime.datetime(2020, 2, 3, 4, 5, 6, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
FLAGS = (b"\\Seen", b"\\Flagged", b"$Forwarded", b"Project1")

COURIER_CAPS = {b"IMAP4REV1", b"UIDPLUS", b"CHILDREN", b"NAMESPACE", b"THREAD=ORDEREDSUBJECT",
                b"THREAD=REFERENCES", b"SORT", b"QUOTA", b"IDLE", b"AUTH=PLAIN", b"ACL",
                b"ACL2=UNION", b"ENABLE", b"UTF8=ACCEPT"}
CYRUS_CAPS = {
    b"ACL", b"ANNOTATE-EXPERIMENT-1", b"APPENDLIMIT=4294967295", b"BINARY", b"CATENATE",
    b"CHILDREN", b"COMPRESS=DEFLATE", b"CONDSTORE", b"CREATE-SPECIAL-USE", b"DIGEST=SHA1",
    b"ENABLE", b"ESEARCH", b"ESORT", b"ID", b"IDLE", b"IMAP4REV1", b"LIST-EXTENDED",
    b"LIST-METADATA", b"LIST-MYRIGHTS", b"LIST-STATUS", b"LITERAL+", b"LOGINDISABLED",
    b"MAILBOX-REFERRALS", b"METADATA", b"MOVE", b"MULTIAPPEND", b"NAMESPACE", b"NO_ATOMIC_RENAME",
    b"OBJECTID", b"PREVIEW", b"QRESYNC", b"QUOTA", b"RIGHTS=KXTEN", b"SAVEDATE", b"SCAN",
    b"SEARCH=FUZZY", b"SORT", b"SORT=DISPLAY", b"SORT=MODSEQ", b"SORT=UID", b"SPECIAL-USE",
    b"STATUS=SIZE", b"THREAD=ORDEREDSUBJECT", b"THREAD=REFERENCES", b"THREAD=REFS", b"UIDPLUS",
    b"UNSELECT", b"URLAUTH", b"URLAUTH=BINARY", b"WITHIN", b"X-CREATEDMODSEQ", b"X-QUOTA=MESSAGE",
    b"X-QUOTA=STORAGE", b"X-QUOTA=X-ANNOTATION-STORAGE", b"X-QUOTA=X-NUM-FOLDERS",
    b"X-REPLICATION", b"X-SIEVE-MAILBOX", b"XLIST", b"XMOVE"}
DOVECOT_CAPS = {
    b"BINARY", b"CATENATE", b"CHILDREN", b"CONDSTORE", b"CONTEXT=SEARCH", b"ENABLE", b"ESEARCH",
    b"ESORT", b"I18NLEVEL=1", b"ID", b"IDLE", b"IMAP4REV1", b"LIST-EXTENDED", b"LIST-STATUS",
    b"LITERAL+", b"LOGIN-REFERRALS", b"MOVE", b"MULTIAPPEND", b"NAMESPACE", b"NOTIFY", b"PREVIEW",
    b"PREVIEW=FUZZY", b"QRESYNC", b"SASL-IR", b"SAVEDATE", b"SEARCHRES", b"SNIPPET=FUZZY", b"SORT",
    b"SORT=DISPLAY", b"SPECIAL-USE", b"STATUS=SIZE", b"THREAD=ORDEREDSUBJECT",
    b"THREAD=REFERENCES", b"THREAD=REFS", b"UIDPLUS", b"UNSELECT", b"URL-PARTIAL", b"WITHIN"}


@dataclass
class Expected:
    greeting: bytes  # start of the text after "* OK [CAPABILITY ...] "
    capabilities: set[bytes]  # after login
    namespace: tuple  # as imapclient parses it: (personal, other users, shared)
    inbox_flags: tuple  # LIST flags of INBOX in a new account
    sent_flags: tuple  # LIST flags of "<prefix>Sent" after a plain CREATE
    recent_in_fetch: bool  # FLAGS of a fresh APPEND include \Recent


EXPECTED = {
    "courier": Expected(
        b"Courier-IMAP ready.", COURIER_CAPS,
        ((("INBOX.", "."),), None, (("#shared.", "."), ("shared.", "."))),
        (b"\\Unmarked", b"\\HasNoChildren"),  # Courier also says whether INBOX has new mail
        (b"\\HasNoChildren",), recent_in_fetch=False),
    "cyrus": Expected(
        b"cyrus-test Cyrus IMAP 3.6.1", CYRUS_CAPS,
        ((("INBOX.", "."),), (("user.", "."),), (("", "."),)),
        (b"\\HasNoChildren",),
        (b"\\HasNoChildren",), recent_in_fetch=True),
    "cyrus_unixhierarchysep": Expected(
        b"cyrus-test Cyrus IMAP 3.6.1", CYRUS_CAPS,
        ((("INBOX/", "/"),), (("user/", "/"),), (("", "/"),)),
        (b"\\HasNoChildren",),
        (b"\\HasNoChildren",), recent_in_fetch=True),
    "cyrus_altnamespace": Expected(
        b"cyrus-test Cyrus IMAP 3.6.1", CYRUS_CAPS,
        ((("", "/"),), (("Other Users/", "/"),), (("Shared Folders/", "/"),)),
        (b"\\HasNoChildren",),
        (b"\\HasNoChildren",), recent_in_fetch=True),
    "dovecot_dot": Expected(
        b"Dovecot (Debian) ready.", DOVECOT_CAPS,
        ((("INBOX.", "."),), None, None),
        (b"\\HasNoChildren",),
        (b"\\HasNoChildren", b"\\Sent"), recent_in_fetch=True),
    "dovecot_shared": Expected(
        b"Dovecot (Debian) ready.", DOVECOT_CAPS | {b"ACL", b"RIGHTS=TEXK"},
        ((("", "/"),), (("shared/", "/"),), None),
        (b"\\HasNoChildren",),
        (b"\\HasNoChildren", b"\\Sent"), recent_in_fetch=True),
}


@pytest.fixture(params=sorted(EXPECTED))
def server(request):
    """(name, port) of a freshly started server of each kind."""
    name = request.param
    if name == "courier":
        s = request.getfixturevalue("courier_server")
    elif name == "cyrus":
        s = request.getfixturevalue("cyrus_server")
    elif name == "cyrus_unixhierarchysep":
        s = request.getfixturevalue("make_cyrus")("cyrus-unix", unixhierarchysep=True)
    elif name == "cyrus_altnamespace":
        s = request.getfixturevalue("make_cyrus")("cyrus-alt", unixhierarchysep=True, altnamespace=True)
    elif name == "dovecot_dot":
        s = request.getfixturevalue("dovecot_dot_server")
    else:
        s = request.getfixturevalue("dovecot_shared_server")
    return name, s.imap_port


def _login(port: int, user: str = USER) -> imapclient.IMAPClient:
    c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10)
    c.normalise_times = False  # INTERNALDATE with its zone
    c.login(user, SOURCE_USERS[user])
    return c


def test_login_namespace_create_append_fetch(server):
    name, port = server
    exp = EXPECTED[name]
    c = _login(port)
    try:
        assert exp.greeting in c.welcome
        assert set(c.capabilities()) == exp.capabilities
        ns = c.namespace()
        assert (ns.personal, ns.other, ns.shared) == exp.namespace
        prefix, sep = ns.personal[0]
        assert c.list_folders() == [(exp.inbox_flags, sep.encode(), "INBOX")]

        folder = prefix + CHINESE
        c.create_folder(folder)
        c.create_folder(prefix + "Sent")
        c.folder_encode = False  # the name on the wire: modified UTF-7
        raw = {n: flags for flags, _, n in c.list_folders()}
        c.folder_encode = True
        assert prefix.encode() + CHINESE_UTF7 in raw
        assert raw[prefix.encode() + b"Sent"] == exp.sent_flags

        uid_answer = c.append(folder, MESSAGE, flags=FLAGS, msg_time=WHEN)
        assert b"APPENDUID" in uid_answer
        c.select_folder(folder, readonly=True)
        (msg,) = c.fetch(c.search("ALL"), ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "BODY.PEEK[]"]).values()
        assert msg[b"BODY[]"] == MESSAGE
        assert msg[b"RFC822.SIZE"] == len(MESSAGE)
        # the same instant; none of them keeps the zone (they answer in the server's zone)
        assert msg[b"INTERNALDATE"] == WHEN
        flags = set(msg[b"FLAGS"])
        assert (b"\\Recent" in flags) == exp.recent_in_fetch
        assert flags - {b"\\Recent"} == set(FLAGS)
    finally:
        c.logout()


def test_cyrus_special_use_needs_create_special_use(cyrus_server):
    """Cyrus marks a folder special-use only when asked (CREATE ... (USE (\\Junk))) and says so
    only with LIST ... RETURN (SPECIAL-USE)."""
    c = _login(cyrus_server.imap_port)
    try:
        imap = c._imap  # imaplib underneath: imapclient has no CREATE-SPECIAL-USE / LIST RETURN
        typ, _ = imap._simple_command("CREATE", '"INBOX.Junk"', "(USE (\\Junk))")
        assert typ == "OK"
        c.create_folder("INBOX.Spam")
        typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
        assert typ == "OK"
        listed = imap._untagged_response(typ, data, "LIST")[1]
        assert b'(\\HasNoChildren \\Junk) "." INBOX.Junk' in listed
        assert b'(\\HasNoChildren) "." INBOX.Spam' in listed
    finally:
        c.logout()


def test_dovecot_shared_namespace_lists_the_other_users_inbox(dovecot_shared_server):
    """mail_shared_explicit_inbox: bob sees alice's INBOX as "shared/alice@example.com/INBOX"
    once she shares it (SETACL), with its messages."""
    alice = _login(dovecot_shared_server.imap_port)
    try:
        alice.append("INBOX", MESSAGE)
        alice.setacl("INBOX", "bob@example.com", "lr")
    finally:
        alice.logout()
    bob = _login(dovecot_shared_server.imap_port, "bob@example.com")
    try:
        assert bob.list_folders("", "shared/*") == [
            ((b"\\Noselect", b"\\HasChildren"), b"/", "shared/alice@example.com"),
            ((b"\\HasNoChildren",), b"/", "shared/alice@example.com/INBOX")]
        assert bob.select_folder("shared/alice@example.com/INBOX", readonly=True)[b"EXISTS"] == 1
    finally:
        bob.logout()


def test_private_server_refuses_a_wrong_password(courier_server, cyrus_server):
    for port in (courier_server.imap_port, cyrus_server.imap_port):
        c = imapclient.IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10)
        with pytest.raises(imapclient.exceptions.LoginError):
            c.login(USER, "not-the-password")
        c.shutdown()


def test_stop_leaves_no_process_and_frees_the_port(make_courier, make_cyrus):
    import socket

    for server in (make_courier("c"), make_cyrus("y")):
        port = server.imap_port
        sid = server._supervisor.pid
        server.stop()
        assert not server.running
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert _session_members(sid) == []


def _session_members(sid: int) -> list[int]:
    import os

    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            fields = data[data.rindex(b")") + 2:].split()
            if int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
                out.append(int(entry))
    return out


def test_missing_private_prefix_fails_with_a_clear_message(monkeypatch, tmp_path):
    from mailsyncd.testing.courier import courier_missing_reason
    from mailsyncd.testing.cyrus import cyrus_missing_reason

    monkeypatch.setenv("MAILSYNCD_SERVERS_ROOT", str(tmp_path / "nothing"))
    for reason in (courier_missing_reason(), cyrus_missing_reason()):
        assert reason is not None and "scripts/setup-servers.sh" in reason



def test_server_dies_with_its_owner(tmp_path):
    """SIGKILL of the Python process that started a Courier and a Cyrus: both go away (EOF on
    the supervisor's stdin), ports closed, no process left in their sessions."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from mailsyncd.testing.courier import courier_missing_reason

    if courier_missing_reason():
        pytest.fail(courier_missing_reason(), pytrace=False)
    code = (
        "import sys, time\n"
        "from mailsyncd.testing.courier import Courier\n"
        "from mailsyncd.testing.cyrus import Cyrus\n"
        f"a = Courier({str(tmp_path)!r}, 'c', {{'u@example.com': 'pw'}}); a.start()\n"
        f"b = Cyrus({str(tmp_path)!r}, 'y', {{'u@example.com': 'pw'}}); b.start()\n"
        "print(a.imap_port, a._supervisor.pid, b.imap_port, b._supervisor.pid, flush=True)\n"
        "time.sleep(600)\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": repo})
    try:
        cport, csid, yport, ysid = map(int, owner.stdout.readline().split())
        for port in (cport, yport):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 10
    while (_session_members(csid) or _session_members(ysid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _session_members(csid) == [] and _session_members(ysid) == []
    for port in (cport, yport):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
