"""Accounts (phase, plan, source login, notice) and the networks each user logged in from."""

from __future__ import annotations

import time

KNOWN_NETWORK_DAYS = 30

# Per account, the numbers mailsyncd.status turns into every progress view (see progress_rows): the sums
# are the account_totals the schema's triggers keep.
PROGRESS_SELECT = """SELECT a.address, a.domain, a.phase, a.last_error, a.plan, a.source_address,
        s.password IS NOT NULL, coalesce(t.source_messages, 0), coalesce(t.reported, 0),
        CASE WHEN t.sized_folders > 0 THEN t.source_bytes END,
        coalesce(t.messages, 0), coalesce(t.bytes, 0), coalesce(t.skipped, 0),
        (SELECT ps.finished FROM passes ps WHERE ps.account = a.address AND ps.finished IS NOT NULL
         ORDER BY ps.id DESC LIMIT 1),
        (SELECT ps.ok FROM passes ps WHERE ps.account = a.address AND ps.finished IS NOT NULL
         ORDER BY ps.id DESC LIMIT 1),
        coalesce(t.folders > 0 OR t.reports > 0, false)
        FROM accounts a LEFT JOIN secrets s ON s.address = a.address
        LEFT JOIN account_totals t ON t.account = a.address"""


def progress_row(r) -> dict:
    return {"address": r[0], "domain": r[1], "phase": r[2], "last_error": r[3], "plan": r[4],
            "source_address": r[5], "has_password": bool(r[6]),
            "source_messages": r[7] or r[8], "source_bytes": r[9], "target_messages": r[10],
            "bytes": r[11], "skipped": r[12], "last_pass_finished": r[13],
            "last_pass_ok": None if r[14] is None else bool(r[14]), "source_known": bool(r[15])}


