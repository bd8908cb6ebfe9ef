"""`mailsyncctl demo`: the main job end to end on this machine, with nothing to configure.

Two throwaway Dovecot servers on free 127.0.0.1 ports play the old and the new
provider, and an employee's mailbox is filled on the old one.  The real daemon
(``mailsyncd --config``) runs between them; the employee logs in to it with her
OLD password, which starts her migration in the background; its progress is
shown from the state store, and an independent check compares both sides.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

USER = "alice@example.com"
OLD_PW, NEW_PW, MASTER = "old-password", "new-password", ("master", "master-secret")
FOLDERS = ["INBOX", "Sent", "Drafts", "Archive/2023", "客户/重要", "Café & Bar"]


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="self-contained demo: two local Dovecot servers, a mailbox, a migration")
    p.add_argument("--messages", type=int, default=1000, help="messages to put in the demo mailbox (default 1000)")
    p.add_argument("--keep", action="store_true",
                   help="leave the demo directory in place (the servers are stopped: see --serve)")
    p.add_argument("--serve", action="store_true",
                   help="keep both Dovecot servers and mailsyncd running until Ctrl-C, to try a real mail client")


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
    from imapclient import IMAPClient    # here: `mailsyncctl` builds its parser from this module at each start
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
    from imapclient import IMAPClient
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


def _wait_ready(log_path: str, proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with open(log_path, errors="replace") as f:
            if "event=ready" in f.read():
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log_path, errors="replace") as f:
                raise RuntimeError("mailsyncd did not start:\n" + f.read()[-3000:])
        time.sleep(0.05)


def _follow(store, log_path: str, proc, total: int) -> bool:
    """Show the background migration's progress from the state store until the pass ends."""
    from ..sync.progress import Progress
    from .render import ProgressView

    view = ProgressView(sys.stderr)
    progress = Progress(view)
    progress.add_total(total)
    try:
        while True:
            mapped, nbytes, skipped = store.account_counts(USER)
            if mapped + skipped > progress.done:
                progress.advance("", mapped + skipped - progress.done, nbytes - progress.bytes)
            with open(log_path, errors="replace") as f:
                log = f.read()
            if "event=pass_done" in log:
                return f"event=pass_done account={USER} ok=True" in log
            if proc.poll() is not None:
                return False
            time.sleep(0.2)
    finally:
        view.close(progress)


