"""The vault: key handling, encryption at rest, verifiers, and the store's v2 schema."""

from __future__ import annotations

import base64
import os
import sqlite3
import stat

import pytest

from mailsyncd import store as store_mod
from mailsyncd.store import SCHEMA_VERSION, Store
from mailsyncd.vault import CREDENTIAL, KEY_FILE, Vault, VaultError

PASSWORD = "Pässw0rd-测试-\"\\x"
ADDR = "Alice@Example.org"


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def store(state, make_store):
    return make_store(str(state))


@pytest.fixture
def vault(state, store):
    return Vault.open(str(state), store)


@pytest.fixture
def sqlite_store(state):
    """For the tests that read the database's files (PostgreSQL's are its own: see README on secure deletion)."""
    s = Store.in_state_dir(str(state))
    yield s
    s.close()


@pytest.fixture
def sqlite_vault(state, sqlite_store):
    return Vault.open(str(state), sqlite_store)


def _all_bytes(root) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- the key -------------------------------------------------------------------
def test_key_file_created_private_and_reused(state, store):
    v1 = Vault.open(str(state), store)
    key = state / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32
    v1.put_password(ADDR, PASSWORD)
    assert Vault.open(str(state), store).source_password(ADDR) == PASSWORD
    assert [p.name for p in state.iterdir() if p.name.endswith(".tmp")] == []


def test_refuses_group_readable_key(state, store):
    key = state / KEY_FILE
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    with pytest.raises(VaultError, match="chmod 600") as e:
        Vault.open(str(state), store)
    assert str(key) in str(e.value)


@pytest.mark.parametrize("size", [0, 16, 33])
def test_refuses_wrong_length_key(state, store, size):
    key = state / KEY_FILE
    key.write_bytes(b"k" * size)
    key.chmod(0o600)
    with pytest.raises(VaultError, match="expected 32") as e:
        Vault.open(str(state), store)
    assert str(key) in str(e.value)


def test_base64_key_file_accepted(state, store):
    raw = os.urandom(32)
    key = state / KEY_FILE
    key.write_bytes(base64.b64encode(raw) + b"\n")
    key.chmod(0o600)
    Vault.open(str(state), store).put_password(ADDR, PASSWORD)
    assert Vault(store, raw).source_password(ADDR) == PASSWORD


@pytest.mark.parametrize("encode", [lambda k: k, lambda k: base64.b64encode(k) + b"\n"], ids=["raw", "base64"])
def test_systemd_credential_takes_precedence(tmp_path, state, store, monkeypatch, encode):
    creds = tmp_path / "creds"
    creds.mkdir()
    raw = os.urandom(32)
    cred = creds / CREDENTIAL
    cred.write_bytes(encode(raw))
    cred.chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    v = Vault.open(str(state), store)
    assert not (state / KEY_FILE).exists()
    assert str(cred) in repr(v)
    v.put_password(ADDR, PASSWORD)
    assert Vault(store, raw).source_password(ADDR) == PASSWORD


def test_missing_credential_falls_back_to_key_file(tmp_path, state, store, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "nothing-here"))
    Vault.open(str(state), store)
    assert (state / KEY_FILE).exists()


def test_repr_shows_no_key(state, store):
    v = Vault.open(str(state), store)
    key = (state / KEY_FILE).read_bytes()
    r = repr(v)
    assert r == f"Vault(key_source={str(state / KEY_FILE)!r})"
    assert key.hex() not in r and repr(key) not in r
    assert all(not isinstance(x, (bytes, bytearray)) for x in vars(v).values())


# -- the source password ---------------------------------------------------------
def test_round_trip_replace_and_unknown(vault):
    assert vault.source_password(ADDR) is None
    vault.put_password(ADDR, PASSWORD)
    assert vault.source_password(ADDR) == PASSWORD
    assert vault.source_password(ADDR.lower()) == PASSWORD
    vault.put_password(ADDR.upper(), "second")
    assert vault.source_password(ADDR) == "second"
    assert vault.source_password("bob@example.org") is None


def test_no_plaintext_on_disk(tmp_path, sqlite_vault, sqlite_store):
    vault, store = sqlite_vault, sqlite_store
    vault.remember_login(ADDR, PASSWORD)
    vault.put_password("bob@example.org", PASSWORD)
    files = _all_bytes(tmp_path)
    assert any(f.endswith("-wal") for f in files), "the WAL should be checked too"
    needles = [PASSWORD.encode("utf-8"), PASSWORD.encode("utf-16-le"), b"w0rd"]
    for name, data in files.items():
        for n in needles:
            assert n not in data, f"{n!r} found in {name}"


