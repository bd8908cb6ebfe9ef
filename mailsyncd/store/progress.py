"""The status views at scale: one page of accounts and the totals of a filter, both computed by the database.

The filters (domain, user, phase, search) and the page (keyset: addresses after the cursor's) are in the
query.  The phase words users see (mailsyncd.status.phase_of) depend on which accounts have a pass
running now, which only the daemon knows: the caller passes that (small) set, and the query turns it into
``a.address IN (...)``.
"""

from __future__ import annotations

from .accounts import PROGRESS_SELECT, progress_row

_STORED = "coalesce(a.phase, 'new')"
_HAS_PW = "s.password IS NOT NULL"
_BEFORE_FIRST_PASS = f"{_STORED} NOT IN ('failed', 'synced', 'cutover')"


def _running(running) -> tuple[str, list]:
    if not running:
        return "1 = 0", []
    return "a.address IN (" + ",".join("?" * len(running)) + ")", list(running)


def _phase_sql(phase: str, running) -> tuple[str, list]:
    """The rows whose status.phase_of(row, address in running) is ``phase``."""
    run, args = _running(running)
    if phase == "cutover":
        return f"{_STORED} = 'cutover'", []
    if phase == "syncing":
        return (f"({_STORED} <> 'cutover' AND ({run} OR ({_BEFORE_FIRST_PASS} AND {_HAS_PW})))", args)
    if phase == "failed":
        return f"({_STORED} = 'failed' AND NOT ({run}))", args
    if phase == "tailing":
        return f"({_STORED} = 'synced' AND NOT ({run}))", args
    if phase == "waiting":
        return f"({_BEFORE_FIRST_PASS} AND s.password IS NULL AND NOT ({run}))", args
    raise ValueError(f"unknown phase {phase!r}")


# Per account, the numbers the totals add up: the same values as PROGRESS_SELECT's, read from the sums the
# schema's triggers keep per account (account_totals, schema 16), so that no view counts every copied message
# or folder: one indexed look-up per account, filtered or not.
_PER_ACCOUNT = f"""SELECT a.domain AS domain, {_STORED} AS stored, CASE WHEN {_HAS_PW} THEN 1 ELSE 0 END AS has_pw,
        CASE WHEN {{run}} THEN 1 ELSE 0 END AS run, coalesce(nullif(t.source_messages, 0), t.reported, 0) AS src,
        CASE WHEN t.sized_folders > 0 THEN t.source_bytes END AS src_bytes, coalesce(t.messages, 0) AS tgt,
        coalesce(t.bytes, 0) AS bytes, coalesce(t.skipped, 0) AS sk,
        CASE WHEN t.folders > 0 OR t.reports > 0 THEN 1 ELSE 0 END AS known
        FROM accounts a LEFT JOIN secrets s ON s.address = a.address LEFT JOIN account_totals t ON t.account = a.address"""

_TOTALS = """SELECT domain, stored, has_pw, run, count(*), sum(src), sum(tgt), sum(sk), sum(bytes), sum(src_bytes),
        sum(CASE WHEN src - tgt - sk > 0 THEN src - tgt - sk ELSE 0 END), sum(known)
        FROM ({inner}) x GROUP BY domain, stored, has_pw, run"""
_TOTALS_KEYS = ("domain", "stored", "has_password", "running", "accounts", "source_messages", "target_messages",
                "skipped", "bytes", "source_bytes", "behind", "source_known")


class ProgressMixin:
    def _progress_filter(self, *, domain=None, user=None, phase=None, like=None, running=()) -> tuple[list, list]:
        where, args = [], []
        if domain is not None:
            where.append("a.domain = ?")
            args.append(domain)
        if user is not None:
            where.append("a.address = ?")
            args.append(user)
        if phase is not None:
            sql, more = _phase_sql(phase, running)
            where.append(sql)
            args += more
        if like is not None:
            where.append("(lower(a.address) LIKE ? ESCAPE '\\' OR lower(coalesce(a.source_address, '')) LIKE ? "
                         "ESCAPE '\\')")
            args += [like, like]
        return where, args

    def progress_page(self, *, limit: int | None, after: str | None = None, running=(), **filters) -> list[dict]:
        """The progress rows (as Store.progress_rows) of the accounts matching ``filters`` (see
        _progress_filter; ``like`` is a LIKE pattern), in address order, after ``after``; at most ``limit``
        (None: all)."""
        where, args = self._progress_filter(running=running, **filters)
        if after is not None:
            where.append("a.address > ?")
            args.append(after)
        sql = PROGRESS_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.address"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [progress_row(r) for r in self._conn().execute(sql, args)]

    def progress_totals(self, *, running=(), **filters) -> list[dict]:
        """The sums of the matching accounts' numbers, one row per (domain, stored phase, has a password,
        runs now): what status.totals_of turns into the totals and the per-domain entries."""
        where, args = self._progress_filter(running=running, **filters)
        run, run_args = _running(running)
        inner = _PER_ACCOUNT.format(run=run) + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._conn().execute(_TOTALS.format(inner=inner), run_args + args).fetchall()
        return [dict(zip(_TOTALS_KEYS, r)) for r in rows]

    def running_domains(self, running, **filters) -> dict[str, str]:
        """{address: domain} of the accounts in ``running`` that match ``filters`` (for the live rates)."""
        if not running:
            return {}
        where, args = self._progress_filter(running=running, **filters)
        run, run_args = _running(running)
        sql = ("SELECT a.address, a.domain FROM accounts a LEFT JOIN secrets s ON s.address = a.address WHERE "
               + " AND ".join([run] + where))
        return dict(self._conn().execute(sql, run_args + args).fetchall())

    def account_domains(self) -> list[str]:
        """The domains that have accounts (``mailsyncctl status`` without a config's domains)."""
        return [d for (d,) in self._conn().execute("SELECT DISTINCT domain FROM accounts ORDER BY domain")]
