"""Secrets, opaque to the store: the vault (vault.py) hands it ciphertext and argon2 verifiers."""

from __future__ import annotations

import time
from collections.abc import Iterable

from .base import upsert


class SecretsMixin:
    # -- secrets (opaque to the store: see vault.py) ---------------------------
    def import_accounts(self, items: Iterable[tuple[str, str, str, str | None, bytes | None]]) -> None:
        """(address, domain, plan, source_address, sealed password or None) rows, in ONE transaction:
        a CSV import is all or nothing."""
        now = time.time()
        items = list(items)
        # three statements for all the rows, not three a row: PostgreSQL pipelines an executemany (one round
        # trip), where 50,000 rows one by one took 70 s; each statement touches its own row only, so the
        # order of the rows is kept and the outcome is the same
        with self._secret_tx() as c:
            c.executemany("INSERT INTO accounts (address, domain, plan, created, updated) "
                          "VALUES (?,?,?,?,?) ON CONFLICT (address) DO NOTHING",
                          [(address, domain, plan, now, now) for address, domain, plan, _, _ in items])
            c.executemany("UPDATE accounts SET plan=coalesce(plan, ?), source_address=?, updated=? WHERE address=?",
                          [(plan, None if source == address else source, now, address)
                           for address, _, plan, source, _ in items])
            c.executemany("INSERT INTO secrets (address, password, updated) VALUES (?,?,?) ON CONFLICT "
                          "(address) DO UPDATE SET password=excluded.password, updated=excluded.updated",
                          [(address, blob, now) for address, _, _, _, blob in items if blob is not None])
            self._bump(c, "accounts_rev")

    @staticmethod
    def _bump(c, key: str) -> None:
        c.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) "
                  "DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)", (key,))

    def revision(self, key: str = "accounts_rev") -> int:
        """A counter bumped by out-of-process changes (an import), so the daemon can notice them."""
        row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def claim_vault_key(self, fingerprint: str) -> bool:
        """Record the vault key's fingerprint; False if passwords sealed under another key are stored.
        (With none stored, nothing is lost by a new key, and it is recorded instead.)"""
        with self._tx() as c:
            # the first node to get here records its key; a concurrent one waits on the row, then compares
            c.execute("INSERT INTO meta (key, value) VALUES ('vault_key', ?) ON CONFLICT (key) DO NOTHING",
                      (fingerprint,))
            row = c.execute("SELECT value FROM meta WHERE key='vault_key'" + self._for_update()).fetchone()
            if row[0] == fingerprint:
                return True
            if c.execute("SELECT 1 FROM secrets WHERE password IS NOT NULL LIMIT 1").fetchone() is not None:
                return False
            c.execute("UPDATE meta SET value=? WHERE key='vault_key'", (fingerprint,))
        return True

    def put_secret_password(self, address: str, blob: bytes) -> None:
        with self._secret_tx() as c:
            c.execute("INSERT INTO secrets (address, password, updated) VALUES (?,?,?)"
                      " ON CONFLICT (address) DO UPDATE SET password=excluded.password, updated=excluded.updated",
                      (address, blob, time.time()))

    def secret_password(self, address: str) -> bytes | None:
        row = self._conn().execute("SELECT password FROM secrets WHERE address=?", (address,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def secret_passwords(self) -> dict[str, bytes]:
        """Every stored ciphertext by address, in one query (a CSV re-import compares them all)."""
        return {a: bytes(blob) for a, blob in
                self._conn().execute("SELECT address, password FROM secrets WHERE password IS NOT NULL")}

    def forget_secret_password(self, address: str) -> None:
        """Drop the stored ciphertext, keep the verifier."""
        with self._secret_tx() as t:
            t.execute("UPDATE secrets SET password=NULL, updated=? WHERE address=?", (time.time(), address))
            self._bump(t, "accounts_rev")

    def put_verifier(self, address: str, verifier: str, verified_at: float) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO secrets (address, verifier, verified_at, updated) VALUES (?,?,?,?)"
                      " ON CONFLICT (address) DO UPDATE SET verifier=excluded.verifier,"
                      " verified_at=excluded.verified_at, updated=excluded.updated",
                      (address, verifier, verified_at, time.time()))

    def verifier(self, address: str) -> tuple[str, float] | None:
        row = self._conn().execute(
            "SELECT verifier, verified_at FROM secrets WHERE address=? AND verifier IS NOT NULL",
            (address,)).fetchone()
        return (row[0], row[1]) if row else None

    def put_login(self, address: str, blob: bytes, verifier: str, verified_at: float) -> None:
        """Password and verifier together, so that neither can be stale with respect to the other."""
        with self._secret_tx() as c:
            c.execute(upsert("secrets", "address, password, verifier, verified_at, updated", "address"), (address, blob, verifier, verified_at, time.time()))

    def record_login(self, address: str, domain: str, plan: str | None, source_address: str | None,
                     blob: bytes, verifier: str, verified_at: float) -> bool:
        """A login verified at the source: the account (made if new), its password and verifier, in ONE
        transaction.  True for the login that found no stored password (a first login, which starts the
        migration): a compare-and-set on the account's row, so that of two nodes verifying the first
        login of the same user at once exactly one gets True."""
        now = time.time()
        with self._secret_tx() as c:
            c.execute("INSERT INTO accounts (address, domain, plan, created, updated) VALUES (?,?,?,?,?) "
                      "ON CONFLICT (address) DO NOTHING", (address, domain, plan, now, now))
            # the lock that serializes two nodes (SQLite: BEGIN IMMEDIATE has it already)
            c.execute("SELECT address FROM accounts WHERE address = ?" + self._for_update(), (address,)).fetchone()
            row = c.execute("SELECT password FROM secrets WHERE address = ?", (address,)).fetchone()
            first = row is None or row[0] is None
            if plan is not None:
                # the first plan recorded wins: a later login must not relabel an imported account
                c.execute("UPDATE accounts SET plan = ?, updated = ? WHERE address = ? AND plan IS NULL",
                          (plan, now, address))
            if source_address is not None:
                c.execute("UPDATE accounts SET source_address = ?, updated = ? WHERE address = ?",
                          (None if source_address == address else source_address, now, address))
            c.execute("INSERT INTO secrets (address, password, verifier, verified_at, updated) VALUES (?,?,?,?,?)"
                      " ON CONFLICT (address) DO UPDATE SET password = excluded.password, verifier = excluded.verifier,"
                      " verified_at = excluded.verified_at, updated = excluded.updated",
                      (address, blob, verifier, verified_at, now))
        return first
