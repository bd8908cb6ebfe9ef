"""Per-domain cutover rows (``mailsyncctl cutover``): the states and their transitions' storage."""

from __future__ import annotations

import time

from .base import upsert

_UPSERT = upsert("cutovers", "domain, at, state, note, updated", "domain")


class CutoversMixin:
    def cutover(self, domain: str) -> dict | None:
        return self._cutover_row(self._conn(), domain)

    def cutovers(self) -> dict[str, dict]:
        rows = self._conn().execute("SELECT domain, at, state, note, updated FROM cutovers").fetchall()
        return {r[0]: dict(zip(("domain", "at", "state", "note", "updated"), r)) for r in rows}

    def set_cutover(self, domain: str, at: float | None, state: str, note: str | None = None) -> None:
        with self._tx() as c:
            c.execute(_UPSERT,
                      (domain, at, state, note, time.time()))

    # The cancel rule, decided here and only here, each in one transaction: a cancel succeeds until
    # the scheduler has closed the cutover (final_pass -> done, with every account's phase), and the
    # scheduler starts or closes a cutover only if it was not cancelled or moved meanwhile.
    def cancel_cutover(self, domain: str, note: str) -> dict | None:
        """Cancel unless past the point of no return; None if cancelled, else the row that stopped it."""
        with self._tx() as c:
            row = self._cutover_row(c, domain)
            if row is not None and row["state"] == "done":
                return row
            c.execute(_UPSERT,
                      (domain, None, "cancelled", note, time.time()))
        return None

    def begin_cutover(self, domain: str, at: float | None, note: str, now: float) -> dict | None:
        """Step 1 (final passes), unless the row says otherwise by now: None if begun, else that row."""
        with self._tx() as c:
            row = self._cutover_row(c, domain)
            if row is not None and (row["state"] in ("cancelled", "done") or (
                    row["state"] == "scheduled" and (row["at"] is None or row["at"] > now))):
                return row
            c.execute(_UPSERT,
                      (domain, at, "final_pass", note, now))
        return None

    def close_cutover(self, domain: str, note: str) -> int | None:
        """Step 2, the point of no return: final_pass -> done and every account's phase ``cutover``,
        together.  None (and nothing changed) if the cutover is no longer in its final passes."""
        now = time.time()
        with self._tx() as c:
            cur = c.execute("UPDATE cutovers SET state='done', note=?, updated=? WHERE domain=? AND state='final_pass'",
                            (note, now, domain))
            if cur.rowcount == 0:
                return None
            return c.execute("UPDATE accounts SET phase='cutover', last_error=NULL, updated=? WHERE domain=?",
                             (now, domain)).rowcount

    def _cutover_row(self, c, domain: str) -> dict | None:
        # locked on PostgreSQL (READ COMMITTED): the cancel rule reads the row and then writes it
        row = c.execute("SELECT domain, at, state, note, updated FROM cutovers WHERE domain=?" + self._for_update(),
                        (domain,)).fetchone()
        return dict(zip(("domain", "at", "state", "note", "updated"), row)) if row else None

    def clear_cutover(self, domain: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM cutovers WHERE domain=?", (domain,))
