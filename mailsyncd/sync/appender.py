"""The one target writer: both engines (folder.py for IMAP sources, pop3.py for POP3) append through it.

Exactly-once rests on the in-flight journal: before each APPEND the target's
UIDNEXT (a lower bound of it: after the first batch, one past the last UID that APPENDUID named,
so no STATUS per batch) and the batch's fingerprints go into the store (``begin_batch``); the engine
then commits what landed in one transaction, which clears the journal.  After a
crash, ``recover`` fingerprints the target's messages from that UIDNEXT on and
matches them as a multiset, so nothing is appended twice and nothing is lost.

Some targets change a message at APPEND and say OK (Cyrus's default munge8bit turns raw 8-bit
header bytes into "X"): messages with such bytes in their header are read back (their headers,
one UID FETCH per batch that has any) and those that differ are reported as altered.

Refusals are classified here, once: a refusal about the target's state (RFC 5530
[OVERQUOTA], [UNAVAILABLE], [INUSE]) stops the batch and the folder waits for a
later pass; any other refusal is about the message and skips it for good.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from imapclient import exceptions as imapexc

from ..errors import FolderFailed, append_waits
from ..imap.folders import FolderPlan
from ..net.imap import Status, create_folder, fetch, folder_status, lost_is_transient, parse_appenduid, response_text
from ..store import Inflight, InflightItem
from .logic import fingerprint, match_fingerprints
from .popdate import header_block

logger = logging.getLogger(__name__)

ALTERED = "altered by the target: raw 8-bit header bytes were rewritten (Cyrus: set munge8bit: no)"

# Refusals about the target's state, not the message (RFC 5530): retried by a later pass, never skipped.
# Not [LIMIT]: Dovecot answers a message over quota_max_mail_size with it.


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to append; ``key`` is what the engine knows it by (IMAP UID, POP3 UIDL or number)."""
    key: int | str | None
    raw: bytes
    flags: tuple[str, ...]
    date: object            # tz-aware datetime, or None: the target stamps the time of the copy
    fp: bytes

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclass(slots=True)
class Written:
    landed: list[tuple[Outgoing, int | None, int | None]] = field(default_factory=list)  # (msg, tuidvalidity, tuid)
    refused: list[tuple[Outgoing, str]] = field(default_factory=list)                  # for good: the target's words
    later: str | None = None    # the target refused for now: the rest of the folder waits for a later pass
    altered: list[Outgoing] = field(default_factory=list)   # landed, but the target changed them (ALTERED)


def open_target(tgt, plan: FolderPlan, where: str, *, subscribe: bool) -> frozenset[str] | None:
    """Create (if need be) and SELECT the target folder: its PERMANENTFLAGS (None: not said)."""
    with lost_is_transient(f"target, {where}"):
        if not plan.target_exists:
            try:
                create_folder(tgt, plan.target, plan.create_use)
            except imapexc.IMAPClientError as e:
                if "EXISTS" not in str(e).upper():
                    raise FolderFailed(f"target refused to create folder {plan.target!r}: {server_words(e)}")
        if subscribe or not plan.target_exists:
            try:
                tgt.subscribe_folder(plan.target)
            except imapexc.IMAPClientError:
                pass  # subscription is a convenience; some servers have none
        try:
            # SELECT, not EXAMINE: a read-only select reports PERMANENTFLAGS ()
            info = tgt.select_folder(plan.target)
        except imapexc.IMAPClientError as e:
            raise FolderFailed(f"target cannot open folder {plan.target!r}: {server_words(e)}")
    perm = info.get(b"PERMANENTFLAGS")
    return frozenset(f.decode() if isinstance(f, bytes) else f for f in perm) if perm else None


