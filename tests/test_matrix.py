"""The server matrix (issue 11): the same realistic corpus from each kind of source to each kind
of target through the real `mailsyncctl sync`, judged by the independent bench/verify.py.

Sources: Dovecot ("/", no prefix), Dovecot ("." + "INBOX."), Courier-IMAP, Cyrus IMAP.
Targets: a stock Dovecot (special-use Sent/Drafts/Trash/Junk, master user) and Cyrus IMAP
(CREATE-SPECIAL-USE, "INBOX." + ".", logins with the user's password).
Each pair: MATRIX_MESSAGES corpus messages (Chinese folder names, flags, keywords, dates,
duplicates) plus one 20 MB message; verify.py must say IDENTICAL with the renames the
namespace mapping implies, and the report's totals must equal the source's.
"""
from __future__ import annotations

import csv
import io
import os
import time

import pytest
import yaml

from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
from matrix import folders, load, verify
from seed import make_message
from syncenv import ctl, make_config, password_file

USER = "alice@example.com"
N = int(os.environ.get("MATRIX_MESSAGES", "300"))
BIG = make_message(424242, size=20 * 1024 * 1024)

# kind -> (personal prefix, separator) as the server names a folder "a/b"
LAYOUT = {"dovecot": ("", "/"), "dovecot_dot": ("INBOX.", "."), "courier": ("INBOX.", "."),
          "cyrus": ("INBOX.", ".")}
SOURCES = ["dovecot", "dovecot_dot", "courier", "cyrus"]
TARGETS = ["dovecot", "cyrus"]


def _start(request, kind: str, role: str):
    if kind == "dovecot":
        if role == "target":
            return request.getfixturevalue("make_dovecot")("target", TARGET_USERS, master=MASTER)
        return request.getfixturevalue("make_dovecot")("source")
    if kind == "dovecot_dot":
        return request.getfixturevalue("make_dovecot")(f"{role}-dot", namespace="dot")
    if kind == "courier":
        return request.getfixturevalue("make_courier")(role)
    # Cyrus's default munge8bit turns raw 8-bit header bytes into "X" at APPEND (accepted, then
    # changed: nothing a client can detect but by re-reading); a Cyrus target must say munge8bit: no
    return request.getfixturevalue("make_cyrus")(role, extra_conf="munge8bit: no\n" if role == "target" else "")


def _norm(kind: str, folder: str) -> str:
    """verify.py's name (decoded, "/"-separated) of corpus folder ``folder`` on a ``kind`` server."""
    prefix, _ = LAYOUT[kind]
    return "INBOX" if folder == "INBOX" else prefix.replace(".", "/") + folder


