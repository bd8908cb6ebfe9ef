"""Secrets at rest for the login proxy.

Each verified source password is kept AES-256-GCM encrypted (the sync needs it
back in clear to log in to the old server) next to an argon2 verifier (so the
proxy can still check a login after cutover, once the password itself has been
destroyed).  The store only ever sees ciphertext and hashes; the key lives
outside the database, so a copy of the database alone reveals nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILE = "vault.key"
CREDENTIAL = "mailsyncd-vault-key"
KEY_BYTES = 32

_FORMAT = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
# Binds each ciphertext to its address: a row copied onto another account fails to decrypt.
_AAD_PREFIX = b"mailsyncd-v1:"
# The key's fingerprint in the database (HMAC of this label: says nothing about the key): nodes that share
# a database must share the key, and one started with another key is refused before it seals anything.
_FINGERPRINT_LABEL = b"mailsyncd vault key fingerprint v1"

# RFC 9106's low-memory profile is t=3, m=64 MiB, p=4: ~115 ms per verify on a 2-core box, too
# slow for a login path.  Half the memory with one lane per core keeps t=3 at ~50 ms.  Hashes
# carry their parameters, so changing these later still verifies existing verifiers.
_HASHER = PasswordHasher(time_cost=3, memory_cost=32 * 1024, parallelism=2)


class VaultError(Exception):
    """Messages name the address or key file, never a secret."""


class Vault:
    def __init__(self, store, key: bytes, *, key_source: str = "(in-memory key)"):
        if len(key) != KEY_BYTES:
            raise VaultError(f"vault key {key_source} has {len(key)} bytes, expected {KEY_BYTES}")
        self.store = store
        self.key_source = key_source
        # Only the cipher object is kept, not the raw bytes, so no attribute can leak the key.
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return f"Vault(key_source={self.key_source!r})"

    @classmethod
    def open(cls, state_dir: str, store) -> Vault:
        """Key from the systemd credential if there is one, else ``state_dir/vault.key`` (created)."""
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds:
            path = os.path.join(creds, CREDENTIAL)
            if os.path.exists(path):
                # systemd already limits credentials to the unit's user (a group-readable mode is its
                # business); world access would still mean a misconfiguration.
                return cls._checked(store, _read_key(path, forbidden=0o007), path)
        path = os.path.join(state_dir, KEY_FILE)
        key = _create_key(state_dir, path)
        if key is None:
            key = _read_key(path, forbidden=0o077)
        return cls._checked(store, key, path)

    @classmethod
    def _checked(cls, store, key: bytes, path: str) -> Vault:
        vault = cls(store, key, key_source=path)
        if not store.claim_vault_key(hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()):
            raise VaultError(
                f"vault key {path} is not the key the passwords in {store.path} were sealed with: every node "
                "sharing a database needs the same key; copy it from a node that has it (or restore it)")
        return vault

    # -- the source password ---------------------------------------------------
    def put_password(self, address: str, password: str) -> None:
        addr = _norm(address)
        self.store.put_secret_password(addr, self._seal(addr, password))

    def source_password(self, address: str) -> str | None:
        addr = _norm(address)
        blob = self.store.secret_password(addr)
        return None if blob is None else self._unseal(addr, blob)

    def source_passwords(self) -> dict[str, str]:
        """Every stored password by address, read in one query (a CSV re-import of 50,000 rows)."""
        return {a: self._unseal(a, blob) for a, blob in self.store.secret_passwords().items()}

    def seal(self, address: str, password: str) -> bytes:
        """The ciphertext put_password would store, for a bulk write by the caller (CSV import)."""
        return self._seal(_norm(address), password)

    def forget_password(self, address: str) -> None:
        self.store.forget_secret_password(_norm(address))

    # -- the verifier --------------------------------------------------------------
    def set_verifier(self, address: str, password: str, *, now: float | None = None) -> None:
        self.store.put_verifier(_norm(address), _HASHER.hash(password), _now(now))

    def expire_verifier(self, address: str) -> None:
        """The source no longer takes this password: it must not open the front door as "recent".

        The verifier itself stays, as the last good password (it decides after cutover).
        """
        row = self.store.verifier(_norm(address))
        if row is not None:
            self.store.put_verifier(_norm(address), row[0], 0.0)

    def check_verifier(self, address: str, password: str, *, max_age: float | None,
                       now: float | None = None) -> bool:
        row = self.store.verifier(_norm(address))
        if row is None:
            return False
        verifier, verified_at = row
        # age first: a stale verifier is refused anyway, no need to spend a hash on it
        if max_age is not None and _now(now) - verified_at > max_age:
            return False
        try:
            return _HASHER.verify(verifier, password)
        except (VerificationError, InvalidHashError):
            return False

    def remember_login(self, address: str, password: str, *, now: float | None = None) -> None:
        addr = _norm(address)
        self.store.put_login(addr, self._seal(addr, password), _HASHER.hash(password), _now(now))

    def record_first_login(self, address: str, password: str, domain: str, plan: str | None,
                           source_address: str | None) -> bool:
        """``remember_login`` and the account, at once; True for the one login that found no stored
        password (the store's compare-and-set: of concurrent first logins on several nodes, one)."""
        addr = _norm(address)
        blob, verifier = self._seal(addr, password), _HASHER.hash(password)    # slow: before the transaction
        return self.store.record_login(addr, domain, plan, source_address, blob, verifier, _now(None))

    # -- sealing -------------------------------------------------------------------
    def _seal(self, addr: str, password: str) -> bytes:
        try:
            data = password.encode("utf-8")
        except UnicodeEncodeError:
            raise VaultError(f"the password for {addr} is not encodable as UTF-8") from None
        nonce = os.urandom(_NONCE_BYTES)
        return bytes([_FORMAT]) + nonce + self._aead.encrypt(nonce, data, _AAD_PREFIX + addr.encode())

    def _unseal(self, addr: str, blob: bytes) -> str:
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[0] != _FORMAT:
            raise VaultError(f"the stored password for {addr} is not in a format this mailsyncd knows")
        nonce, ct = blob[1:1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES:]
        try:
            data = self._aead.decrypt(nonce, ct, _AAD_PREFIX + addr.encode())
        except InvalidTag:
            raise VaultError(
                f"cannot decrypt the stored password for {addr}: the row was altered or copied from "
                f"another address, or the vault key {self.key_source} changed?") from None
        return data.decode("utf-8")


def _norm(address: str) -> str:
    return address.lower()


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _create_key(state_dir: str, path: str) -> bytes | None:
    """Create the key file unless it exists; None if it does (or another process won the race)."""
    if os.path.exists(path):
        return None
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    # Written under a private name and then link()ed into place: link fails if the name exists, and
    # a concurrent opener can never read a half-written key.
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
    finally:
        os.unlink(tmp)
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return key


def _read_key(path: str, *, forbidden: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise VaultError(f"cannot read vault key {path}: {e.strerror}") from None
    try:
        # fstat the descriptor we read from, so the checked file is the one used
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VaultError(f"vault key {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & forbidden:
            raise VaultError(
                f"vault key {path} has mode {mode:04o}, open to other users; "
                f"fix it with: chmod 600 {path}")
        data = os.read(fd, 4 * KEY_BYTES)
    finally:
        os.close(fd)
    return _parse_key(data, path, st.st_size)


def _parse_key(data: bytes, path: str, size: int) -> bytes:
    if len(data) == KEY_BYTES:
        return data
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) == KEY_BYTES:
        return key
    raise VaultError(
        f"vault key {path} holds {size} bytes, expected {KEY_BYTES} raw bytes or their base64; "
        "restore the original key (stored passwords cannot be decrypted without it)")
