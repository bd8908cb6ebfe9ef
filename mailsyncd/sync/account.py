"""One pass over one account: list, plan, and copy folders with a few parallel workers.

Errors stay where they happen: a message the target refuses is skipped and
recorded, a folder that fails is reported and the others go on, and a lost
connection is re-opened with backoff and the folder resumes from its mark.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

from imapclient import exceptions as imapexc

from ..providers import quirks
from ..text import shown
from ..errors import (
    AuthFailed,
    ConnectionLost,
    FolderFailed,
    LeaseLost,
    MailsyncError,
    MessageTooLarge,
    ProtocolError,
    TLSFailure,
    Unreachable,
    looks_throttled,
)
from ..imap.caps import appendlimit
from ..imap.folders import FolderPlan, Skipped, keep_recorded, plan_folders
from ..net import imap
from ..net.imap import Status
from ..focus import FocusQueue
from ..store import FolderReport, Store
from . import recent
from . import folder as _folder
from .folder import FolderSync, unchanged
from .lanes import Offers
from .progress import Progress

logger = logging.getLogger(__name__)

WAIT = object()     # AccountSync's job queue: nothing to take now, but later


@dataclass(frozen=True, slots=True)
class TargetCaps:
    multiappend: bool
    uidplus: bool
    appendlimit: int | None = None    # APPENDLIMIT=n (RFC 7889): the largest message the target takes


@dataclass
class AccountContext:
    address: str
    store: Store
    settings: object          # config.SyncSettings
    progress: Progress
    stop: threading.Event
    target_caps: TargetCaps = TargetCaps(False, False)
    offers: Offers | None = None     # folders whose copy idle workers may join as further lanes


@dataclass
class PassResult:
    address: str
    folders: list[FolderReport] = field(default_factory=list)
    skipped_folders: list[Skipped] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None     # the exception class: AuthFailed, Unreachable, ...
    throttled: bool = False           # the source refused connections or said "too many"
    connections: int = 0              # source connections the pass ended up using
    seconds: float = 0.0

    def _total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.folders)

    # the pass's figures: the sums of its folders'
    copied = property(lambda self: self._total("copied"))
    present = property(lambda self: self._total("present"))
    skipped = property(lambda self: self._total("skipped"))
    bytes = property(lambda self: self._total("bytes"))
    deleted = property(lambda self: self._total("deleted"))
    altered = property(lambda self: self._total("altered"))

    @property
    def complete(self) -> bool:
        """Every source message is on the target as it was (nothing skipped or altered, no folder failed)."""
        return self.error is None and all(f.error is None and f.skipped == 0 and f.altered == 0
                                          for f in self.folders)


class AccountSync:
    def __init__(self, domain, address: str, password: str, store: Store, *,
                 progress: Progress | None = None, stop: threading.Event | None = None,
                 connections: int | None = None, source_address: str | None = None,
                 pop3_fallback: bool | None = None, record_phase: bool = True, focus=None):
        self.domain = domain
        # focus: a list of source paths (a pass of just those, in that order), or the scheduler's FocusQueue
        # (focus.py: folders a running pass takes before its planned order)
        self.focus = focus if focus is None or isinstance(focus, FocusQueue) else FocusQueue(focus, only=True)
        # a focused pass checks only some folders: it says nothing about the account's pass history or phase
        self.record_pass = self.focus is None or not self.focus.only
        # False: a one-off pass (mailsyncctl sync) that leaves the account's phase, as the daemon sees it, alone
        self.record_phase = record_phase
        # POP3 source without UIDL: match by content (True), fail (False), None: source.pop3_no_uidl
        self.pop3_fallback = pop3_fallback
        self.source_address = source_address or address   # a renaming migration logs in as another user
        self.connections = connections    # the scheduler's grant; None: the domain's sync.connections
        self.address = address
        self._password = password
        self.store = store
        self.progress = progress or Progress()
        self.stop = stop or threading.Event()

    # -- connections -------------------------------------------------------
    def _open_source(self):
        return imap.open_session(self.domain.source, role="source", address=self.source_address,
                                 password=self._password)

    def _open_target(self):
        return imap.open_session(self.domain.target, role="target", address=self.address, password=self._password)

    def _open_pair(self):
        src = self._open_source()
        try:
            return src, self._open_target()
        except BaseException:
            imap.close(src)
            raise

    # -- the pass ------------------------------------------------------------
    def run(self) -> PassResult:
        t0 = time.monotonic()
        res = PassResult(self.address)
        self.store.ensure_account(self.address, self.domain.name)
        pass_id = self.store.start_pass(self.address) if self.record_pass else None
        if self.record_pass and self.record_phase:
            self.store.set_phase(self.address, "syncing")
        try:
            self._run(res)
            if self.stop.is_set() and res.error is None:
                # Some folders may not have been visited: this pass proves nothing about completeness.
                res.error, res.error_kind = "stopped before the pass finished", "Stopped"
        except MailsyncError as e:
            res.error = str(e)
            res.error_kind = type(e).__name__
            res.throttled = res.throttled or looks_throttled(res.error)
        finally:
            res.seconds = time.monotonic() - t0
            if pass_id is not None and res.error_kind != "LeaseLost":   # another node has the account now: not a row more
                try:
                    self._finish(pass_id, res)
                except LeaseLost as e:
                    res.error, res.error_kind = str(e), "LeaseLost"
        error = f" error={res.error!r}" if res.error else ""
        if pass_id is None:
            logger.info("event=focused_pass_done account=%s folders=%r copied=%d seconds=%.2f%s", self.address,
                        [f.path for f in res.folders], res.copied, res.seconds, error)
        else:
            logger.info("event=pass_done account=%s ok=%s copied=%d present=%d skipped=%d bytes=%d seconds=%.2f%s",
                        self.address, res.complete, res.copied, res.present, res.skipped, res.bytes, res.seconds,
                        error)
        return res

    def _finish(self, pass_id: int, res: PassResult) -> None:
        self.store.finish_pass(pass_id, ok=res.complete, copied=res.copied, present=res.present,
                               skipped=res.skipped, nbytes=res.bytes, error=res.error, deleted=res.deleted)
        if res.error_kind == "Stopped" or not self.record_phase:
            pass    # still "syncing": the next start resumes from the marks
        else:
            self.store.set_phase(self.address, "failed" if res.error else "synced", res.error)

    def _run(self, res: PassResult) -> None:
        if self.domain.source.protocol == "pop3":
            from .pop3 import Pop3Pass
            Pop3Pass(self, self.pop3_fallback).run(res)
            return
        src, tgt = self._with_retries(self._open_pair, "connect")
        try:
            refused: list[Skipped] = []   # source names with CR/LF/NUL or bad UTF-7: never copied
            if isinstance(self.focus, FocusQueue):
                self.focus.snapshot()     # folders opened from now on need a newer STATUS than this one
            with imap.lost_is_transient("listing folders"):
                src_boxes, src_status = imap.list_mailboxes(src, with_status=True, refused=refused)
                tgt_boxes, _ = imap.list_mailboxes(tgt, with_status=False)
                src_ns = imap.namespaces(src, f"account={self.address} side=source")
                tgt_ns = imap.namespaces(tgt, f"account={self.address} side=target")
            caps = TargetCaps(tgt.has_capability("MULTIAPPEND"), tgt.has_capability("UIDPLUS"),
                              appendlimit(tgt.capabilities()))
        except BaseException:
            imap.close(src)
            imap.close(tgt)
            raise
        plans, res.skipped_folders = plan_folders(src_boxes, tgt_boxes, self.domain.folders, src_ns, tgt_ns,
                                                  tgt.has_capability("CREATE-SPECIAL-USE"),
                                                  skip=quirks.skip_folders(self.domain.source))
        # A folder copied before stays where its first copy put it: never split a folder silently.
        recorded = {path: st.target_name for path, st in self.store.folders(self.address).items()}
        plans, changes = keep_recorded(plans, recorded, tgt_boxes)
        for c in changes:
            logger.warning("event=mapping_changed account=%s folder=%r kept=%r would_be=%r "
                           "(mailsyncctl remap %s --folder %r applies it)",
                           self.address, c.path, c.kept, c.would_be, self.address, c.path)
        self.store.set_mapping_changes(self.address, {c.path: c.would_be for c in changes})
        for s in res.skipped_folders:
            if "not a mailbox" in s.reason:
                continue  # implicit parents: nothing to copy, nothing to report
            logger.info("event=folder_not_synced account=%s folder=%r reason=%r", self.address, s.path, s.reason)
        res.skipped_folders += refused   # logged as folder_name_refused already
        self.store.set_skipped_folders(self.address, res.skipped_folders)
        for p in plans:
            if p.merged_with:
                logger.warning("event=folders_merged account=%s folder=%r target=%r with=%r",
                               self.address, p.path, p.target, list(p.merged_with))
        offers = Offers()
        ctx = AccountContext(self.address, self.store, self.domain.sync, self.progress, self.stop, caps, offers)
        jobs = [(p, src_status[p.source]) for p in plans if p.source in src_status]
        only = self.focus is not None and self.focus.only
        wanted = {p.path for p in plans if self.focus.names(p.path, p.target)} if only else None
        for p in plans:
            # the source would not even say how many messages it holds
            if p.source not in src_status and (wanted is None or p.path in wanted):
                res.folders.append(self._failed(p, Status(0, 0, 0, None), "source refused STATUS for this folder"))
        states = self.store.folders(self.address)
        # after the folders' rows exist (the first pass creates them)
        sizes = {p.path: st.size for p, st in jobs if st.size is not None}
        left: dict[str, int] = {}
        for p, st in jobs:
            if wanted is not None and p.path not in wanted:
                continue
            fs = states.get(p.path)
            known = 0
            if unchanged(fs, st):     # nothing to copy: no need to count what the map holds
                left[p.path] = 0
                continue
            if fs and fs.uidvalidity == st.uidvalidity:
                known = self.store.count_mapped(self.address, p.path, st.uidvalidity) + \
                    self.store.count_skipped(self.address, p.path, st.uidvalidity)
            left[p.path] = max(0, st.messages - known)
        self.progress.add_total(sum(left.values()))
        if self.focus is not None:
            self.focus.plan({p.target: p.path for p in plans}, left)
            for p in plans:
                if p.source not in src_status:
                    self.focus.done(p.path, "source refused STATUS for this folder")
        # a focused pass has no order of its own: it copies what its queue names
        try:
            order = [] if only else [(p.path, since) for p, _, since in self._order(src, jobs, states)]
        except BaseException:
            imap.close(src)
            imap.close(tgt)
            raise
        n_jobs = len(wanted) if only else len(jobs)
        pending = {p.path: (p, st) for p, st in jobs}
        planned = dict(pending)
        slicing: set[str] = set()   # folders whose recent slice runs now: no other job may take them meanwhile

        def focus_take():
            free = {path: job for path, job in pending.items() if path not in slicing}
            job = self.focus.take(free, planned)
            if job is None:
                return None
            pending.pop(job[0].path, None)
            return (*job, None)

        def take():
            """(plan, status, since), WAIT while a recent slice runs and the rest waits for it, or None."""
            job = focus_take() if self.focus is not None else None
            while job is None and order:
                path, since = order[0]
                if since is None and slicing:
                    return WAIT
                order.pop(0)
                if since is not None:
                    if path in pending:     # else the user opened it and it is copied whole already
                        slicing.add(path)
                        job = (*planned[path], since)
                elif path in pending:
                    if self.progress.stage == "recent":   # its slices were all copied whole (opened by the user)
                        self.progress.set_stage("rest")
                    job = (*pending.pop(path), None)
            return job

        reports: dict[str, FolderReport] = {}
        lock = threading.Condition()
        # a large folder is copied by several workers at once, a UID window each (sync/lanes.py)
        lanes = n_jobs if only or not caps.uidplus else sum(max(1, -(-k // _folder.WINDOW)) for k in left.values())
        n = max(1, min(self.connections or self.domain.sync.connections, max(n_jobs, lanes)))
        running: set[str] = set()   # folders being copied: one may yet offer windows to join
        conns = [(src, tgt)] + [None] * (n - 1)
        errors: list[BaseException] = []

        def worker(i: int, focus_only: bool = False) -> None:
            # focus_only: a worker the scheduler added for folders the user opened (FocusQueue.grant)
            pair = conns[i]
            try:
                if focus_only and not self.focus.waiting():
                    return
                if pair is None:
                    try:
                        pair = self._open_pair()
                    except MailsyncError as e:
                        # The first connection works: go on with fewer rather than fail the pass.
                        res.throttled = res.throttled or looks_throttled(str(e))
                        logger.warning("event=extra_connection_refused account=%s worker=%d reason=%r",
                                       self.address, i, str(e))
                        return
                with lock:
                    res.connections += 1
                while not self.stop.is_set():
                    joined = None
                    with lock:
                        job = focus_take() if focus_only else take()
                        if job is WAIT:
                            lock.wait(0.5)
                            continue
                        if job is None and not focus_only:
                            joined = offers.pick()
                            if joined is None and running:
                                lock.wait(0.2)      # the folder being opened may yet offer its windows
                                continue
                        if job is not None:
                            running.add(job[0].path)
                    if joined is not None:
                        pair = self._lane(ctx, pair, *joined)
                        if pair is None:
                            return      # its connections failed: the pass goes on with fewer
                        continue
                    if job is None:
                        return
                    plan, status, since = job
                    stale = None
                    if not since and self.focus is not None and self.focus.fresh(plan.path):
                        pair, status, stale = self._status_again(pair, plan, status)
                    carried = None if since else reports.get(plan.path)
                    try:
                        pair, rep = self._folder_with_retries(ctx, pair, plan, status, since=since,
                                                              carried=carried)
                        with lock:
                            reports[plan.path] = rep
                    finally:
                        with lock:
                            running.discard(plan.path)
                            lock.notify_all()
                        if since:
                            with lock:
                                slicing.discard(plan.path)
                                if not slicing and not (order and order[0][1]):
                                    self.progress.set_stage("rest")
                                lock.notify_all()
                    if self.focus is not None and not since:    # a slice is not the whole folder
                        self.focus.done(plan.path, rep.error or stale, rep.copied)
            except BaseException as e:  # noqa: BLE001 - re-raised on the calling thread
                if isinstance(e, LeaseLost):
                    self.stop.set()          # the other workers stop too, rather than each find out
                errors.append(e)
            finally:
                if pair:
                    imap.close(pair[0])
                    imap.close(pair[1])
                self.store.release_thread()

        threads = [threading.Thread(target=worker, args=(i,), name=f"sync-{self.address}-{i}", daemon=True)
                   for i in range(n)]
        joined = False

        def spawn() -> bool:
            """One more worker, for the focus queue only (called by the scheduler, on the reactor)."""
            with lock:
                if joined:
                    return False
                conns.append(None)
                t = threading.Thread(target=worker, args=(len(conns) - 1, True), daemon=True,
                                     name=f"sync-{self.address}-focus")
                threads.append(t)
            t.start()
            return True

        for t in threads:
            t.start()
        if self.focus is not None:
            self.focus.attach(spawn)
        done_joining = 0
        while True:
            with lock:
                if done_joining == len(threads):
                    joined = True
                    break
                t = threads[done_joining]
            t.join()
            done_joining += 1
        if self.focus is not None:
            self.focus.attach(None)
        res.folders += [reports[p.path] for p in plans if p.path in reports]
        for e in errors:
            if isinstance(e, LeaseLost):
                raise e
        if not self.stop.is_set():
            self.progress.set_stage("done")
        if sizes:
            self.store.set_source_sizes(self.address, sizes)
        if errors:
            raise errors[0]

    def _order(self, src, jobs: list[tuple[FolderPlan, Status]], states) -> list[tuple]:
        """The folder jobs, (plan, status, since): recent mail first while a first copy runs
        (sync/recent.py), else the biggest folders first, so the pass ends with short jobs."""
        days = self.domain.sync.recent_first
        unfinished = {p.path for p, st in jobs if recent.incomplete(states.get(p.path), st)}
        if not days or not unfinished:
            return [(p, st, None) for p, st in sorted(jobs, key=lambda j: j[1].messages, reverse=True)]
        probe = [p for p, st in jobs if p.path in unfinished and p.role not in recent.HEAD_ROLES and st.messages]
        with imap.lost_is_transient("ordering folders"):
            newest = recent.newest(src, probe, f"account={self.address}")
        queue = recent.order(jobs, unfinished, newest, recent.cutoff(days))
        if any(j[2] for j in queue):
            self.progress.set_stage("recent")
            logger.info("event=recent_first account=%s days=%d folders=%r", self.address, days,
                        [j[0].path for j in queue if j[2]])
        return queue

    def _folder_with_retries(self, ctx, pair, plan: FolderPlan, status: Status, **kw):
        s = self.domain.sync
        delay = s.retry_backoff
        attempt = 0
        while attempt <= s.retries:
            try:
                if pair is None:
                    pair = self._open_pair()
                self.progress.folder(plan.path, True)
                return pair, _run_folder(FolderSync(ctx, pair[0], pair[1], plan, status, **kw))
            except FolderFailed as e:
                logger.error("event=folder_failed account=%s folder=%r reason=%r", self.address, plan.path, str(e))
                return pair, self._failed(plan, status, str(e))
            except (AuthFailed, TLSFailure, LeaseLost):
                raise
            except MailsyncError as e:
                if isinstance(e, MessageTooLarge) and e.recorded:
                    # recorded as skipped: reconnect at once and go on without it (no attempt used up)
                    logger.info("event=reconnect account=%s folder=%r reason=%r", self.address, plan.path, str(e))
                    imap.close(pair[0])
                    imap.close(pair[1])
                    pair = None
                    continue
                transient = isinstance(e, (ConnectionLost, Unreachable))
                if not transient or attempt == s.retries:
                    logger.error("event=folder_failed account=%s folder=%r reason=%r",
                                 self.address, plan.path, str(e))
                    if pair and not transient:   # a malformed answer: the stream cannot be trusted after it
                        imap.close(pair[0])
                        imap.close(pair[1])
                        pair = None
                    return pair, self._failed(plan, status, str(e))
                logger.warning("event=retry account=%s folder=%r attempt=%d wait=%.1fs reason=%r",
                               self.address, plan.path, attempt + 1, delay, str(e))
            finally:
                self.progress.folder(plan.path, False)
            attempt += 1
            if pair:
                imap.close(pair[0])
                imap.close(pair[1])
            pair = None
            if self.stop.wait(delay * (0.5 + random.random())):
                break
            delay = min(delay * 2, 60.0)
        return pair, self._failed(plan, status, "stopped before this folder finished")

    def _lane(self, ctx, pair, windows, job, lane: int):
        """Copy windows of a folder another worker copies, as lane ``lane``; the pair to go on with (None:
        none).  A failure stops the folder's other lanes: its own worker then retries the folder (recovering
        every lane's batch), so it is logged here and not raised, unless the pass must end."""
        plan, status, st = job
        fs = None
        if pair is None:
            try:
                pair = self._open_pair()
            except MailsyncError as e:      # no lane more: the folder goes on without it
                logger.warning("event=extra_connection_refused account=%s folder=%r reason=%r",
                               self.address, plan.path, str(e))
                windows.leave(0, 0, 0)
                return None
        try:
            fs = FolderSync(ctx, pair[0], pair[1], plan, status, lane=lane)
            _run_folder(fs, lambda: fs.help(windows, st))
        except BaseException as e:  # noqa: BLE001 - handed to the folder's own worker
            windows.fail(e)
            if isinstance(e, (LeaseLost, AuthFailed, TLSFailure)) or not isinstance(e, MailsyncError):
                raise
            logger.warning("event=lane_failed account=%s folder=%r lane=%d reason=%r",
                           self.address, plan.path, lane, str(e))
            if pair:
                imap.close(pair[0])
                imap.close(pair[1])
            pair = None
        finally:
            windows.leave(fs.copied if fs else 0, fs.nbytes if fs else 0, fs.altered if fs else 0)
        return pair

    def _status_again(self, pair, plan: FolderPlan, status: Status):
        """A folder opened after this pass's LIST-STATUS: copy up to what the source holds now.
        (pair, status, None), or the plan's status and why the open is not answered by this copy."""
        try:
            with imap.lost_is_transient(f"source STATUS of {plan.path!r}"):
                # STATUS of the folder this connection has selected is the session's view of it (Dovecot):
                # NOOP brings that view up to the new mail
                pair[0].noop()
                new = imap.folder_status(pair[0], plan.source)
        except (MailsyncError, imapexc.IMAPClientError) as e:
            # the copy goes on from the plan's snapshot; the open waits for it no longer than its deadline
            logger.warning("event=status_again_failed account=%s folder=%r reason=%r", self.address, plan.path,
                           shown(str(e), 200))
            return pair, status, "the source refused STATUS for this folder"
        self.progress.add_total(max(0, new.messages - status.messages))
        return pair, new, None

    def _failed(self, plan: FolderPlan, status: Status, reason: str) -> FolderReport:
        r = FolderReport(plan.path, plan.target, status.messages, None, 0, 0, 0, 0, 0.0, reason, time.time())
        self.store.save_report(self.address, r)
        return r

    def _with_retries(self, fn, what: str):
        s = self.domain.sync
        delay = s.retry_backoff
        for attempt in range(s.retries + 1):
            try:
                return fn()
            except (ConnectionLost,) as e:
                if attempt == s.retries:
                    raise
                logger.warning("event=retry account=%s step=%s attempt=%d wait=%.1fs reason=%r",
                               self.address, what, attempt + 1, delay, str(e))
            self.stop.wait(delay * (0.5 + random.random()))
            delay = min(delay * 2, 60.0)
        raise ConnectionLost(f"{what}: gave up")



def _run_folder(fs: FolderSync, run=None) -> FolderReport:
    """Any answer imapclient cannot make sense of becomes a per-folder error with the server's words."""
    try:
        return (run or fs.run)()
    except imapexc.IMAPClientAbortError as e:
        raise ConnectionLost(f"{fs.where}: connection lost: {shown(str(e), 300)}") from None
    except (imapexc.IMAPClientError, ValueError) as e:
        raise ProtocolError(f"unexpected answer: {shown(str(e), 300)}") from None