@pytest.mark.parametrize("target_kind", TARGETS)
@pytest.mark.parametrize("source_kind", SOURCES)
def test_matrix(request, tmp_path, source_kind, target_kind):
    source = _start(request, source_kind, "source")
    target = _start(request, target_kind, "target")
    prefix, sep = LAYOUT[source_kind]
    counts = load(source.imap_port, USER, SOURCE_USERS[USER], prefix, sep, N, big=BIG)
    pair = DovecotPair(source, target, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
    cfg = make_config(tmp_path, pair)
    if target_kind == "cyrus":   # the user's own password on Cyrus (its test users have the old ones)
        doc = yaml.safe_load(open(cfg))
        tgt = doc["domains"]["example.com"]["target"]
        tgt["auth"] = "same"
        del tgt["master_user"], tgt["master_password_file"]
        open(cfg, "w").write(yaml.safe_dump(doc, allow_unicode=True))
    t0 = time.monotonic()
    cp = ctl("-c", cfg, "sync", USER, "--add", "--password-file", password_file(tmp_path, SOURCE_USERS[USER]),
             "--progress", "none")
    seconds = time.monotonic() - t0
    assert cp.returncode == 0, cp.stdout + cp.stderr
    print(f"matrix {source_kind} -> {target_kind}: {sum(counts.values())} messages in {seconds:.1f}s")

    # every corpus folder and its parents (Cyrus makes a parent a real, empty mailbox)
    names = {"/".join(f.split("/")[:i]) for f in folders() for i in range(1, f.count("/") + 2)}
    renames = {_norm(source_kind, f): _norm(target_kind, f) for f in names}
    src = {"port": source.imap_port, "user": USER, "pass": SOURCE_USERS[USER]}
    if target_kind == "cyrus":
        dst = {"port": target.imap_port, "user": USER, "pass": SOURCE_USERS[USER]}
    else:
        dst = {"port": target.imap_port, "user": MASTER[0], "pass": MASTER[1], "authzid": USER}
    rc, verdict, text = verify(src, dst, renames, str(tmp_path / "verdict.json"))
    assert rc == 0 and verdict.get("identical"), text

    rep = ctl("-c", cfg, "report", USER, "--csv")
    rows = list(csv.DictReader(io.StringIO(rep.stdout)))
    assert sum(int(r["source_count"]) for r in rows) == sum(counts.values()) + 0
    assert all(r["source_count"] == r["target_count"] for r in rows), rep.stdout


def _gbk_message(i: int) -> bytes:
    """Raw 8-bit (GBK) Subject and From name, as old Chinese mail clients send them."""
    return (b"From: \xd5\xc5\xc8\xfd <zhang@example.com>\r\nTo: alice@example.com\r\n"
            b"Subject: \xd6\xd0\xce\xc4\xd6\xf7\xcc\xe2 " + str(i).encode() + b"\r\n"
            b"Date: Mon, 1 Jan 2024 12:00:00 +0800\r\nMessage-ID: <gbk" + str(i).encode() + b"@example.com>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=GBK\r\n\r\n\xc4\xe3\xba\xc3\r\n")


@pytest.mark.parametrize("munge", [True, False], ids=["munge8bit", "munge8bit-no"])
def test_cyrus_target_altering_8bit_headers_is_reported(request, tmp_path, munge):
    """Cyrus's default munge8bit rewrites raw 8-bit header bytes at APPEND and says OK: the writer reads
    those headers back, and the report names exactly the messages verify.py finds different."""
    from imapclient import IMAPClient
    source = _start(request, "dovecot", "source")
    target = request.getfixturevalue("make_cyrus")("target", extra_conf="" if munge else "munge8bit: no\n")
    msgs = [make_message(i) for i in range(3)] + [_gbk_message(i) for i in range(2)]
    msgs.append(make_message(9, body="8-bit body only: \u4e2d\u6587"))   # body bytes: Cyrus leaves them
    c = IMAPClient("127.0.0.1", port=source.imap_port, ssl=False, timeout=30)
    c.login(USER, SOURCE_USERS[USER])
    for m in msgs:
        c.append("INBOX", m)
    c.logout()
    pair = DovecotPair(source, target, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
    cfg = make_config(tmp_path, pair, target={"auth": "same"})
    doc = yaml.safe_load(open(cfg))
    tgt = doc["domains"]["example.com"]["target"]
    del tgt["master_user"], tgt["master_password_file"]
    open(cfg, "w").write(yaml.safe_dump(doc, allow_unicode=True))
    cp = ctl("-c", cfg, "sync", USER, "--add", "--password-file", password_file(tmp_path, SOURCE_USERS[USER]),
             "--progress", "none")
    assert cp.returncode == (3 if munge else 0), cp.stdout + cp.stderr

    src = {"port": source.imap_port, "user": USER, "pass": SOURCE_USERS[USER]}
    dst = {"port": target.imap_port, "user": USER, "pass": SOURCE_USERS[USER]}
    rc, verdict, text = verify(src, dst, {}, str(tmp_path / "verdict.json"), extra=("--details", "50"))
    assert rc in (0, 1), text
    different = {int(ln.split("uid=")[1].split()[0]) for ln in text.splitlines()
                 if ln.strip().startswith("missing: uid=")}
    rep = ctl("-c", cfg, "report", USER)
    named = {int(ln.split(" uid=")[1].split()[0]) for ln in rep.stdout.splitlines()
             if ln.startswith("altered message: folder=INBOX ")}
    assert named == different, (rep.stdout, text)
    if munge:
        assert named == {4, 5} and rc == 1, (rep.stdout, text)   # the two GBK messages, nothing else
        assert "(Cyrus: set munge8bit: no)" in rep.stdout and "altered msgs" in rep.stdout
        assert cp.stderr.count("event=target_altered") == 1 and "messages=2" in cp.stderr
    else:
        assert not named and rc == 0 and verdict.get("identical"), text
        assert "event=target_altered" not in cp.stderr
