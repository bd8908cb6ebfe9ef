"""`mailsyncctl demo`: the main job end to end on this machine, with nothing to configure.

Two throwaway Dovecot servers on free 127.0.0.1 ports play the old and the new
provider; an employee's mailbox is filled on the old one; mailsyncd migrates
it with the employee's OLD password and a master user on the new server; an
independent check then compares both sides.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import shutil
import sys
import tempfile
import textwrap

from imapclient import IMAPClient

USER = "alice@example.com"
OLD_PW, NEW_PW, MASTER = "old-password", "new-password", ("master", "master-secret")
FOLDERS = ["INBOX", "Sent", "Drafts", "Archive/2023", "客户/重要", "Café & Bar"]


def _message(i: int, rnd: random.Random) -> tuple[bytes, tuple[str, ...], dt.datetime]:
    when = dt.datetime(2023, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))) + dt.timedelta(hours=7 * i)
    body = "\r\n".join(" ".join(rnd.choice(["migration", "mailbox", "report", "会议", "客户", "invoice",
                                             "schedule", "thanks"]) for _ in range(12))
                       for _ in range(rnd.randint(3, 400)))
    head = (f"From: Colleague {i % 17} <c{i % 17}@example.com>\r\nTo: Alice <{USER}>\r\n"
            f"Subject: Demo message {i} 演示\r\nDate: {when.strftime('%a, %d %b %Y %H:%M:%S %z')}\r\n"
            + (f"Message-ID: <demo.{i}@example.com>\r\n" if i % 10 else "")
            + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
              "Content-Transfer-Encoding: 8bit\r\n\r\n")
    flags = tuple(f for f, p in (("\\Seen", 0.7), ("\\Flagged", 0.1), ("\\Answered", 0.2), ("$Work", 0.05))
                  if rnd.random() < p)
    return (head + body + "\r\n").encode(), flags, when


def _fill(port: int, n: int) -> None:
    rnd = random.Random(1)
    c = IMAPClient("127.0.0.1", port, ssl=False)
    c.login(USER, OLD_PW)
    for f in FOLDERS[1:]:
        c.create_folder(f)
        c.subscribe_folder(f)
    for i in range(n):
        raw, flags, when = _message(i, rnd)
        c.append(FOLDERS[min(i % 9, len(FOLDERS) - 1)], raw, flags, when)
    c.logout()


def _digest(port: int, user: str, password: str) -> dict[str, list[str]]:
    """Per folder, the sorted (sha256, flags, date) of every message: EXAMINE and BODY.PEEK only."""
    c = IMAPClient("127.0.0.1", port, ssl=False)
    c.login(user, password)
    out = {}
    for flags, _, name in c.list_folders():
        if b"\\Noselect" in flags or b"\\NonExistent" in flags:
            continue
        c.select_folder(name, readonly=True)
        uids = c.search(["ALL"])
        rows = []
        for d in c.fetch(uids, ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]).values() if uids else ():
            fl = " ".join(sorted(f.decode() for f in d[b"FLAGS"] if f != b"\\Recent"))
            rows.append(f"{hashlib.sha256(d[b'BODY[]']).hexdigest()} {fl} {d[b'INTERNALDATE'].isoformat()}")
        out[name] = sorted(rows)
    c.logout()
    return out


def run_demo(args) -> int:
    from ..config import load_config
    from ..devserver import Dovecot, dovecot_missing_reason
    from ..store import Store
    from ..sync.account import AccountSync
    from ..sync.progress import Progress
    from .render import ProgressView, human_bytes, report_table

    missing = dovecot_missing_reason()
    if missing:
        print(f"demo: {missing} (scripts/demo.sh installs it)", file=sys.stderr)
        return 1
    root = tempfile.mkdtemp(prefix="msd-demo-", dir="/tmp")
    old = Dovecot(root, "old", {USER: OLD_PW})
    new = Dovecot(root, "new", {USER: NEW_PW}, master=MASTER)
    try:
        old.start()
        new.start()
        print(f"1. Old server (the provider you leave): Dovecot on 127.0.0.1:{old.imap_port}")
        print(f"   New server (your own):               Dovecot on 127.0.0.1:{new.imap_port}, master user "
              f"'{MASTER[0]}'")
        print(f"2. Filling {USER}'s old mailbox with {args.messages} messages in {len(FOLDERS)} folders ...")
        _fill(old.imap_port, args.messages)
        with open(os.path.join(root, "master.secret"), "w") as f:
            f.write(MASTER[1] + "\n")
        cfg_path = os.path.join(root, "mailsyncd.yaml")
        with open(cfg_path, "w") as f:
            f.write(textwrap.dedent(f"""\
                state_dir: ./state
                domains:
                  example.com:
                    source: {{host: 127.0.0.1, port: {old.imap_port}, security: none, protocol: imap}}
                    target: {{host: 127.0.0.1, port: {new.imap_port}, security: none, auth: master,
                              master_user: {MASTER[0]}, master_password_file: ./master.secret}}
                    folders: {{layout: mirror}}
                """))
        print(f"3. Config written to {cfg_path}:")
        print(textwrap.indent(open(cfg_path).read(), "     "))
        print(f"4. Migrating {USER}, who knows only the OLD password (the new server is reached "
              "through the master user) ...")
        cfg = load_config(cfg_path)
        view = ProgressView(sys.stderr)
        progress = Progress(view)
        store = Store.in_state_dir(cfg.state_dir)
        try:
            res = AccountSync(cfg.domain_for(USER), USER, OLD_PW, store, progress=progress).run()
        finally:
            view.close(progress)
            store.close()
        if res.error:
            print(f"demo: migration failed: {res.error}", file=sys.stderr)
            return 1
        print(report_table(res.folders))
        print(f"   copied {res.copied} messages, {human_bytes(res.bytes)} in {res.seconds:.1f}s")
        print("5. Independent check: every folder, message, flag and date on both servers ...")
        a = _digest(old.imap_port, USER, OLD_PW)
        b = _digest(new.imap_port, f"{USER}*{MASTER[0]}", MASTER[1])
        diff = [f for f in a if a[f] != b.get(f)]
        if diff:
            print(f"   DIFFERENT in: {', '.join(diff)}")
            return 1
        print(f"   IDENTICAL: {sum(map(len, a.values()))} messages in {len(a)} folders")
        again = AccountSync(cfg.domain_for(USER), USER, OLD_PW, Store.in_state_dir(cfg.state_dir)).run()
        print(f"6. A second pass finds nothing new: copied {again.copied} in {again.seconds:.2f}s "
              "(it would pick up new mail and flag changes)")
        print(f"\nDone. Try: mailsyncctl --config {cfg_path} report {USER}" if args.keep else "\nDone.")
        return 0
    finally:
        new.stop()
        old.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