class AccountsMixin:
    # -- accounts ----------------------------------------------------------
    def set_source_address(self, address: str, source_address: str | None) -> None:
        with self._tx() as c:
            c.execute("UPDATE accounts SET source_address=?, updated=? WHERE address=?",
                      (None if source_address == address else source_address, time.time(), address))

    def ensure_account(self, address: str, domain: str, plan: str | None = None) -> None:
        now = time.time()
        with self._tx() as c:
            c.execute("INSERT INTO accounts (address, domain, plan, created, updated) VALUES (?,?,?,?,?)"
                      " ON CONFLICT (address) DO NOTHING", (address, domain, plan, now, now))
            if plan is not None:
                # the first plan recorded wins: a later login must not relabel an imported account
                c.execute("UPDATE accounts SET plan=?, updated=? WHERE address=? AND plan IS NULL",
                          (plan, now, address))

    def notice_sent(self, address: str) -> float | None:
        row = self._conn().execute("SELECT notice_sent FROM accounts WHERE address=?", (address,)).fetchone()
        return row[0] if row else None

    def mark_notice_sent(self, address: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE accounts SET notice_sent=? WHERE address=?", (time.time(), address))

    def set_phase(self, address: str, phase: str, error: str | None = None) -> None:
        with self._tx() as c:
            c.execute("UPDATE accounts SET phase=?, last_error=?, updated=? WHERE address=?",
                      (phase, error, time.time(), address))

    def phase_counts(self, domain: str | None = None) -> dict[str, int]:
        sql, args = "SELECT phase, count(*) FROM accounts", ()
        if domain is not None:
            sql, args = sql + " WHERE domain = ?", (domain,)
        return dict(self._conn().execute(sql + " GROUP BY phase", args).fetchall())

    def accounts(self, domain: str | None = None) -> list[dict]:
        """Every account with its phase, whether a source password is stored, and its source size."""
        sql = ("SELECT a.address, a.domain, a.phase, a.last_error, a.plan, s.password IS NOT NULL, "
               "s.verifier IS NOT NULL, (SELECT coalesce(sum(f.messages), 0) FROM folders f "
               "WHERE f.account = a.address), a.source_address "
               "FROM accounts a LEFT JOIN secrets s ON s.address = a.address")
        args: tuple = ()
        if domain is not None:
            sql += " WHERE a.domain = ?"
            args = (domain,)
        keys = ("address", "domain", "phase", "last_error", "plan", "has_password", "has_verifier", "messages",
                "source_address")
        return [dict(zip(keys, row)) for row in self._conn().execute(sql + " ORDER BY a.address", args)]

    def progress_rows(self, domain: str | None = None, user: str | None = None) -> list[dict]:
        """Per account, the numbers mailsyncd.status turns into every progress view.

        Source counts are the folders' last STATUS (POP3: the last report); target counts are the
        UID map's rows (an index range per account, no table scan).
        """
        sql = PROGRESS_SELECT
        where, args = [], []
        if domain is not None:
            where.append("a.domain = ?")
            args.append(domain)
        if user is not None:
            where.append("a.address = ?")
            args.append(user)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [progress_row(r) for r in self._conn().execute(sql + " ORDER BY a.address", args)]

    def remove_account(self, address: str) -> bool:
        """Every row of the account, its sealed password with them (securely deleted); False if unknown."""
        with self._secret_tx() as c:
            if c.execute("SELECT 1 FROM accounts WHERE address=?", (address,)).fetchone() is None:
                return False
            # every table keyed by the account, as the schema has it now: "account", or "address" (accounts,
            # secrets, known_networks); accounts last, as it is the row that says the account exists
            tables = self._columns(c)
            for table in sorted(tables, key=lambda t: t == "accounts"):
                for column in {"account", "address"} & tables[table]:
                    c.execute(f"DELETE FROM {table} WHERE {column}=?", (address,))
            c.execute("DELETE FROM web_sessions WHERE site = 'self' AND who = ?", (address,))   # signed out
            self._bump(c, "accounts_rev")     # the daemon drops it from its schedule
        return True

    def retry_account(self, address: str) -> None:
        """Clear ``failed``: the daemon ends the account's backoff and schedules it at its next tick."""
        with self._tx() as c:
            c.execute("UPDATE accounts SET phase=CASE WHEN EXISTS (SELECT 1 FROM passes p WHERE p.account=? "
                      "AND p.ok = 1) THEN 'synced' ELSE 'new' END, last_error=NULL, updated=? "
                      "WHERE address=? AND phase='failed'", (address, time.time(), address))
            self._bump(c, "accounts_rev")

    def account(self, address: str) -> dict | None:
        rows = self._dicts("SELECT address, domain, phase, last_error, created, updated, plan, source_address"
                           " FROM accounts WHERE address=?", (address,))
        return rows[0] if rows else None

    # -- client networks a user logged in from -------------------------------------
    def remember_network(self, address: str, network: str, *, now: float | None = None) -> None:
        """A login from ``network`` succeeded; forget networks unused for KNOWN_NETWORK_DAYS."""
        now = time.time() if now is None else now
        with self._tx() as c:
            c.execute("INSERT INTO known_networks (address, network, last_ok) VALUES (?, ?, ?) ON CONFLICT (address, network) "
                      "DO UPDATE SET last_ok = excluded.last_ok", (address, network, now))
            c.execute("DELETE FROM known_networks WHERE last_ok < ?", (now - KNOWN_NETWORK_DAYS * 86400,))

    def last_logins(self) -> dict[str, float]:
        """{address: time of its last front-door login}, as far back as KNOWN_NETWORK_DAYS (watch modes)."""
        return {a: t for a, t in self._conn().execute(
            "SELECT address, MAX(last_ok) FROM known_networks GROUP BY address")}

    def is_known_network(self, address: str, network: str, *, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._conn().execute(
            "SELECT 1 FROM known_networks WHERE address = ? AND network = ? AND last_ok >= ?",
            (address, network, now - KNOWN_NETWORK_DAYS * 86400)).fetchone() is not None
