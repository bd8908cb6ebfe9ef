"""``database:``: where the state lives.  Absent: SQLite in state_dir (one node).  Present: PostgreSQL,
shared by every node (``url`` without a password; the password in ``password_file``)."""

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from ._base import _Errors, _file, _int_range, _Invalid, _Section


@dataclass(frozen=True, slots=True)
class Database:
    url: str | None = None              # None: SQLite in state_dir
    password_file: str | None = None    # read when the store opens, never kept in the config object
    pool_size: int = 8                  # connections this node holds at most

    def password(self) -> str | None:
        """The password file's first line; StoreError naming the key and the file (never its contents) if unreadable."""
        if self.password_file is None:
            return None
        from ..store import StoreError
        try:
            with open(self.password_file, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or "not UTF-8 text"
            raise StoreError(f"database.password_file: cannot read {self.password_file}: {why}") from None


def _url(v):
    # the value is never echoed back in an error: it might carry the very password we refuse
    if not isinstance(v, str) or not v.strip():
        raise _Invalid("must be a URL like postgresql://USER@HOST:PORT/DB")
    try:
        u = urlsplit(v)
        u.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _Invalid("is not a valid URL (expected postgresql://USER@HOST:PORT/DB)") from None
    if u.scheme not in ("postgresql", "postgres"):
        raise _Invalid("must start with postgresql:// (only PostgreSQL is supported; leave database: out for "
                       "SQLite in state_dir)")
    if u.password is not None or "password" in parse_qs(u.query):
        raise _Invalid("must not carry a password: put it in database.password_file")
    if not u.path.strip("/"):
        raise _Invalid("names no database (expected postgresql://USER@HOST:PORT/DB)")
    return v


def _database(errs: _Errors, node: object, base_dir: str) -> Database:
    if node is None:
        return Database()
    s = _Section(errs, node, "database", ("url", "password_file", "pool_size"))
    url = None
    if s.has("url"):
        try:
            url = _url(s.node["url"])
        except _Invalid as e:
            errs.add("database.url", str(e))
    else:
        errs.add("database.url", "required key is missing")
    return Database(url=url, password_file=s.get("password_file", _file(base_dir), None),
                    pool_size=s.get("pool_size", _int_range(1, 1000), 8))