def test_forget_destroys_ciphertext(tmp_path, sqlite_vault, sqlite_store):
    vault, store = sqlite_vault, sqlite_store
    # as with an SQLite built without SECURE_DELETE (Debian's has it on)
    store._conn().execute("PRAGMA secure_delete=OFF")
    for i in range(5):
        vault.put_password(f"u{i}@example.org", f"other-{i}" * 3)
    vault.put_password(ADDR, PASSWORD * 4)
    ct = store.secret_password(ADDR.lower())[13:]  # after version byte and nonce
    vault.forget_password(ADDR)
    assert store._conn().execute("PRAGMA secure_delete").fetchone() == (0,)
    assert vault.source_password(ADDR) is None
    # any 12-byte piece: the shorter new row reuses part of the old cell, the rest would stay behind
    pieces = [ct[i:i + 12] for i in range(0, len(ct) - 11, 4)]
    for name, data in _all_bytes(tmp_path).items():
        assert not any(p in data for p in pieces), f"ciphertext left in {name}"


def test_row_moved_to_other_address_fails_cleanly(vault, store):
    vault.put_password(ADDR, PASSWORD)
    store.put_secret_password("mallory@example.org", store.secret_password(ADDR.lower()))
    with pytest.raises(VaultError, match="cannot decrypt the stored password for mallory@example.org") as e:
        vault.source_password("mallory@example.org")
    assert PASSWORD not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_wrong_key_fails_cleanly(vault, store):
    vault.put_password(ADDR, PASSWORD)
    other = Vault(store, os.urandom(32), key_source="/elsewhere/vault.key")
    with pytest.raises(VaultError, match="/elsewhere/vault.key changed") as e:
        other.source_password(ADDR)
    assert PASSWORD not in str(e.value)


def test_tampered_blob_fails_cleanly(vault, store):
    vault.put_password(ADDR, PASSWORD)
    blob = bytearray(store.secret_password(ADDR.lower()))
    blob[-1] ^= 1
    store.put_secret_password(ADDR.lower(), bytes(blob))
    with pytest.raises(VaultError, match="cannot decrypt"):
        vault.source_password(ADDR)
    store.put_secret_password(ADDR.lower(), b"\x07" + bytes(40))
    with pytest.raises(VaultError, match="format"):
        vault.source_password(ADDR)


def test_a_node_with_another_vault_key_is_refused_while_passwords_sealed_with_the_first_are_stored(
        tmp_path, state, store):
    Vault.open(str(state), store).put_password(ADDR, PASSWORD)
    other = tmp_path / "node2"                        # a second node: its own state_dir, the same database
    other.mkdir(mode=0o700)
    with pytest.raises(VaultError, match=r"node2/vault.key is not the key the passwords in .* were sealed with"):
        Vault.open(str(other), store)
    # the first node's key, copied as the error says, is accepted and decrypts
    (other / KEY_FILE).write_bytes((state / KEY_FILE).read_bytes())
    assert Vault.open(str(other), store).source_password(ADDR) == PASSWORD
    # with no sealed password left, a new key loses nothing and is recorded instead
    store.forget_secret_password(ADDR.lower())
    fresh = tmp_path / "node3"
    fresh.mkdir(mode=0o700)
    Vault.open(str(fresh), store).put_password(ADDR, PASSWORD)
    with pytest.raises(VaultError, match="not the key"):
        Vault.open(str(state), store)


def test_in_memory_key_must_be_32_bytes(store):
    with pytest.raises(VaultError, match="expected 32"):
        Vault(store, b"short")


# -- the verifier ------------------------------------------------------------------
def test_verifier(vault, store):
    assert not vault.check_verifier(ADDR, PASSWORD, max_age=None)
    vault.set_verifier(ADDR, PASSWORD, now=1000.0)
    assert vault.check_verifier(ADDR.upper(), PASSWORD, max_age=None, now=10**9)
    assert vault.check_verifier(ADDR, PASSWORD, max_age=60, now=1060.0)
    assert not vault.check_verifier(ADDR, PASSWORD, max_age=60, now=1060.5)
    assert not vault.check_verifier(ADDR, PASSWORD + "x", max_age=None)
    assert not vault.check_verifier(ADDR, "", max_age=None)
    verifier, at = store.verifier(ADDR.lower())
    assert at == 1000.0 and PASSWORD not in verifier
    # a verifier that is not an argon2 hash counts as no match, not as a crash
    store.put_verifier(ADDR.lower(), "not a hash", 1000.0)
    assert not vault.check_verifier(ADDR, PASSWORD, max_age=None)


