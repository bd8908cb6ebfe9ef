"""The state store: the only package that speaks SQL, one module a concern, one ``Store`` facade.

A versioned schema with forward migrations (schema.py); short transactions: the copy
engine commits once per batch (batches.py).  No plaintext password is ever stored
here: the vault hands it ciphertext and hashes (secrets.py).
"""

from __future__ import annotations

from .accounts import KNOWN_NETWORK_DAYS, AccountsMixin
from .base import DatabaseUnavailable, StoreBase, StoreError, UnstorableText
from .batches import BatchesMixin
from .cutovers import CutoversMixin
from .folders import FoldersMixin
from .progress import ProgressMixin
from .leases import Lease, LeasesMixin, Refused
from .records import (
    POP3_PATH,
    FolderReport,
    FolderState,
    Inflight,
    InflightItem,
    MapRow,
    Pop3Row,
    flags_text,
    flags_tuple,
)
from .reports import ReportsMixin
from .schema import _MIGRATIONS, SCHEMA_VERSION
from .secrets import SecretsMixin
from .throttle import ThrottleMixin
from .websessions import WebSessionsMixin


class Store(AccountsMixin, ProgressMixin, CutoversMixin, SecretsMixin, FoldersMixin, BatchesMixin, ReportsMixin,
            ThrottleMixin, WebSessionsMixin, LeasesMixin, StoreBase):
    """Thread-safe facade: each thread gets its own SQLite connection."""

    backend = "sqlite"

    @classmethod
    def open(cls, config, *, migrate: bool = False) -> Store:
        """The store the config names: SQLite in state_dir (``database:`` absent; migrated on open, as
        one process owns it), or PostgreSQL, whose schema only ``migrate=True`` (migrate-db) changes."""
        db = getattr(config, "database", None)
        if db is None or db.url is None:
            return cls.in_state_dir(config.state_dir)
        try:
            from .pg import PgStore
        except ImportError as e:
            raise StoreError(f"database: needs psycopg 3 and psycopg_pool (pip install 'mailsyncd[postgresql]'): "
                             f"{e}") from None
        return PgStore(db.url, password=db.password(), migrate=migrate, pool_size=db.pool_size)


__all__ = ["KNOWN_NETWORK_DAYS", "POP3_PATH", "SCHEMA_VERSION", "_MIGRATIONS", "FolderReport", "FolderState",
           "Inflight", "InflightItem", "Lease", "MapRow", "Pop3Row", "DatabaseUnavailable", "Refused", "Store", "StoreBase", "StoreError",
           "UnstorableText", "flags_text", "flags_tuple"]