def run_demo(args) -> int:
    import imaplib
    import ssl

    from ..testing import Dovecot, dovecot_missing_reason, free_port, make_test_cert
    from ..store import Store

    missing = dovecot_missing_reason()
    if missing:
        print(f"demo: {missing} (scripts/demo.sh installs it)", file=sys.stderr)
        return 1
    root = tempfile.mkdtemp(prefix="msd-demo-", dir="/tmp")
    old = Dovecot(root, "old", {USER: OLD_PW})
    new = Dovecot(root, "new", {USER: NEW_PW}, master=MASTER)
    daemon = None
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
        cert, key = make_test_cert(os.path.join(root, "tls"))
        port = free_port()
        cfg_path = os.path.join(root, "mailsyncd.yaml")
        with open(cfg_path, "w") as f:
            f.write(textwrap.dedent(f"""\
                state_dir: ./state
                listen: {{imaps: "127.0.0.1:{port}"}}
                tls: {{cert: {cert}, key: {key}}}
                domains:
                  example.com:
                    source: {{host: 127.0.0.1, port: {old.imap_port}, security: none, protocol: imap}}
                    target: {{host: 127.0.0.1, port: {new.imap_port}, security: none, auth: master,
                              master_user: {MASTER[0]}, master_password_file: ./master.secret}}
                    folders: {{layout: mirror}}
                """))
        print(f"3. Config written to {cfg_path}:")
        with open(cfg_path) as f:
            print(textwrap.indent(f.read(), "     "))
        log_path = os.path.join(root, "mailsyncd.log")
        print(f"4. Starting the daemon: mailsyncd --config {cfg_path}  (log: {log_path})")
        with open(log_path, "wb") as log:
            # its own session: a Ctrl-C at the terminal reaches this process only, which stops it in order
            daemon = subprocess.Popen([sys.executable, "-m", "mailsyncd.cli.daemon", "--config", cfg_path],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_ready(log_path, daemon)
        ctx = ssl.create_default_context(cafile=cert)
        print(f"5. {USER} opens her mail client, pointed at mailsyncd (imaps://127.0.0.1:{port}),")
        print("   and logs in with the OLD password she has always used ...")
        c = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
        typ, _ = c.login(USER, OLD_PW)
        c.logout()
        print(f"   {typ}: mailsyncd checked the password at the old server and logged her in to the new one.")
        print("6. Her first login started the migration in the background:")
        store = Store.in_state_dir(os.path.join(root, "state"))
        try:
            ok = _follow(store, log_path, daemon, args.messages)
        finally:
            store.close()
        if not ok:
            print(f"demo: the migration did not complete; see {log_path}", file=sys.stderr)
            return 1
        c = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
        c.login(USER, OLD_PW)
        counts = []
        for name in FOLDERS:
            typ, data = c.select(_quote(name), readonly=True)
            counts.append(f"{name}: {int(data[0]) if typ == 'OK' else '?'}")
        c.logout()
        print("7. Logged in again through mailsyncd, she sees her mail on the new server:")
        print("     " + "; ".join(counts))
        print("8. Independent check: every folder, message, flag and date on both servers ...")
        a = _digest(old.imap_port, USER, OLD_PW)
        b = _digest(new.imap_port, f"{USER}*{MASTER[0]}", MASTER[1])
        diff = [f for f in a if a[f] != b.get(f)]
        if diff:
            print(f"   DIFFERENT in: {', '.join(diff)}")
            return 1
        print(f"   IDENTICAL: {sum(map(len, a.values()))} messages in {len(a)} folders")
        if args.serve:
            return _serve(daemon, port, cert, cfg_path, log_path, old, new)
        print(f"\nDone. Try: mailsyncctl --config {cfg_path} report {USER}" if args.keep else "\nDone.")
        return 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        new.stop()
        old.stop()
        if args.keep:
            print(f"Kept {root}. The servers are STOPPED now (both Dovecots and mailsyncd), so its config "
                  "points at closed ports: `mailsyncctl demo --serve` keeps them running.")
        else:
            shutil.rmtree(root, ignore_errors=True)


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def _serve(daemon, port: int, cert: str, cfg_path: str, log_path: str, old, new) -> int:
    """Say how to log in with a real mail client, then wait for Ctrl-C (SIGINT) or SIGTERM."""
    print(textwrap.dedent(f"""
        Serving. Try it with a real mail client (Thunderbird, Apple Mail, Outlook...) on this machine:
          IMAP server:  127.0.0.1   port {port}   security: SSL/TLS (implicit TLS, not STARTTLS)
          user name:    {USER}
          password:     {OLD_PW}   (her OLD password)
          certificate:  self-signed for 127.0.0.1: accept it when the client asks, or trust {cert}
        Also running: the old server on 127.0.0.1:{old.imap_port}, the new one on 127.0.0.1:{new.imap_port}
        (no TLS); the daemon's log: {log_path}
          mailsyncctl --config {cfg_path} status
        Press Ctrl-C to stop everything."""), flush=True)
    before = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while daemon.poll() is None:
            time.sleep(0.5)
    except _Stop as e:
        print(f"\n{e}: stopping mailsyncd and both Dovecot servers ...", flush=True)
        return 0
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    print(f"demo: mailsyncd exited with {daemon.returncode}; see {log_path}", file=sys.stderr)
    return 1


def _quote(name: str) -> str:
    """imaplib sends names as they are: quote, and encode to modified UTF-7."""
    from imapclient.imap_utf7 import encode
    return '"' + encode(name).decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"'
