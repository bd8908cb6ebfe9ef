"""Recent mail first (sync.recent_first): the order of an account's folder jobs while its first copy runs.

While a folder's copy is not complete, a pass copies first INBOX's messages of the last N days
(INTERNALDATE, by ``UID SEARCH SINCE``), then Sent's, then the rest of those two folders, then the
other folders, the one whose newest message is newest first.  A job is (plan, status, since):
``since`` set, it copies only that recent slice; the folder's own job, later, copies the rest.

Within a slice the order is UID order, oldest first: the slice is small (it is done in seconds), the
target's UIDs then follow the messages' dates within it, which keeps clients that sort by arrival or
fetch "the highest N UIDs" coherent, and FETCH sets stay compact ranges.

Pure but for ``newest``, which asks the source (EXAMINE and FETCH INTERNALDATE only).
"""

from __future__ import annotations

import datetime as dt
import logging

from imapclient import exceptions as imapexc

from ..errors import MailsyncError
from ..net.imap import fetch
from ..net.imapguard import expect_lines

logger = logging.getLogger(__name__)

HEAD_ROLES = ("inbox", "sent")   # the folders whose recent mail goes first, in this order


def cutoff(days: int, today: dt.date | None = None) -> dt.date:
    """The first day of the recent slice (SINCE takes a date: the whole of that day counts)."""
    return (today or dt.datetime.now(dt.timezone.utc).date()) - dt.timedelta(days=days)


def incomplete(state, status) -> bool:
    """The folder's copy has never finished under the source's current UIDVALIDITY."""
    return state is None or state.uidnext is None or state.uidvalidity != status.uidvalidity


def order(jobs, unfinished: set[str], newest: dict[str, float], since: dt.date) -> list[tuple]:
    """(plan, status, since or None) in recent-first order; ``jobs``: (plan, status)."""
    head = [j for role in HEAD_ROLES for j in jobs if j[0].role == role]
    heads = {id(j) for j in head}
    slices = [(p, st, since) for p, st in head if p.path in unfinished and st.messages]
    # the folders already complete first (their work is new mail, and short), then by newest message
    rest = sorted((j for j in jobs if id(j) not in heads),
                  key=lambda j: (j[0].path in unfinished, -newest.get(j[0].path, 0.0), -j[1].messages))
    return slices + [(p, st, None) for p, st in head] + [(p, st, None) for p, st in rest]


def newest(src, plans, where: str) -> dict[str, float]:
    """path -> INTERNALDATE (epoch seconds) of each folder's highest UID, as far as the source tells."""
    out: dict[str, float] = {}
    for p in plans:
        try:
            src.select_folder(p.source, readonly=True)   # EXAMINE
            expect_lines(src, 64 * 1024)                 # one message's answer: a line of a hundred bytes
            data = fetch(src, "*", [b"INTERNALDATE"])
        except imapexc.IMAPClientAbortError:
            raise
        except (imapexc.IMAPClientError, MailsyncError) as e:
            # an order is a nicety: a folder that will not say goes last, or all do if the connection went
            logger.info("event=newest_unknown %s folder=%r reason=%r", where, p.path, str(e)[:200])
            if isinstance(e, MailsyncError):
                break
            continue
        dates = [d.get(b"INTERNALDATE") for d in data.values()]
        stamps = [d.timestamp() for d in dates if isinstance(d, dt.datetime)]
        if stamps:
            out[p.path] = max(stamps)
    return out


__all__ = ["HEAD_ROLES", "cutoff", "incomplete", "newest", "order"]