class Appender:
    """Writes batches into one target folder for one engine's journal (account, path)."""

    def __init__(self, tgt, target: str, store, account: str, path: str, where: str, *, multiappend: bool,
                 lane: int = 0):
        self.tgt = tgt
        self.target = target
        self.store = store
        self.account = account
        self.path = path        # the journal's key: the source folder, or store.POP3_PATH
        self.where = where
        self.multiappend = multiappend
        self.lane = lane        # one of several connections copying the folder: its own journal row
        # A lower bound of the target's UIDNEXT known without asking: one past the last UID the target
        # gave us in APPENDUID (UIDs only grow).  It spares a STATUS per batch, and with it a sync of
        # the folder on the server; a folder renumbered meanwhile is caught by the next APPENDUID.
        self._known: Status | None = None
        self._resolved = False      # this batch's UIDs were found by fingerprint: no APPENDUID to go by

    def write(self, msgs: list[Outgoing]) -> Written:
        """Journal the batch, APPEND it, and say where each message went; the caller commits."""
        tst = self._known or self._status()
        self.store.begin_batch(self.account, self.path, Inflight(
            self.target, tst.uidvalidity, tst.uidnext,
            tuple(InflightItem(m.key, m.size, m.fp, m.flags) for m in msgs)), self.lane)
        self.store.check_lease()     # paused past the lease: another node may be copying this batch
        self._resolved = False
        with lost_is_transient(f"target, {self.where}"):
            out = self._append(msgs, tst)
            out.altered = self._altered(out.landed)
        self._known = None if self._resolved else _known_after(tst, out.landed)
        return out

    def _status(self) -> Status:
        with lost_is_transient(f"target, {self.where}"):
            return folder_status(self.tgt, self.target, ("UIDNEXT", "UIDVALIDITY"))

    def recover(self) -> list[tuple[InflightItem, int, int]] | None:
        """The journalled batches' messages already on the target: (item, tuidvalidity, tuid); none
        if the target folder was renumbered or renamed since.  None: nothing was journalled.

        Several lanes may have had a batch in flight: the target's messages from the lowest UIDNEXT
        recorded on, less those the UID map holds (another lane's batch, committed), are matched
        against the union of the batches, as a multiset."""
        rows = self.store.inflights(self.account, self.path)
        if not rows:
            return None
        out: list[tuple[InflightItem, int, int]] = []
        items = [it for r in rows for it in r.items]
        with lost_is_transient(f"target, {self.where}"):
            tst = folder_status(self.tgt, self.target, ("UIDNEXT", "UIDVALIDITY"))
            mine = [r for r in rows if r.target_name == self.target and r.target_uidvalidity == tst.uidvalidity]
            if mine:
                items = [it for r in mine for it in r.items]
                low = min(r.target_uidnext for r in mine)
                held = self.store.mapped_target_uids(self.account, self.path, tst.uidvalidity, low - 1)
                found = [(uid, fp) for uid, fp in self._target_fingerprints(low) if uid not in held]
                match = match_fingerprints(((i, it.fingerprint) for i, it in enumerate(items)), found)
                out = [(it, tst.uidvalidity, match[i]) for i, it in enumerate(items) if i in match]
        logger.info("event=recovered_batch %s in_flight=%d already_on_target=%d",
                    self.where, len(items), len(out))
        return out

    def _append(self, msgs: list[Outgoing], tst: Status) -> Written:
        if len(msgs) > 1 and self.multiappend:
            items = [{"msg": m.raw, "flags": m.flags, **({"date": m.date} if m.date is not None else {})}
                     for m in msgs]
            try:
                typ, data = self.tgt.multiappend(self.target, items)
            except imapexc.IMAPClientAbortError:
                raise
            except imapexc.IMAPClientError as e:   # BAD: imaplib raises where NO returns
                typ, data = "BAD", [str(e).encode()]
            if typ == "OK":
                au = parse_appenduid(response_text(data))
                if au and au[0] == tst.uidvalidity and len(au[1]) == len(msgs):
                    return Written([(m, au[0], tu) for m, tu in zip(msgs, au[1])])
                return Written(self._resolve(msgs, tst))
            # MULTIAPPEND is all or nothing: one bad message fails the lot, so retry one by one
            logger.info("event=multiappend_refused %s reason=%r", self.where, response_text(data))
        out, unknown = Written(), []
        for m in msgs:
            try:
                resp = self.tgt.append(self.target, m.raw, m.flags, m.date)
            except imapexc.IMAPClientAbortError:
                raise
            except imapexc.IMAPClientError as e:
                words = server_words(e)
                if append_waits(words):
                    out.later = words     # over quota or in use: no use trying the next ones
                    break
                out.refused.append((m, words))
                continue
            au = parse_appenduid(resp if isinstance(resp, bytes) else str(resp))
            if au and au[0] == tst.uidvalidity:
                out.landed.append((m, au[0], au[1][0]))
            else:
                unknown.append(m)
        if unknown:
            out.landed += self._resolve(unknown, tst)
        return out

    def _altered(self, landed: list[tuple[Outgoing, int | None, int | None]]) -> list[Outgoing]:
        """The landed messages with raw 8-bit header bytes whose header the target changed."""
        check = {tu: m for m, _, tu in landed if tu is not None and _eight_bit(header_block(m.raw))}
        if not check:
            return []   # the common case costs nothing
        data = fetch(self.tgt, sorted(check), [b"BODY.PEEK[HEADER]"])
        out = []
        for tu, m in check.items():
            got = data.get(tu, {}).get(b"BODY[HEADER]")
            if got is not None and _lf(header_block(got)) != _lf(header_block(m.raw)):
                out.append(m)
        return out

    def _resolve(self, msgs: list[Outgoing], tst: Status) -> list[tuple[Outgoing, int, int | None]]:
        """Targets without UIDPLUS: find what we appended by fingerprint, from UIDNEXT on.  (Also a
        target whose APPENDUID names another UIDVALIDITY than the one the batch was journalled with.)"""
        if tst is self._known:
            # a bound from an earlier batch: the folder may have been renumbered since; look again
            now = self._status()
            if now.uidvalidity != tst.uidvalidity:
                tst = replace(now, uidnext=1)
        self._resolved = True
        match = match_fingerprints(((i, m.fp) for i, m in enumerate(msgs)), self._target_fingerprints(tst.uidnext))
        return [(m, tst.uidvalidity, match.get(i)) for i, m in enumerate(msgs)]

    def _target_fingerprints(self, from_uid: int) -> list[tuple[int, bytes]]:
        self.tgt.select_folder(self.target)  # re-select: the messages just appended must be visible
        data = fetch(self.tgt, f"{from_uid}:*", [b"BODY.PEEK[]"])
        return [(uid, fingerprint(d[b"BODY[]"])) for uid, d in data.items()
                if uid >= from_uid and d.get(b"BODY[]") is not None]


