"""The front door's throttle rows (auth/throttle.py does the arithmetic), shared by every node."""

from __future__ import annotations

from collections.abc import Callable, Sequence

Key = tuple[str, str]                      # (kind, key)
Row = tuple[float | None, float]           # (level, at); level None: a full bucket


class ThrottleMixin:
    def throttle_update(self, keys: Sequence[Key],
                        fn: Callable[[dict[Key, Row]], tuple[object, dict[Key, Row | None]]]) -> object:
        """Read ``keys``' rows, locked, and write what ``fn(rows)`` returns (None deletes), in ONE
        transaction: two nodes spending the same bucket at once serialize here.  Returns fn's result."""
        with self._light_tx() as c:
            rows = self._throttle_rows(c, keys)
            missing = [k for k in keys if k not in rows]
            if missing:
                # a row to lock: on PostgreSQL a concurrent first insert of the same key waits here
                c.executemany("INSERT INTO throttle (kind, key, level, at) VALUES (?, ?, NULL, 0) "
                              "ON CONFLICT (kind, key) DO NOTHING", missing)
                rows.update(self._throttle_rows(c, missing))
            result, writes = fn(rows)
            for (kind, key), row in writes.items():
                if row is None:
                    c.execute("DELETE FROM throttle WHERE kind = ? AND key = ?", (kind, key))
                else:
                    c.execute("UPDATE throttle SET level = ?, at = ? WHERE kind = ? AND key = ?",
                              (row[0], row[1], kind, key))
        return result

    def _throttle_rows(self, c, keys: Sequence[Key]) -> dict[Key, Row]:
        if not keys:
            return {}
        where = " OR ".join(["(kind = ? AND key = ?)"] * len(keys))
        args = tuple(x for k in keys for x in k)
        return {(k, key): (level, at) for k, key, level, at in
                c.execute("SELECT kind, key, level, at FROM throttle WHERE " + where + self._for_update(), args)}

    def throttle_trim(self, kind: str, burst: float, refill: float, before: float) -> int:
        """Forget ``kind``'s rows that are full again: ``at + (burst - level) * refill <= before``."""
        with self._light_tx() as c:
            return c.execute("DELETE FROM throttle WHERE kind = ? AND (level IS NULL OR at + (? - level) * ? <= ?)",
                             (kind, burst, refill, before)).rowcount

    def throttle_rows(self) -> int:
        return self._conn().execute("SELECT count(*) FROM throttle").fetchone()[0]
