"""Web sessions (web/sessions.py decides what they mean), shared by every node on this store."""

from __future__ import annotations

import os

_COLUMNS = "token_hash, site, who, csrf, created, seen, flash_kind, flash_text"


class WebSessionsMixin:
    def session_create(self, site: str, token_hash: str, who: str, csrf: str, now: float,
                       idle: float, max_age: float, limit: int) -> None:
        """A new session; the site's expired ones go, and beyond ``limit`` the least recently seen."""
        with self._light_tx() as c:
            c.execute("DELETE FROM web_sessions WHERE site = ? AND (seen < ? OR created < ?)",
                      (site, now - idle, now - max_age))
            n = c.execute("SELECT count(*) FROM web_sessions WHERE site = ?", (site,)).fetchone()[0]
            if n >= limit:
                c.execute("DELETE FROM web_sessions WHERE token_hash IN (SELECT token_hash FROM web_sessions "
                          "WHERE site = ? ORDER BY seen LIMIT ?)", (site, n - limit + 1))
            c.execute(f"INSERT INTO web_sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                      (token_hash, site, who, csrf, now, now))

    def session_get(self, site: str, token_hash: str, now: float, idle: float, max_age: float, *,
                    touch: bool, take_flash: bool) -> dict | None:
        """The live session (expired: deleted, None); ``touch`` marks it seen, ``take_flash`` clears its
        flash message (returned once)."""
        rows = self._dicts(f"SELECT {_COLUMNS} FROM web_sessions WHERE token_hash = ? AND site = ?",
                           (token_hash, site))
        if not rows:
            return None
        s = rows[0]
        if now - s["seen"] > idle or now - s["created"] > max_age:
            self.session_drop(site, token_hash)
            return None
        if touch or (take_flash and s["flash_kind"] is not None):
            sets = (["seen = ?"] if touch else []) + (["flash_kind = NULL", "flash_text = NULL"] if take_flash else [])
            with self._light_tx() as c:
                c.execute(f"UPDATE web_sessions SET {', '.join(sets)} WHERE token_hash = ?",
                          ((now,) if touch else ()) + (token_hash,))
            if touch:
                s["seen"] = now
        if not take_flash:
            s["flash_kind"] = s["flash_text"] = None
        return s

    def session_flash(self, site: str, token_hash: str, kind: str, text: str) -> None:
        with self._light_tx() as c:
            c.execute("UPDATE web_sessions SET flash_kind = ?, flash_text = ? WHERE token_hash = ? AND site = ?",
                      (kind, text, token_hash, site))

    def session_drop(self, site: str, token_hash: str) -> None:
        with self._tx() as c:         # a sign-out must survive a power cut: fsynced
            c.execute("DELETE FROM web_sessions WHERE token_hash = ? AND site = ?", (token_hash, site))

    def session_count(self, site: str) -> int:
        return self._conn().execute("SELECT count(*) FROM web_sessions WHERE site = ?", (site,)).fetchone()[0]

    def web_key(self, name: str) -> bytes:
        """A random key every node shares (the CSRF signatures of forms shown before a session exists):
        made by the first node that asks, kept in ``meta``."""
        with self._tx() as c:
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                      ("key:" + name, os.urandom(32).hex()))
            return bytes.fromhex(c.execute("SELECT value FROM meta WHERE key = ?", ("key:" + name,)).fetchone()[0])
