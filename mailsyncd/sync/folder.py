"""Copy one source folder to its target folder: new messages, then flag changes.

Exactly-once rests on three records in the store, each written before the step
it protects: the folder's mark (UIDVALIDITY and the UID at or below which every
message is done), the UID map (source UID -> target UID, fingerprint, flags last
agreed; above the mark it alone says what is done: a recent-first copy lands
out of UID order, see logic.Mark), and the
in-flight journal of a batch, kept by the one target writer (appender.py), which
also recovers a batch after a crash, so nothing is appended twice and nothing is lost.

The source is only ever EXAMINEd and read with BODY.PEEK.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

from imapclient import exceptions as imapexc

from ..errors import FolderFailed, MessageTooLarge
from ..imap.folders import FolderPlan
from ..net.imap import Status, fetch, fetch_sizes, folder_status, lost_is_transient
from ..net.imapguard import expect_lines, set_cap
from ..store import FolderReport, FolderState, MapRow
from ..text import shown
from . import expunge
from .appender import ALTERED, Appender, Outgoing, open_target, prefetched
from .lanes import Windows
from .logic import (MAX_UID, Mark, batches, bounded_uids, fingerprint, match_fingerprints, merge_flags, next_span,
                    source_flags, storable)

logger = logging.getLogger(__name__)

_FETCH_ITEMS = [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"]
# Messages listed at a time (about 300 bytes each while the window is copied): a folder's copy holds
# this many, not the folder's count (issue 16).  Tests make it small.
WINDOW = 5000


def unchanged(st: FolderState | None, status: Status) -> bool:
    """The source folder is as the last complete pass left it: nothing new, expunged or re-flagged
    (as far as its STATUS can tell: HIGHESTMODSEQ with CONDSTORE, else a timed flag rescan)."""
    return (st is not None and st.uidvalidity == status.uidvalidity and st.uidnext == status.uidnext
            and st.messages == status.messages and st.highestmodseq == status.highestmodseq)


class FolderSync:
    def __init__(self, ctx, src, tgt, plan: FolderPlan, status: Status, *, since: dt.date | None = None,
                 carried: FolderReport | None = None, lane: int = 0):
        self.ctx = ctx  # AccountContext: address, store, settings, progress, stop, capabilities
        self.src = src
        self.tgt = tgt
        self.plan = plan
        self.status = status
        self.since = since      # a recent-first slice: copy only what the source received on or after this day
        self.acct = ctx.address
        self.path = plan.path
        self.target = plan.target
        self.permanent: frozenset[str] | None = None
        # this pass's figures for the folder so far (its recent slice's, copied by an earlier FolderSync)
        self.copied = carried.copied if carried else 0
        self.nbytes = carried.bytes if carried else 0
        self.carried = carried is not None
        self._mark: Mark | None = None
        self._commit_lock = threading.Lock()
        self._windows: Windows | None = None
        self.lane = lane        # 0: the folder's own copy; else a lane joining it (``help``)
        self.deleted = 0
        self.altered = 0    # this pass: landed changed by the target (Written.altered)
        self.held = expunge.NO_UIDPLUS if self._mirror and not ctx.target_caps.uidplus else None
        self.where = f"account={self.acct} folder={self.path!r}"
        limit = ctx.target_caps.appendlimit
        self.cap = min(ctx.settings.max_message_size, limit) if limit else ctx.settings.max_message_size
        set_cap(src, self.cap)
        self.writer = Appender(tgt, self.target, ctx.store, self.acct, self.path, self.where,
                               multiappend=ctx.target_caps.multiappend, lane=lane)

    # -- entry point ---------------------------------------------------------
    def run(self) -> FolderReport:
        t0 = time.monotonic()
        store, status = self.ctx.store, self.status
        st = store.folder(self.acct, self.path)
        if (self.since is None and self.plan.target_exists and unchanged(st, status)
                and not self._flag_rescan_due(st) and not store.inflights(self.acct, self.path)):
            # nothing to copy, flag, expunge or recover: the target folder is not even opened
            return self._report(st, time.monotonic() - t0)
        self._open_both(first_time=st is None)
        if st is None:   # the first copy records the mapping; AccountSync keeps it from then on
            st = FolderState(self.path, self.plan.source, self.target, status.uidvalidity, 0, None, None, None, None)
            store.save_folder(self.acct, st)
        self._recover(st)
        if st.uidvalidity != status.uidvalidity:
            st = self._remap(st)

        if self.since is not None:
            # the recent slice only; the folder's own job copies the rest and records its UIDNEXT
            # (the source folder is EXAMINEd: _open_both)
            upto = self._copied_upto(st)
            if upto and self._resumed(st):
                self._sync_flags(st, upto, full=True)
            self._copy_new(st, only=self._recent())
            return self._report(store.folder(self.acct, self.path), time.monotonic() - t0)
        rescan_flags = self._flag_rescan_due(st)
        if not unchanged(st, status) or rescan_flags:     # the source folder is EXAMINEd: _open_both
            upto = self._copied_upto(st)
            self._copy_new(st)
            if self.ctx.stop.is_set():
                # Stopped between batches: recording the source's UIDNEXT and count now would
                # make the next pass take this folder for done and never copy the rest.
                return self._report(store.folder(self.acct, self.path), time.monotonic() - t0)
            if upto:
                # this pass's recent slice of the folder (self.carried) looked at them already
                self._sync_flags(st, upto, full=rescan_flags or (self._resumed(st) and not self.carried))
            again = self._deletions(st) if upto else False
            # deletions held back: leave the count unrecorded, so that the next pass looks again
            st = replace(store.folder(self.acct, self.path), uidnext=status.uidnext,
                         messages=None if again else status.messages,
                         highestmodseq=status.highestmodseq,
                         flags_checked=time.time() if rescan_flags else st.flags_checked)
            store.save_folder(self.acct, st)
        return self._report(st, time.monotonic() - t0)

    def _copied_upto(self, st: FolderState) -> int:
        """The highest UID copied before: the mark, or above it what an earlier pass copied out of order."""
        return max(self.ctx.store.mapped_uids(self.acct, self.path, st.uidvalidity, above=st.last_uid),
                   default=st.last_uid)

    @staticmethod
    def _resumed(st: FolderState) -> bool:
        """A first copy that an earlier pass began: no modseq to ask CHANGEDSINCE, its flags are read whole."""
        return st.uidnext is None and st.highestmodseq is None

    # -- target folder -----------------------------------------------------------
    def _ensure_target(self, first_time: bool) -> None:
        self.permanent = open_target(self.tgt, self.plan, self.where, subscribe=first_time)

    def _open_both(self, first_time: bool) -> None:
        """Open the target folder while the source folder is EXAMINEd (each pass that gets here reads
        the source).  After new mail each open may rescan the folder on the server (Dovecot's maildir:
        ~0.3 s at 100,000 messages, and again at each open for a second or so), so neither waits for
        the other, and the pass does not EXAMINE the source again (a UIDVALIDITY change re-selects it)."""
        failed: list[BaseException] = []

        def target() -> None:
            try:
                self._ensure_target(first_time)
            except BaseException as e:  # noqa: BLE001 - re-raised below, on this thread
                failed.append(e)
        t = threading.Thread(target=target, name=f"open-{self.acct}", daemon=True)
        t.start()
        try:
            with lost_is_transient(f"source, {self.where}"):
                self.src.select_folder(self.plan.source, readonly=True)  # EXAMINE
        finally:
            t.join()
        if failed:
            raise failed[0]

    # -- new messages ---------------------------------------------------------
    def _recent(self) -> set[int]:
        """The UIDs the source received on or after ``since`` (SINCE compares INTERNALDATE, RFC 3501)."""
        # a UID and a space per message the source says it holds: a longer answer is refused unread
        expect_lines(self.src, 11 * (self.status.messages + 1) + 1024)
        try:
            with lost_is_transient(f"source, {self.where}"):
                found = self.src.search(["SINCE", self.since])
        except imapexc.IMAPClientAbortError:
            raise
        except imapexc.IMAPClientError as e:   # NO or BAD: no recent slice, the folder goes in UID order
            logger.warning("event=recent_first_refused %s reason=%r", self.where, shown(str(e), 200))
            return set()
        return bounded_uids(found, self.status.uidnext)

    def _copy_new(self, st: FolderState, only: set[int] | None = None) -> None:
        """Copy what is left above the mark (``only``: just those of it), in UID order, listed a UID
        window at a time (``_listing``): what is held of a folder is bounded by the window, not the folder.
        A whole folder's windows are offered to idle workers of the pass, each a lane (sync/lanes.py)."""
        self._mark = Mark(st.last_uid)
        self._committed = st.last_uid
        if only is not None and not only:
            return
        if only is not None:
            self._copy(st, self._listing(st, only))
        else:
            windows = self._windows = Windows(st.last_uid + 1, self.status.uidnext, self._mark, self._commit_lock,
                                              WINDOW)
            # lanes need APPENDUID: without it what a batch landed as is found by content from UIDNEXT on
            offers = getattr(self.ctx, "offers", None) if self.ctx.target_caps.uidplus else None
            if offers is not None:
                offers.offer(self.path, windows, (self.plan, self.status, st))
            try:
                self._copy(st, self._shared_listing(st, windows))
            except _Abandoned:
                pass
            except BaseException as e:
                windows.fail(e)
                raise
            finally:
                if offers is not None:
                    offers.withdraw(self.path)
                windows.close()
            self.copied += windows.copied
            self.nbytes += windows.nbytes
            self.altered += windows.altered
            if windows.failed is not None:
                raise windows.failed
        if self._mark.mark > self._committed:   # the last windows were done already (out of order)
            self.ctx.store.commit_batch(self.acct, self.path, st.uidvalidity, [], [], self._mark.mark)

    def help(self, windows: Windows, st: FolderState) -> None:
        """Another lane of a folder another FolderSync copies: take its next windows until none is left."""
        self._windows, self._mark, self._commit_lock = windows, windows.mark, windows.commit_lock
        self._open_both(first_time=False)
        self._same_uidvalidity(st)
        try:
            self._copy(st, self._shared_listing(st, windows))
        except _Abandoned:
            pass

    def _copy(self, st: FolderState, listing: Iterator[tuple[int, int]]) -> None:
        s = self.ctx.settings
        try:
            prefetched(batches(listing, s.batch_messages, s.batch_bytes), self._fetch,
                       lambda msgs: self._append_batch(st, msgs), self.ctx.stop, f"fetch {self.path}",
                       reader_done=self.ctx.store.release_thread)
        except MessageTooLarge as e:
            if e.uid is not None:
                # Recorded, so that the retry on a new connection goes on without it.
                self._record_skipped(st, [(e.uid, e.actual, f"too large: the server sent {e.actual} bytes, "
                                                           f"RFC822.SIZE said {e.announced}; limit {e.limit}")])
                e.recorded = True
            raise

    def _shared_listing(self, st: FolderState, windows: Windows) -> Iterator[tuple[int, int]]:
        """(uid, size) of each message left to copy in the windows this lane takes (``_window``)."""
        skipped = {uid for _p, uid, _s, _r in self.ctx.store.skipped(self.acct, self.path) if uid > st.last_uid}
        first = True
        while (w := windows.take()) is not None:
            lo, hi, last = w
            if not first:
                self._same_uidvalidity(st)
            first = False
            listed, todo, count = self._window(st, lo, hi, last, skipped)
            self._mark.extend(listed, (u for u, _ in todo), reserved=lo)
            windows.listed(lo, hi, count)
            yield from todo

    def _window(self, st: FolderState, lo: int, hi: int, last: bool,
                skipped: set[int]) -> tuple[list[int], list[tuple[int, int]], int]:
        """One window's listing: (the UIDs in it, (uid, size) of those left to copy, how many the source
        named).  The source is hostile: a UID outside the window asked for is not taken from the answer."""
        store = self.ctx.store
        with lost_is_transient(f"source, {self.where}"):
            sizes = fetch_sizes(self.src, f"{lo}:*" if last else f"{lo}:{hi}")
        top = MAX_UID if last else hi
        strays = sum(1 for u in sizes if not lo <= u <= top)
        if strays and not (last and len(sizes) == 1):   # "lo:*" above the highest UID names the highest
            logger.warning("event=source_listing_outside_window %s window=%d:%s strays=%d",
                           self.where, lo, "*" if last else hi, strays)
        done = store.mapped_uids(self.acct, self.path, st.uidvalidity, above=lo - 1, upto=top)
        listed = [u for u in sizes if lo <= u <= top]
        todo = sorted((uid, size) for uid, size in sizes.items()
                      if lo <= uid <= top and uid not in done and uid not in skipped)
        return listed, todo, len(sizes)

    def _listing(self, st: FolderState, only: set[int]) -> Iterator[tuple[int, int]]:
        """(uid, size) of each message of a recent slice (``only``) left to copy above the mark, a window
        of about WINDOW messages at a time (``_window``: ``UID FETCH lo:hi (RFC822.SIZE)``; the last window
        ``lo:*``).  Runs on the fetching thread, between its batches; a UIDVALIDITY change between windows
        stops the folder (the next pass re-identifies what was copied: ``_remap``).  A whole folder's
        windows: ``_shared_listing``."""
        uidnext = self.status.uidnext
        skipped = {uid for _p, uid, _s, _r in self.ctx.store.skipped(self.acct, self.path) if uid > st.last_uid}
        lo, span, first = st.last_uid + 1, WINDOW, True
        # A recent slice starts at its lowest UID, and the mark then stays: what lies below was not listed.
        # It also stays once a UID is left that the slice does not copy: later windows cannot move it.
        frozen = min(only) > lo
        lo = max(lo, min(only))
        while lo <= MAX_UID and lo <= max(only):
            hi = min(lo + span - 1, MAX_UID)
            last = not uidnext or hi >= uidnext - 1 or hi == MAX_UID
            if not first:
                self._same_uidvalidity(st)
            first = False
            listed, todo, count = self._window(st, lo, hi, last, skipped)
            if not frozen:
                self._mark.extend(listed, (u for u, _ in todo))
            frozen = frozen or any(uid not in only for uid, _ in todo)
            yield from [(uid, size) for uid, size in todo if uid in only]
            if last:
                return
            lo, span = hi + 1, next_span(span, count, WINDOW)

    def _same_uidvalidity(self, st: FolderState) -> None:
        """EXAMINE again before the next window: a source that renumbered the folder meanwhile is caught here."""
        with lost_is_transient(f"source, {self.where}"):
            got = self.src.select_folder(self.plan.source, readonly=True)
        now = got.get(b"UIDVALIDITY")
        if now != st.uidvalidity:
            raise FolderFailed(f"the source changed the folder's UIDVALIDITY from {st.uidvalidity} to {now!r} "
                               f"during the copy; the next pass re-identifies what was copied")

    def _record_skipped(self, st: FolderState, skipped: list[tuple[int, int, str]]) -> None:
        self.ctx.store.commit_batch(self.acct, self.path, st.uidvalidity, [], skipped, None, self.lane)
        for uid, size, reason in skipped:
            logger.warning("event=message_skipped %s uid=%d size=%d reason=%r", self.where, uid, size, reason)
        self.ctx.progress.advance(self.path, len(skipped), 0)

    def _flag_dropped(self, uid: int, flag) -> None:
        logger.warning("event=flag_dropped user=%s folder=%s uid=%d flag=%s",
                       self.acct, shown(self.path, 80), uid, shown(repr(flag), 80))

    def _fetch(self, batch: list[tuple[int, int]]) -> list[Outgoing | int | tuple[int, int, str]]:
        """The batch's messages; an int: expunged meanwhile; (uid, size, reason): too large, not fetched."""
        out: list[Outgoing | int | tuple[int, int, str]] = [
            (uid, size, f"too large: {size} bytes (RFC822.SIZE), the limit is {self.cap}")
            for uid, size in batch if size > self.cap]
        batch = [(uid, size) for uid, size in batch if size <= self.cap]
        if not batch:
            return out
        uids = [u for u, _ in batch]
        with lost_is_transient(f"source, {self.where}"):
            data = fetch(self.src, uids, _FETCH_ITEMS, sizes=dict(batch), on_dropped=self._flag_dropped)
        for uid, size in batch:
            d = data.get(uid)
            raw = d.get(b"BODY[]") if d else None
            if raw is None:
                out.append(uid)  # expunged meanwhile: nothing to copy
                continue
            out.append(Outgoing(uid, raw, source_flags(d.get(b"FLAGS", ())), d.get(b"INTERNALDATE"),
                                fingerprint(raw)))
        return out

    def _append_batch(self, st: FolderState, batch: list[Outgoing | int | tuple[int, int, str]]) -> None:
        if self._windows is not None and self._windows.failed is not None:
            raise _Abandoned()      # another lane failed: the folder's retry recovers from the journal
        msgs = [m for m in batch if isinstance(m, Outgoing)]
        gone = sum(1 for m in batch if isinstance(m, int))
        uids = [m if isinstance(m, int) else m[0] if isinstance(m, tuple) else m.key for m in batch]
        rows: list[MapRow] = []
        # too large: recorded with the batch, as the journal of the batch in flight is cleared by every commit
        skipped: list[tuple[int, int, str]] = [m for m in batch if isinstance(m, tuple)]
        altered: list[tuple[int, int, str]] = []
        later = None
        if msgs:
            out = self.writer.write([replace(m, flags=storable(m.flags, self.permanent)[0]) for m in msgs])
            rows = [MapRow(m.key, tv, tu, m.size, m.fp, tuple(sorted(m.flags))) for m, tv, tu in out.landed]
            skipped += [(m.key, m.size, f"target refused: {words}") for m, words in out.refused]
            altered = [(m.key, m.size, ALTERED) for m in out.altered]
            later = out.later
        # A full target: record what landed, keep the mark, and let a later pass copy the rest.
        # A mark and the batch that moved it are recorded together, one lane at a time: no lane records
        # a mark above a batch another lane has not recorded yet.
        with self._commit_lock:
            mark = None if later else self._mark.done(uids)
            self.ctx.store.commit_batch(self.acct, self.path, st.uidvalidity, rows, skipped, mark, self.lane)
        if mark is not None:
            self._committed = mark
        if altered:
            self.ctx.store.record_altered(self.acct, self.path, st.uidvalidity, altered)
            self.altered += len(altered)
        n = len(rows)
        nbytes = sum(r.size for r in rows)
        self.copied += n
        self.nbytes += nbytes
        for uid, size, reason in skipped:
            logger.warning("event=message_skipped %s uid=%d size=%d reason=%r", self.where, uid, size, reason)
        self.ctx.progress.advance(self.path, n + len(skipped) + gone, nbytes)
        if later:
            raise FolderFailed(f"target refused APPEND: {later}; the rest of this folder waits for a later pass")

    # -- crash recovery and UIDVALIDITY changes ---------------------------------
    def _recover(self, st: FolderState) -> None:
        found = self.writer.recover()
        if found is None:
            return
        rows = [MapRow(it.key, tv, tu, it.size, it.fingerprint, it.flags) for it, tv, tu in found]
        self.ctx.store.commit_batch(self.acct, self.path, st.uidvalidity, rows, (), None, lane=None)
        self.ctx.progress.note_present(self.path, len(rows))

    def _remap(self, st: FolderState) -> FolderState:
        """The source renumbered the folder: re-identify what we copied by size, then fingerprint."""
        store, new_v = self.ctx.store, self.status.uidvalidity
        old = store.map_rows(self.acct, self.path, st.uidvalidity) if st.uidvalidity is not None else {}
        rows: dict[int, MapRow] = {}
        if old:
            with lost_is_transient(f"source, {self.where}"):
                self.src.select_folder(self.plan.source, readonly=True)
                sizes = fetch(self.src, "1:*", [b"RFC822.SIZE"])
                wanted_sizes = {r.size for r in old.values()}
                cand = sorted((uid, int(d.get(b"RFC822.SIZE", 0))) for uid, d in sizes.items()
                              if int(d.get(b"RFC822.SIZE", -1)) in wanted_sizes)
                found: list[tuple[int, bytes]] = []
                s = self.ctx.settings
                for batch in batches(cand, s.batch_messages, s.batch_bytes):
                    data = fetch(self.src, [u for u, _ in batch], [b"BODY.PEEK[]"])
                    found += [(u, fingerprint(d[b"BODY[]"])) for u, d in data.items() if d.get(b"BODY[]")]
            match = match_fingerprints(((r.uid, r.fingerprint) for r in old.values()), found)
            rows = {new: replace(old[o], uid=new) for o, new in match.items()}
        logger.warning("event=uidvalidity_changed %s old=%s new=%s remapped=%d of %d",
                       self.where, st.uidvalidity, new_v, len(rows), len(old))
        store.replace_uidvalidity(self.acct, self.path, st.uidvalidity or 0, new_v, rows)
        st = replace(st, uidvalidity=new_v, last_uid=0, uidnext=None, messages=None, highestmodseq=None)
        store.save_folder(self.acct, st)
        return st

    # -- flags ---------------------------------------------------------------
    def _flag_rescan_due(self, st: FolderState) -> bool:
        if self.status.highestmodseq is not None or not st.last_uid:
            return False  # CONDSTORE tells us what changed
        return st.flags_checked is None or time.time() - st.flags_checked >= self.ctx.settings.flag_rescan

    def _sync_flags(self, st: FolderState, upto: int, *, full: bool) -> None:
        store = self.ctx.store
        mods = [f"CHANGEDSINCE {st.highestmodseq}"] if (st.highestmodseq and not full) else None
        if mods is None and not full:
            return
        with lost_is_transient(f"source, {self.where}"):
            data = fetch(self.src, f"1:{upto}", [b"FLAGS"], mods, on_dropped=self._flag_dropped)
        now_src = {uid: source_flags(d.get(b"FLAGS", ())) for uid, d in data.items() if uid <= upto}
        base = store.map_rows(self.acct, self.path, st.uidvalidity, now_src.keys())
        changed = {uid: f for uid, f in now_src.items() if uid in base and base[uid].target_uid
                   and f != base[uid].flags}
        if not changed:
            return
        by_tuid = {base[uid].target_uid: uid for uid in changed}
        with lost_is_transient(f"target, {self.where}"):
            self.tgt.select_folder(self.target)  # refresh the view: STORE needs the current UIDs
            tdata = fetch(self.tgt, sorted(by_tuid), [b"FLAGS"])
            plan: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
            for tuid, d in tdata.items():
                uid = by_tuid.get(tuid)
                if uid is None:
                    continue
                tgt_now = set(source_flags(d.get(b"FLAGS", ())))
                want = merge_flags(base[uid].flags, changed[uid], tgt_now)
                want = set(storable(want, self.permanent)[0])
                add, rem = tuple(sorted(want - tgt_now)), tuple(sorted(tgt_now - want))
                if add or rem:
                    plan.setdefault((add, rem), []).append(tuid)
            for (add, rem), tuids in plan.items():
                if add:
                    self.tgt.add_flags(tuids, add, silent=True)
                if rem:
                    self.tgt.remove_flags(tuids, rem, silent=True)
        store.update_flags(self.acct, self.path, st.uidvalidity, changed)
        logger.info("event=flags_synced %s changed_at_source=%d stored=%d",
                    self.where, len(changed), sum(len(v) for v in plan.values()))

    # -- deletions (sync/expunge.py) --------------------------------------------
    @property
    def _mirror(self) -> bool:
        return self.ctx.settings.deletions == "mirror"

    def _deletions(self, st: FolderState) -> bool:
        """Expunge on the target what the source expunged; True: some were held back."""
        if not self._mirror:
            return False
        out = expunge.mirror(self, st)
        self.deleted, self.held = out.deleted, out.held
        return out.again

    # -- report ----------------------------------------------------------------
    def _report(self, st: FolderState, seconds: float) -> FolderReport:
        store = self.ctx.store
        with lost_is_transient(f"target, {self.where}"):
            tcount = folder_status(self.tgt, self.target, ("MESSAGES",)).messages
        skipped = store.count_skipped(self.acct, self.path, st.uidvalidity)
        mapped = store.count_mapped(self.acct, self.path, st.uidvalidity)
        present = max(0, min(mapped - self.copied, self.status.messages - self.copied - skipped))
        # "on target" is what the UID map says came from this folder, never the target folder's
        # MESSAGES: a merged or pre-filled target folder would otherwise show more than the source
        # the usual target folder has one source folder: its count is the one just taken (not a second O(map) join)
        into = (mapped if store.sources_into(self.acct, self.target) == [(self.path, st.uidvalidity)]
                else store.count_mapped_into(self.acct, self.target))
        already = max(0, tcount - into)
        if self.altered:
            logger.warning("event=target_altered %s target=%r messages=%d reason=%r",
                           self.where, self.target, self.altered, ALTERED)
        r = FolderReport(self.path, self.target, self.status.messages, mapped, self.copied, present, skipped,
                         self.nbytes, round(seconds, 3), None, time.time(), self.deleted, self.held, already,
                         store.count_altered(self.acct, self.path, st.uidvalidity))
        store.save_report(self.acct, r)
        return r


class _Abandoned(Exception):
    """A lane stops after its batch: another lane of the folder failed."""


__all__ = ["FolderSync", "unchanged"]
