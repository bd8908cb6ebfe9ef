"""The server matrix's helpers: the shared bench corpus APPENDed into any server's namespace, and
../shared/bench/verify.py (the shared measuring rig beside the repository) run with the renames the namespace mapping implies.

The corpus is bench/corpus.py's (imported, not copied: message i depends only on (seed, i)),
plus one 20 MB message in INBOX; folder "a/b" is created as PREFIX + "a" + SEP + "b".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from imapclient import IMAPClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shared measuring rig lies beside the repository (CI lays a copy of it there too).
BENCH = os.environ.get("MAILSYNCD_BENCH_DIR") or os.path.normpath(os.path.join(REPO, "..", "shared", "bench"))


def _corpus():
    sys.path.insert(0, BENCH)
    try:
        import corpus  # noqa: PLC0415 - the shared rig, stdlib only
    finally:
        sys.path.remove(BENCH)
    return corpus


def full_name(folder: str, prefix: str, sep: str) -> str:
    return "INBOX" if folder == "INBOX" else prefix + folder.replace("/", sep)


def load(port: int, user: str, password: str, prefix: str, sep: str, n: int, *, big: bytes | None,
         seed: int = 1) -> dict[str, int]:
    """APPEND messages 0..n-1 of the corpus (and ``big`` into INBOX); {corpus folder: count}."""
    corpus = _corpus()
    counts: dict[str, int] = {}
    c = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=120)
    try:
        c.login(user, password)
        existing = {name for _, _, name in c.list_folders()}
        for f in corpus.ALL_FOLDERS:
            name = full_name(f, prefix, sep)
            if f != "INBOX" and name not in existing:
                c.create_folder(name)
                existing.add(name)
        for i in range(n):
            m = corpus.message(seed, i)
            name = full_name(m["folder"], prefix, sep)
            c._imap.append(c._normalise_folder(name), "(" + " ".join(sorted(m["flags"])) + ")",
                           corpus.imaputil.epoch_to_internaldate(m["t"], m["tz"]), m["raw"])
            counts[m["folder"]] = counts.get(m["folder"], 0) + 1
        if big is not None:
            c.append("INBOX", big, flags=(b"\\Seen",))
            counts["INBOX"] = counts.get("INBOX", 0) + 1
    finally:
        c.logout()
    return counts


def folders() -> list[str]:
    return list(_corpus().ALL_FOLDERS)


def verify(src: dict, dst: dict, renames: dict[str, str], json_path: str, extra=()) -> tuple[int, dict, str]:
    """Run verify.py; (exit code, its JSON verdict, its text).  ``src``/``dst``: port, user, pass
    and optionally authzid; ``renames``: source folder -> target folder ("/"-separated)."""
    args = [sys.executable, os.path.join(BENCH, "verify.py"), "--quiet", "--json", json_path,
            "--src-port", str(src["port"]), "--src-user", src["user"], "--src-pass", src["pass"],
            "--dst-port", str(dst["port"]), "--dst-user", dst["user"], "--dst-pass", dst["pass"], *extra]
    if dst.get("authzid"):
        args += ["--dst-authzid", dst["authzid"]]
    for s, d in renames.items():
        args += ["--map", f"{s}={d}"]
    cp = subprocess.run(args, capture_output=True, text=True, timeout=600)
    verdict = json.load(open(json_path)) if os.path.exists(json_path) else {}
    return cp.returncode, verdict, cp.stdout + cp.stderr