def test_remember_login_then_forget_keeps_verifier(vault, store):
    vault.remember_login(ADDR, PASSWORD, now=5.0)
    assert vault.source_password(ADDR) == PASSWORD
    assert store.verifier(ADDR.lower())[1] == 5.0
    vault.forget_password(ADDR)
    assert vault.source_password(ADDR) is None
    assert vault.check_verifier(ADDR, PASSWORD, max_age=None)
    assert not vault.check_verifier(ADDR, "wrong", max_age=None)


def test_set_verifier_keeps_password(vault):
    vault.put_password(ADDR, PASSWORD)
    vault.set_verifier(ADDR, PASSWORD)
    assert vault.source_password(ADDR) == PASSWORD
    assert vault.check_verifier(ADDR, PASSWORD, max_age=3600)


# -- the store's schema v2 -----------------------------------------------------------
def test_v1_database_migrates_to_v2(tmp_path):
    path = tmp_path / "old.sqlite3"
    c = sqlite3.connect(path)
    c.executescript(store_mod._MIGRATIONS[1])
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    c.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    c.execute("INSERT INTO accounts (address, domain, phase, created, updated)"
              " VALUES ('old@example.org', 'example.org', 'synced', 1.0, 2.0)")
    c.commit()
    c.close()

    s = Store(str(path))
    try:
        assert s._conn().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        acct = s.account("old@example.org")
        assert acct["phase"] == "synced" and acct["created"] == 1.0 and acct["plan"] is None
        s.ensure_account("old@example.org", "example.org", plan="import")
        assert s.account("old@example.org")["plan"] == "import"
        s.ensure_account("old@example.org", "example.org", plan="login")
        assert s.account("old@example.org")["plan"] == "import"
        s.ensure_account("new@example.org", "example.org")
        assert s.account("new@example.org")["plan"] is None
        s.ensure_account("self@example.org", "example.org", plan="self_service")
        assert s.account("self@example.org")["plan"] == "self_service"
        s.put_login("old@example.org", b"blob", "$argon2id$x", 3.0)
        assert s.secret_password("old@example.org") == b"blob"
        assert s.verifier("old@example.org") == ("$argon2id$x", 3.0)
    finally:
        s.close()
    s = Store(str(path))  # reopening a v2 database is a no-op
    try:
        assert s.account("old@example.org")["plan"] == "import"
    finally:
        s.close()


def test_store_secret_methods(store):
    a = "x@example.org"
    assert store.secret_password(a) is None and store.verifier(a) is None
    store.put_verifier(a, "v1", 1.0)
    assert store.secret_password(a) is None and store.verifier(a) == ("v1", 1.0)
    store.put_secret_password(a, b"b1")
    assert store.secret_password(a) == b"b1" and store.verifier(a) == ("v1", 1.0)
    store.forget_secret_password(a)
    assert store.secret_password(a) is None and store.verifier(a) == ("v1", 1.0)
    store.put_login(a, b"b2", "v2", 2.0)
    assert store.secret_password(a) == b"b2" and store.verifier(a) == ("v2", 2.0)


def _pieces(ct: bytes) -> list[bytes]:
    # any 12-byte piece: a shorter new row reuses part of the old cell, the rest would stay behind
    return [ct[i:i + 12] for i in range(0, len(ct) - 11, 4)]


@pytest.mark.parametrize("how", ["put_password", "remember_login", "import", "forget"])
def test_a_replaced_or_forgotten_password_cannot_be_carved_from_the_files(tmp_path, sqlite_vault, sqlite_store, how):
    vault, store = sqlite_vault, sqlite_store
    # as with an SQLite built without SECURE_DELETE (Debian's has it on)
    store._conn().execute("PRAGMA secure_delete=OFF")
    for i in range(5):
        vault.put_password(f"u{i}@example.org", f"other-{i}" * 3)
    vault.put_password(ADDR, PASSWORD * 4)
    old = store.secret_password(ADDR.lower())[13:]          # P1's ciphertext, after version byte and nonce
    if how == "put_password":
        vault.put_password(ADDR, "P2")
    elif how == "remember_login":                           # a login with a new password
        vault.remember_login(ADDR, "P2")
    elif how == "import":
        store.import_accounts([(ADDR.lower(), "example.org", "import", None, vault.seal(ADDR, "P2"))])
    else:
        vault.forget_password(ADDR)
    assert vault.source_password(ADDR) == (None if how == "forget" else "P2")
    files = _all_bytes(tmp_path)
    assert any(f.endswith("-wal") for f in files)
    for name, data in files.items():
        assert not any(p in data for p in _pieces(old)), f"P1's ciphertext left in {name}"
