"""Secrets at rest (seam).

The front door will store each verified source password here, encrypted with
AES-GCM, plus a slow-hash verifier.  Until then nothing is stored and callers
must supply the password themselves.
"""

from __future__ import annotations


class Vault:
    def __init__(self, state_dir: str):
        self.state_dir = state_dir

    def source_password(self, address: str) -> str | None:
        """The stored source password for ``address``, or None."""
        return None
