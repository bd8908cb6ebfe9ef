"""The state store: the only package that speaks SQL, one module a concern, one ``Store`` facade.

A versioned schema with forward migrations (schema.py); short transactions: the copy
engine commits once per batch (batches.py).  No plaintext password is ever stored
here: the vault hands it ciphertext and hashes (secrets.py).
"""

from __future__ import annotations

from .accounts import KNOWN_NETWORK_DAYS, AccountsMixin
from .base import StoreBase, StoreError
from .batches import BatchesMixin
from .cutovers import CutoversMixin
from .folders import FoldersMixin
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


class Store(AccountsMixin, CutoversMixin, SecretsMixin, FoldersMixin, BatchesMixin, ReportsMixin, LeasesMixin,
            StoreBase):
    """Thread-safe facade: each thread gets its own SQLite connection."""


__all__ = ["KNOWN_NETWORK_DAYS", "POP3_PATH", "SCHEMA_VERSION", "_MIGRATIONS", "FolderReport", "FolderState",
           "Inflight", "InflightItem", "Lease", "MapRow", "Pop3Row", "Refused", "Store", "StoreBase", "StoreError",
           "flags_text", "flags_tuple"]
