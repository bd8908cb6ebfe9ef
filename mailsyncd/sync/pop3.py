"""POP3 sources: copy the INBOX one way to the target's INBOX (or wherever the folder rules put it).

What is done is tracked by UIDL, so reruns only download new mail.  The source is
never changed: the client (net/pop3.py) has no DELE and reads with TOP (RETR, then RSET, where TOP fails).
(Dovecot moves maildir files from new/ to cur/ as soon as any POP3 session opens the
mailbox, even one that reads nothing: no client can prevent that; messages and flags
stay as they were.)

POP3 has no flags: messages arrive on the target without any (unread).  It has no
INTERNALDATE either: it is taken from the message's Date: header, else from the
newest Received: header, else the target stamps the time of the copy (popdate.py).

The target is written by sync/appender.py, as for IMAP sources: the in-flight journal
(under store.POP3_PATH), MULTIAPPEND, APPENDUID, recovery by fingerprint after a crash,
and the same rules for refusals.

Servers without UIDL: the pass fails with an explanation, unless the fingerprint
fallback is on (AccountSync(pop3_fallback=True), or ``source.pop3_no_uidl: fingerprint``
once the configuration has it): then every message is downloaded on every pass and
matched by (size, fingerprint) against what was copied before, as a multiset, so
that two identical messages stay two.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass

from imapclient import exceptions as imapexc

from ..errors import AuthFailed, ConnectionLost, FolderFailed, ProtocolError, TLSFailure, Unreachable
from ..imap.folders import FolderPlan, Mailbox, plan_folders
from ..net import imap
from ..net.imap import folder_status, lost_is_transient
from ..net.pop3 import FALLBACK_KEY, FALLBACK_VALUE, Pop3Source
from ..store import POP3_PATH, FolderReport, Pop3Row
from .appender import ALTERED, Appender, Outgoing, open_target, prefetched, server_words
from .logic import batches, fingerprint
from .popdate import message_date

logger = logging.getLogger(__name__)

PATH = "INBOX"                 # the report's folder: a POP3 maildrop is the INBOX
NO_UIDL = ("POP3 server has no UIDL: mailsyncd cannot tell which messages it already copied; "
           f"set source.{FALLBACK_KEY}: {FALLBACK_VALUE} to match by content "
           "(slower: downloads every message each pass)")


# ---------------------------------------------------------------- the pass

@dataclass(frozen=True, slots=True)
class _Msg:
    num: int
    uidl: str | None
    raw: bytes
    fp: bytes
    date: dt.datetime | None

    @property
    def size(self) -> int:
        return len(self.raw)


class Pop3Pass:
    """One pass over a POP3 maildrop, driven by AccountSync (which owns the store, progress, stop)."""

    def __init__(self, acct, fallback: bool | None = None):
        self.acct = acct
        self.domain = acct.domain
        self.store = acct.store
        self.address = acct.address
        self.settings = acct.domain.sync
        self.progress = acct.progress
        self.stop = acct.stop
        if fallback is None:
            fallback = getattr(acct.domain.source, FALLBACK_KEY, None) == FALLBACK_VALUE
        self.fallback = fallback
        self.where = f"account={self.address} folder={PATH!r} source=pop3"
        self.copied = 0
        self.nbytes = 0
        self.altered = 0    # this pass: landed changed by the target (Written.altered)
        self._counted = False
        self._connected = False
        self.target = PATH             # until the folder rules have been applied

    # -- retries around whole sessions -------------------------------------------
    def run(self, res) -> None:
        s = self.settings
        delay = s.retry_backoff
        for attempt in range(s.retries + 1):
            t0 = time.monotonic()
            try:
                self.progress.folder(PATH, True)
                rep = self._session(res, t0)
                if rep is not None:
                    res.folders.append(rep)
                return
            except (AuthFailed, TLSFailure, ProtocolError):
                raise
            except FolderFailed as e:
                logger.error("event=folder_failed %s reason=%r", self.where, str(e))
                res.folders.append(self._failed(self.target, str(e)))
                return
            except (ConnectionLost, Unreachable) as e:
                if not self._connected and not isinstance(e, ConnectionLost):
                    raise  # never got in: the pass fails as an IMAP pass does
                if attempt == s.retries:
                    logger.error("event=folder_failed %s reason=%r", self.where, str(e))
                    res.folders.append(self._failed(self.target, str(e)))
                    return
                logger.warning("event=retry %s attempt=%d wait=%.1fs reason=%r",
                               self.where, attempt + 1, delay, str(e))
            finally:
                self.progress.folder(PATH, False)
            if self.stop.wait(delay * (0.5 + random.random())):
                res.folders.append(self._failed(self.target, "stopped before this folder finished"))
                return
            delay = min(delay * 2, 60.0)

    def _failed(self, target: str, reason: str) -> FolderReport:
        r = FolderReport(PATH, target, None, None, self.copied, 0, 0, self.nbytes, 0.0, reason, time.time())
        self.store.save_report(self.address, r)
        return r

    def _session(self, res, t0: float) -> FolderReport | None:
        src = Pop3Source(self.domain.source, self.acct.source_address, self.acct._password,
                         self.settings.max_message_size)
        try:
            tgt = self.acct._open_target()
            self._connected = True
            res.connections = 1
            try:
                plan = self._plan(tgt, res)
                if plan is None:
                    return None
                self.target = plan.target
                return self._copy(src, tgt, plan, t0)
            except imapexc.IMAPClientAbortError:
                raise ConnectionLost(f"target, {self.where}: connection lost") from None
            except imapexc.IMAPClientError as e:  # a NO where none was expected (STATUS, SELECT, FETCH)
                raise FolderFailed(f"target {self.target!r}: {server_words(e)}") from None
            finally:
                imap.close(tgt)
        finally:
            src.close()

    def _plan(self, tgt, res) -> FolderPlan | None:
        """Where the INBOX goes: the IMAP engine's rules, for a source holding just an INBOX."""
        with lost_is_transient(f"target, {self.where}"):
            boxes, _ = imap.list_mailboxes(tgt, with_status=False)
        plans, res.skipped_folders = plan_folders([Mailbox("INBOX", "/", ())], boxes, self.domain.folders)
        for s in res.skipped_folders:
            logger.info("event=folder_not_synced account=%s folder=%r reason=%r", self.address, s.path, s.reason)
        self.store.set_skipped_folders(self.address, res.skipped_folders)
        return plans[0] if plans else None

    # -- the copy ------------------------------------------------------------------
    def _copy(self, src: Pop3Source, tgt, plan: FolderPlan, t0: float) -> FolderReport:
        target = plan.target
        earlier = self.copied   # by an earlier session of this pass (before a retry): not "present"
        open_target(tgt, plan, self.where, subscribe=False)
        writer = Appender(tgt, target, self.store, self.address, POP3_PATH, self.where,
                          multiappend=tgt.has_capability("MULTIAPPEND"))
        self._recover(writer)
        sizes = src.list()
        uidls = src.uidl()
        if uidls is None and not self.fallback:
            raise ProtocolError(f"{src.where}: {NO_UIDL}")
        if uidls is not None and set(sizes) - set(uidls):
            raise ProtocolError(f"{src.where}: UIDL does not list every message LIST does")
        rows = self.store.pop3_rows(self.address, target)
        pool: dict[tuple[int, bytes], list[Pop3Row]] = defaultdict(list)
        present = skipped = 0
        if uidls is None:
            logger.info("event=pop3_fingerprint_fallback %s messages=%d (downloading all to match by content)",
                        self.where, len(sizes))
            for r in rows:
                pool[r.size, r.fingerprint].append(r)
            todo = sorted(sizes.items())
        else:
            by_uidl = {r.uidl: r for r in rows if r.uidl is not None}
            listed = set(uidls.values())
            for r in rows:
                # Copied under the fallback, or under a UIDL the server no longer lists (it renumbered:
                # Dovecot's UIDLs change with the UIDVALIDITY): a new UIDL with the same content is
                # that message again, as the IMAP engine re-identifies after a UIDVALIDITY change.
                if r.uidl is None or r.uidl not in listed:
                    pool[r.size, r.fingerprint].append(r)
            todo = []
            for num, size in sorted(sizes.items()):
                r = by_uidl.get(uidls[num])
                if r is None:
                    todo.append((num, size))
                elif r.skipped is None:
                    present += 1
                else:
                    skipped += 1
        if not self._counted:
            self.progress.add_total(len(todo))
            self._counted = True
        if present:
            logger.debug("event=pop3_known %s already_copied=%d", self.where, present)

        unreadable: list[tuple[int, str]] = []
        counts = {"present": present, "skipped": skipped}
        big = [(num, size) for num, size in todo if size > src.cap]
        if big:
            todo = [(num, size) for num, size in todo if size <= src.cap]
            self._too_large(src, target, big, uidls, pool, counts)
        if todo:
            s = self.settings
            prefetched(batches(todo, s.batch_messages, s.batch_bytes), src.fetch_many,
                       lambda got: self._batch(writer, got, uidls, pool, unreadable, counts),
                       self.stop, f"pop3 {self.address}")

        with lost_is_transient(f"target, {self.where}"):
            tcount = folder_status(tgt, target, ("MESSAGES",)).messages
        error = None
        if unreadable:
            num, why = unreadable[0]
            error = (f"{len(unreadable)} message(s) could not be read from the source (message {num}: {why}); "
                     "the next pass tries again")
        ours = sum(1 for row in self.store.pop3_rows(self.address, target) if row.skipped is None)
        if self.altered:
            logger.warning("event=target_altered %s target=%r messages=%d reason=%r",
                           self.where, target, self.altered, ALTERED)
        r = FolderReport(PATH, target, len(sizes), ours, self.copied, max(0, counts["present"] - earlier),
                         counts["skipped"],
                         self.nbytes, round(time.monotonic() - t0, 3), error, time.time(), already_there=max(0, tcount - ours),
                         altered=self.store.count_altered(self.address, POP3_PATH, 0))
        self.store.save_report(self.address, r)
        return r

    def _too_large(self, src: Pop3Source, target: str, big, uidls, pool, counts) -> None:
        """Messages over sync.max_message_size are never read: each is recorded as skipped once, so that
        no later pass tries again.  Keyed by UIDL; without one (or under a UIDL the server no longer
        lists) by LIST size and the fingerprint of its headers (TOP n 0): the fallback's multiset match."""
        rows: list[Pop3Row] = []
        claims: dict[int, str] = {}
        for num, size in big:
            uidl = uidls[num] if uidls is not None else None
            head = src.headers(num, size)
            fp = fingerprint(head) if head is not None else b""   # no TOP: the size alone
            hits = pool.get((size, fp))
            if hits:
                r = hits.pop(0)
                counts["skipped" if r.skipped is not None else "present"] += 1
                if uidl is not None and r.id is not None:
                    claims[r.id] = uidl
                continue
            named = f"POP3 UIDL {uidl}" if uidl is not None else f"POP3 message {num}, no UIDL"
            rows.append(Pop3Row(uidl, size, fp, skipped=f"too large: LIST says {size} bytes, "
                                                         f"the limit is {src.cap} ({named})"))
        rows = self.store.pop3_commit_batch(self.address, target, rows, claims)
        counts["skipped"] += len(rows)
        for r in rows:
            logger.warning("event=message_skipped %s id=%s uidl=%r size=%d reason=%r",
                           self.where, r.id, r.uidl, r.size, r.skipped)
        self.progress.advance(PATH, len(big), 0)

    def _batch(self, writer: Appender, got, uidls, pool, unreadable, counts) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        msgs: list[_Msg] = []
        claims: dict[int, str] = {}
        matched = 0
        for num, raw in got:
            if isinstance(raw, str):
                logger.warning("event=pop3_retr_refused %s message=%d reason=%r", self.where, num, raw)
                unreadable.append((num, raw))
                continue
            uidl = uidls[num] if uidls is not None else None
            fp = fingerprint(raw)
            hits = pool.get((len(raw), fp))
            if hits:
                r = hits.pop(0)
                matched += 1
                counts["skipped" if r.skipped is not None else "present"] += 1
                if uidl is not None and r.id is not None:
                    claims[r.id] = uidl   # copied earlier without this UIDL: it has it now
                continue
            date, how = message_date(raw, now)
            if how == "none":
                logger.debug("event=pop3_no_date %s message=%d uidl=%r: no usable Date: or Received: header, "
                             "the target stamps the time of the copy", self.where, num, uidl)
            elif how == "received":
                logger.debug("event=pop3_date_from_received %s message=%d uidl=%r", self.where, num, uidl)
            msgs.append(_Msg(num, uidl, raw, fp, date))
        rows: list[Pop3Row] = []
        later = None
        changed: set[int] = set()   # target UIDs of messages the target altered
        if msgs:
            outgoing = [Outgoing(m.uidl, m.raw, (), m.date, m.fp) for m in msgs]
            source = {id(o): m for o, m in zip(outgoing, msgs)}
            out = writer.write(outgoing)
            rows = [Pop3Row(o.key, o.size, o.fp, tv, tu) for o, tv, tu in out.landed]
            rows += [Pop3Row(o.key, o.size, o.fp, skipped=f"target refused: {words} ({_named(source[id(o)])})")
                     for o, words in out.refused]
            later = out.later
            altered = {id(o) for o in out.altered}
            changed = {tu for o, _, tu in out.landed if id(o) in altered}
        if msgs or claims:
            rows = self.store.pop3_commit_batch(self.address, writer.target, rows, claims)
        if changed:
            altered_rows = [(r.id, r.size, ALTERED) for r in rows if r.skipped is None and r.target_uid in changed]
            self.store.record_altered(self.address, POP3_PATH, 0, altered_rows)
            self.altered += len(altered_rows)
        done = [r for r in rows if r.skipped is None]
        refused = [r for r in rows if r.skipped is not None]
        nbytes = sum(r.size for r in done)
        self.copied += len(done)
        self.nbytes += nbytes
        counts["skipped"] += len(refused)
        for r in refused:
            logger.warning("event=message_skipped %s id=%s uidl=%r size=%d reason=%r",
                           self.where, r.id, r.uidl, r.size, r.skipped)
        if matched:
            logger.log(logging.DEBUG if uidls is None else logging.INFO,
                       "event=pop3_reidentified %s messages=%d (already on the target, matched by content)",
                       self.where, matched)
            self.progress.note_present(PATH, matched)
        self.progress.advance(PATH, len(got) - matched, nbytes)
        if later:
            raise FolderFailed(f"target refused APPEND: {later}; the rest of this folder waits for a later pass")

    def _recover(self, writer: Appender) -> None:
        found = writer.recover()
        if found is None:
            return
        rows = [Pop3Row(it.key, it.size, it.fingerprint, tv, tu) for it, tv, tu in found]
        self.store.pop3_commit_batch(self.address, writer.target, rows)


def _named(m: _Msg) -> str:
    return f"POP3 UIDL {m.uidl}" if m.uidl is not None else f"POP3 message {m.num}, no UIDL"


__all__ = ["NO_UIDL", "FALLBACK_KEY", "FALLBACK_VALUE", "Pop3Pass"]
