"""Chaos: seeded random faults during a first sync by the real daemon, with live relayed sessions.

Each schedule starts the real ``mailsyncd`` (a subprocess) between a source Dovecot holding a
corpus of a few thousand messages (with deliberate duplicates) and a fresh target Dovecot, each
behind a :class:`faultproxy.FaultProxy`. Two relayed IMAP sessions log in through the front door
(the first login starts the migration) and keep talking while one fault is injected at a moment
counted in messages APPENDed to the target (or in message bytes read from the source), never in
wall-clock time:

* ``source_drop``      the source connection cut in the middle of a message literal;
* ``append_refused``   the target answers ``NO [OVERQUOTA]``, ``[TOOBIG]`` or ``[LIMIT]`` to APPENDs;
* ``target_outage``    every target connection reset, and new ones refused, for ``CHAOS_OUTAGE`` s (30);
* ``state_readonly``   the state directory and database made immutable (``chattr +i``) for a few seconds;
* ``db_locked``        another process holds ``BEGIN EXCLUSIVE`` on the state database past the
                       store's 30 s busy timeout, so the daemon gets ``database is locked``;
* ``sighup`` / ``sigterm`` / ``sigkill``  the daemon is reloaded, stopped, or killed (then restarted).

After each run: the target equals the source (bytes, flags, INTERNALDATE; as multisets per folder,
so no duplicate beyond the source's own), except exactly the messages the store reports skipped;
the source is unchanged; the daemon's log has no traceback; the relayed sessions the fault does not
touch are still alive.

``CHAOS_SEED`` (default 1) picks the schedules, ``CHAOS_RUNS`` how many (default: one per fault
kind, in a seeded order), ``CHAOS_KINDS`` (comma-separated) which kinds, ``CHAOS_MESSAGES`` the
corpus size (2000); each schedule prints the line that replays it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import imaplib
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from conftest import MASTER, SOURCE_USERS, TARGET_USERS, DovecotPair, UserCreds
from faultproxy import FaultProxy
from proxyenv import Daemon
from seed import Msg, connect, make_message, seed

from mailsyncd.testing import Dovecot, dovecot_missing_reason

A = "alice@example.com"
ALL_KINDS = ("source_drop", "append_refused", "target_outage", "state_readonly", "db_locked",
             "sighup", "sigterm", "sigkill")
KINDS = tuple(os.environ.get("CHAOS_KINDS", ",".join(ALL_KINDS)).split(","))
SEED = int(os.environ.get("CHAOS_SEED", "1"))
RUNS = int(os.environ.get("CHAOS_RUNS", str(len(KINDS))))
MESSAGES = int(os.environ.get("CHAOS_MESSAGES", "2000"))
OUTAGE = float(os.environ.get("CHAOS_OUTAGE", "30"))
SYNC = {"batch_messages": 50, "retry_backoff": 0.2, "connections": 4}
SCHEDULER = {"pass_interval": 1, "failure_backoff": 0.5, "failure_backoff_max": 2}

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(300)]


# -- the schedules ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    index: int
    kind: str
    at: int                  # messages APPENDed to the target, or (source_drop) source literal bytes
    code: str = ""           # append_refused: the response code
    count: int = 0           # append_refused: how many APPEND commands are refused
    seconds: float = 0.0     # how long an outage, a read-only state dir or a lock lasts

    def __str__(self) -> str:
        unit = "source message byte" if self.kind == "source_drop" else "message appended"
        extra = {"append_refused": f" code={self.code} count={self.count}"}.get(self.kind, "")
        if self.seconds:
            extra += f" for={self.seconds:.1f}s"
        return (f"chaos schedule {self.index}: {self.kind} at {unit} {self.at}{extra}  "
                f"(replay: CHAOS_SEED={SEED} CHAOS_RUNS={RUNS} CHAOS_KINDS={','.join(KINDS)} CHAOS_MESSAGES={MESSAGES} pytest tests/test_chaos.py -k 'schedule_{self.index}]')")


def make_schedule(i: int, corpus_bytes: int) -> Schedule:
    order = list(KINDS)
    random.Random(SEED).shuffle(order)
    rnd = random.Random(f"{SEED}:{i}")
    kind = order[i] if i < len(order) else rnd.choice(KINDS)
    at = rnd.randint(1, MESSAGES - 1)
    if kind == "source_drop":
        return Schedule(i, kind, rnd.randint(1, corpus_bytes * 9 // 10))
    if kind == "append_refused":
        return Schedule(i, kind, at, code=rnd.choice(("OVERQUOTA", "TOOBIG", "LIMIT")), count=rnd.randint(1, 4))
    if kind == "target_outage":
        return Schedule(i, kind, at, seconds=OUTAGE)
    if kind == "state_readonly":
        return Schedule(i, kind, at, seconds=rnd.uniform(2, 8))
    if kind == "db_locked":
        return Schedule(i, kind, at, seconds=rnd.uniform(31, 35))   # past the store's 30 s busy timeout
    return Schedule(i, kind, at)


# -- the corpus: a source seeded once for the module ---------------------------------------------

def corpus(n: int) -> dict[str, list[Msg]]:
    """Deterministic; ~2% byte-identical duplicates (same or other folder), ~1% another message's
    Message-ID on different content, ~2% without Message-ID; sizes 700 B to 200 KB."""
    rnd = random.Random(4242)
    folders = ("INBOX", "Archive", "Sent", "客户/重要")
    out: dict[str, list[Msg]] = {f: [] for f in folders}
    made: list[Msg] = []
    t0 = dt.datetime(2019, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)
    for i in range(n):
        folder = rnd.choices(folders, (45, 30, 15, 10))[0]
        r = rnd.random()
        if made and r < 0.02:
            m = rnd.choice(made)
        else:
            size = rnd.choices((700, 2500, 6000, 15000, 60000, 200000), (10, 35, 30, 15, 8, 2))[0]
            if made and r < 0.03:
                msgid: bool | str = f"{rnd.randrange(i)}.test@mailsyncd.test"
            else:
                msgid = rnd.random() > 0.02
            flags = tuple(f for f in ("\\Seen", "\\Answered", "\\Flagged", "$Forwarded", "Work")
                          if rnd.random() < (0.7 if f == "\\Seen" else 0.1))
            m = Msg(make_message(i, size=size, msgid=msgid), flags, t0 + dt.timedelta(minutes=37 * i))
            made.append(m)
        out[folder].append(m)
    return out


Manifest = dict[str, dict[int, tuple[str, tuple[str, ...], str]]]


def manifest(host: str, port: int, user: str, password: str) -> Manifest:
    """{folder: {uid: (sha256, flags without \\Recent, INTERNALDATE UTC)}}; EXAMINE and BODY.PEEK only."""
    out: Manifest = {}
    with connect(host, port, user, password) as c:
        for flags, _, name in c.list_folders():
            if {f.decode() if isinstance(f, bytes) else f for f in flags} & {"\\Noselect", "\\NonExistent"}:
                continue
            c.select_folder(name, readonly=True)
            rows = {}
            uids = c.search(["ALL"])
            for k in range(0, len(uids), 500):
                for uid, d in c.fetch(uids[k:k + 500], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]).items():
                    fl = tuple(sorted(f.decode() if isinstance(f, bytes) else f for f in d[b"FLAGS"]))
                    rows[uid] = (hashlib.sha256(d[b"BODY[]"]).hexdigest(), tuple(f for f in fl if f != "\\Recent"),
                                 d[b"INTERNALDATE"].astimezone(dt.timezone.utc).isoformat())
            out[name] = rows
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    missing = dovecot_missing_reason()
    if missing:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {missing}", pytrace=False)    # as conftest.py: no silent skip in CI
        pytest.skip(missing)
    d = Dovecot(str(tmp_path_factory.mktemp("chaos")), "source", dict(SOURCE_USERS))
    d.start()
    try:
        seed("127.0.0.1", d.imap_port, A, SOURCE_USERS[A], corpus(MESSAGES))
        before = manifest("127.0.0.1", d.imap_port, A, SOURCE_USERS[A])
        yield d, before
    finally:
        d.stop()


# -- live relayed sessions ------------------------------------------------------------------------

class Session(threading.Thread):
    """A client logged in through the front door, talking (NOOP, STATUS) every 0.2 s until stopped."""

    def __init__(self, d: Daemon, n: int):
        super().__init__(name=f"session-{n}", daemon=True)
        self.client = imaplib.IMAP4("127.0.0.1", d.imap_port, timeout=30)
        self.client.login(A, SOURCE_USERS[A])
        self.error: str | None = None
        self.rounds = 0
        self._quit = threading.Event()

    def run(self) -> None:
        while not self._quit.wait(0.2):
            try:
                assert self.client.noop()[0] == "OK"
                assert self.client.status("INBOX", "(MESSAGES)")[0] == "OK"
                self.rounds += 1
            except Exception as e:  # noqa: BLE001 - recorded, asserted by the test
                self.error = f"{type(e).__name__}: {e}"
                return

    def finish(self) -> str | None:
        """Stop talking; the session's error, or None if it still answers."""
        self._quit.set()
        self.join(10)
        if self.error is None:
            try:
                if self.client.noop()[0] != "OK":
                    self.error = "NOOP not OK"
            except Exception as e:  # noqa: BLE001
                self.error = f"{type(e).__name__}: {e}"
        try:
            self.client.shutdown()
        except OSError:
            pass
        return self.error