def _known_after(tst: Status, landed: list[tuple[Outgoing, int | None, int | None]]) -> Status | None:
    """The next batch's UIDNEXT bound: past what APPENDUID said landed under the batch's UIDVALIDITY;
    None (ask the target) if anything landed under another one or where the target did not say."""
    if any(tv != tst.uidvalidity or tu is None for _m, tv, tu in landed):
        return None
    return replace(tst, uidnext=max([tst.uidnext, *(tu + 1 for _m, _tv, tu in landed)]))


def _eight_bit(b: bytes) -> bool:
    return not b.isascii()


def _lf(b: bytes) -> bytes:
    return b.replace(b"\r\n", b"\n")   # a target may store bare LF as CRLF: not a change of content


def prefetched(batches: Iterable, read: Callable, write: Callable, stop: threading.Event, name: str,
               reader_done: Callable[[], None] | None = None) -> None:
    """``write(read(batch))`` for each batch, reading the next batch on a second thread meanwhile.

    The reader reads a batch only when the writer asks for it, which it does as it takes the one
    before: at most two batches are held at once (one written, one read ahead) whatever the speed
    of either side, and a batch written is let go before the next is waited for.  A failure on
    either side stops both; the reader's is raised here once the writer is done.  ``reader_done``
    is called on the reading thread as it ends (``batches`` may read the store there: its
    connection is the thread's own).
    """
    asks: queue.Queue = queue.Queue()   # True: read the next batch; False: stop
    got: queue.Queue = queue.Queue()    # never more than one batch, by the asks
    failure: list[BaseException] = []

    def reader() -> None:
        it = iter(batches)
        try:
            while asks.get() and not stop.is_set():
                batch = next(it, None)
                if batch is None:
                    break
                got.put(read(batch))
        except BaseException as e:  # noqa: BLE001 - handed to the writer's thread
            failure.append(e)
        finally:
            try:
                if reader_done is not None:
                    reader_done()
            finally:
                got.put(None)   # the end

    t = threading.Thread(target=reader, name=name, daemon=True)
    t.start()
    asks.put(True)
    try:
        while (item := got.get()) is not None:
            asks.put(True)      # the next one is read while this one is written
            write(item)
            del item            # its bodies are freed now, not once the next batch is read
    finally:
        asks.put(False)
        t.join()
    if failure:
        raise failure[0]


def server_words(e: Exception) -> str:
    """The target's words from an imapclient error, without imapclient's prefix and bytes quoting."""
    text = str(e)
    for prefix in ("append failed: ", "create failed: ", "select failed: "):
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
    if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]
    return text.strip()


__all__ = ["ALTERED", "Appender", "Outgoing", "Written", "open_target", "prefetched", "server_words"]