# -- faults outside the proxies -------------------------------------------------------------------

def _immutable(d: Daemon, on: bool) -> None:
    state = d.state_dir
    # Not the -shm file: SQLite mmaps it, and a write to an immutable mapping is SIGBUS (checked).
    paths = [state] + [os.path.join(state, f) for f in os.listdir(state) if not f.endswith("-shm")]
    subprocess.run(["chattr", "+i" if on else "-i", *paths], check=True, capture_output=True)


def _chattr_works(tmp_path) -> bool:
    p = tmp_path / "chattr-probe"
    p.write_text("x")
    try:
        subprocess.run(["chattr", "+i", str(p)], check=True, capture_output=True)
        subprocess.run(["chattr", "-i", str(p)], check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


def _hold_exclusive(db: str, seconds: float, held: threading.Event) -> None:
    c = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        c.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        c.execute("ROLLBACK")
    finally:
        c.close()


# -- waiting --------------------------------------------------------------------------------------

def wait_for(cond, timeout: float, what: str, d: Daemon | None = None):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            tail = d.log()[-3000:] if d else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{tail}")
        time.sleep(0.1)


def _store_rows(d: Daemon, sql: str) -> list[tuple]:
    db = os.path.join(d.state_dir, "mailsyncd.sqlite3")
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return c.execute(sql, (A,)).fetchall()
    finally:
        c.close()


def _clean_pass_after(d: Daemon, offset: int) -> bool:
    """The last pass finished after ``offset`` in the log had no error, and no folder reports one."""
    done = [line for line in d.log()[offset:].splitlines() if f"event=pass_done account={A} " in line]
    if not done or " error=" in done[-1]:
        return False
    return not _store_rows(d, "SELECT path, error FROM reports WHERE account=? AND error IS NOT NULL")


# -- the test -------------------------------------------------------------------------------------

@pytest.mark.parametrize("i", range(RUNS), ids=lambda i: f"schedule_{i}")
def test_chaos_schedule(i, source, make_dovecot, tmp_path):
    src, before = source
    sch = make_schedule(i, _corpus_bytes())
    print(sch)
    if sch.kind == "state_readonly" and not _chattr_works(tmp_path):
        pytest.skip("chattr +i does not work here (needs root and a file system with the immutable flag)")
    target = make_dovecot("target", TARGET_USERS, master=MASTER)
    pair = DovecotPair(src, target, {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS})
    fired = threading.Event()
    with FaultProxy(src.imap_port, "source") as sp, FaultProxy(target.imap_port, "target") as tp:
        d = Daemon(tmp_path, pair, source={"port": sp.port}, target={"port": tp.port}, sync=SYNC,
                   scheduler=SCHEDULER)
        lock_held = threading.Event()

        def fire(action):
            def hook():
                action()
                fired.set()
            return hook

        if sch.kind == "source_drop":
            sp.cut_in_literal(sch.at)
            sp.at_literal_byte(sch.at, fired.set)
        elif sch.kind == "append_refused":
            tp.at_append(sch.at, fire(lambda: tp.refuse_appends(sch.code, sch.count)))
        elif sch.kind == "target_outage":
            tp.at_append(sch.at, fire(lambda: tp.outage(sch.seconds)))
        elif sch.kind == "state_readonly":
            tp.at_append(sch.at, fire(lambda: _immutable(d, True)))
        elif sch.kind == "db_locked":
            db = os.path.join(d.state_dir, "mailsyncd.sqlite3")
            tp.at_append(sch.at, fire(lambda: threading.Thread(
                target=_hold_exclusive, args=(db, sch.seconds, lock_held), daemon=True).start()))
        elif sch.kind == "sighup":
            tp.at_append(sch.at, fire(d.sighup))
        elif sch.kind == "sigterm":
            tp.at_append(sch.at, fire(lambda: d.proc.send_signal(signal.SIGTERM)))
        elif sch.kind == "sigkill":
            tp.at_append(sch.at, fire(lambda: d.proc.kill()))

        d.start()
        immutable = False
        try:
            sessions = [Session(d, n) for n in range(2)]
            for s in sessions:
                s.start()
            wait_for(fired.is_set, 180, f"the fault ({sch})", d)
            t_fault = time.monotonic()
            immutable = sch.kind == "state_readonly"
            if sch.kind in ("sigterm", "sigkill"):
                rc = d.proc.wait(40)
                d._log.close()
                if sch.kind == "sigterm":
                    assert rc == 0, f"{sch}: SIGTERM exit code {rc}\n{d.log()[-3000:]}"
                    assert time.monotonic() - t_fault < 35
                d.start()
            elif sch.kind == "state_readonly":
                time.sleep(sch.seconds)
                _immutable(d, False)
                immutable = False
            elif sch.kind == "db_locked":
                assert lock_held.wait(40), "the lock was never taken"
                time.sleep(sch.seconds + 0.5)
            elif sch.kind == "target_outage":
                time.sleep(sch.seconds)
            offset = len(d.log())
            wait_for(lambda: _clean_pass_after(d, offset), 180, "a clean pass after the fault", d)
            tied = sch.kind in ("target_outage", "sigterm", "sigkill")
            errors = [s.finish() for s in sessions]
            if not tied:
                assert errors == [None, None], f"{sch}: relayed sessions died: {errors}"
                assert all(s.rounds > 0 for s in sessions)
        finally:
            if immutable:
                _immutable(d, False)
            rc = d.stop()
        skipped = _store_rows(d, "SELECT path, uid, reason FROM skipped WHERE account=?")
        log = d.log()
    events = sp.events + tp.events
    print("\n".join(events))
    assert rc == 0, f"{sch}: exit code {rc}"
    assert "Traceback" not in log, f"{sch}: traceback in the log:\n{_around(log, 'Traceback')}"

    # exactly the reported skips, and only where the target refused for good
    if sch.kind == "append_refused" and sch.code in ("TOOBIG", "LIMIT"):     # per message: skipped for good
        assert len(skipped) <= sch.count and all(f"[{sch.code}]" in r for _, _, r in skipped), skipped
    else:
        assert skipped == [], f"{sch}: skipped {skipped}"
    expected = {f: Counter(rows.values()) for f, rows in before.items()}
    for path, uid, _ in skipped:
        expected[path][before[path][uid]] -= 1
    got = manifest(*pair.target_master_account(A))
    problems = []
    for f, want in expected.items():
        have = Counter(got.get(f, {}).values())
        missing, extra = want - have, have - want
        if missing or extra:
            dup = sum(n for row, n in extra.items() if row in want)
            problems.append(f"{f}: {sum(missing.values())} missing, {sum(extra.values())} extra ({dup} duplicates)")
    problems += [f"{f}: unexpected non-empty folder on the target" for f in got if f not in expected and got[f]]
    assert not problems, f"{sch}: target differs: {problems}\n" + "\n".join(events)
    assert manifest("127.0.0.1", src.imap_port, A, SOURCE_USERS[A]) == before, f"{sch}: the source changed"


@functools.cache
def _corpus_bytes() -> int:
    return sum(len(m.raw) for msgs in corpus(MESSAGES).values() for m in msgs)


def _around(log: str, word: str, n: int = 2500) -> str:
    k = log.find(word)
    return log[max(0, k - 500):k + n]
