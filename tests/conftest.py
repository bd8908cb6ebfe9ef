"""Shared fixtures: real throwaway Dovecot servers (see mailsyncd/testing/dovecot.py).

Fixtures (function-scoped; every test gets fresh servers in its own tmp_path; ~25 ms each to
start and to stop):

* ``dovecot_pair``  -> DovecotPair(.source, .target, .users, .master)
* ``make_dovecot``  -> factory ``make_dovecot(name, users=None, **Dovecot kwargs)`` returning a
  started instance under tmp_path; all stopped at teardown
* ``test_cert``     -> (certfile, keyfile) self-signed for localhost/127.0.0.1
* Courier-IMAP, Cyrus IMAP and Dovecot namespace variants: see tests/servers.py

Tests needing Dovecot (marked ``@pytest.mark.dovecot`` or using one of the fixtures above) are
skipped, with the reason printed in the report header and in ``-rs``, when ``dovecot`` is not
installed -- except under CI (env ``CI=true``), where they fail instead.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

import pytest

try:
    import mailsyncd  # noqa: F401
except ImportError:  # bare `pytest` from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailsyncd.testing import Dovecot, dovecot_missing_reason, make_test_cert

import servers

_DOVECOT_FIXTURES = {"dovecot_pair", "make_dovecot"} | servers.DOVECOT_VARIANT_FIXTURES
_MISSING = dovecot_missing_reason()
_IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_report_header(config):
    if _MISSING is None:
        return "dovecot: available (tests start throwaway servers on 127.0.0.1)"
    what = "tests marked 'dovecot' will FAIL (CI=true)" if _IN_CI else "tests marked 'dovecot' are SKIPPED"
    return f"dovecot: NOT AVAILABLE -- {_MISSING}; {what}"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _DOVECOT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.dovecot)  # so that `-m "not dovecot"` deselects them
        callspec = getattr(item, "callspec", None)
        if {"postgres_server", "pg_database"} & set(getattr(item, "fixturenames", ())) or (
                callspec is not None and callspec.params.get("store_backend") == "postgresql"):
            item.add_marker(pytest.mark.postgres)


def _require_dovecot() -> None:
    if _MISSING is not None:
        if _IN_CI:
            pytest.fail(f"CI=true but {_MISSING}", pytrace=False)
        pytest.skip(_MISSING)


@pytest.fixture(autouse=True)
def _dovecot_guard(request):
    if request.node.get_closest_marker("dovecot") is not None:
        _require_dovecot()


class UserCreds(NamedTuple):
    old_password: str  # on the source ("old") server
    new_password: str  # on the target ("new") server


SOURCE_USERS = {"alice@example.com": "alice-old-pw", "bob@example.com": "bob-old-pw"}
TARGET_USERS = {"alice@example.com": "alice-new-pw", "bob@example.com": "bob-new-pw"}
MASTER = ("master", "master-pw")


@dataclass
class DovecotPair:
    source: Dovecot
    target: Dovecot
    users: dict[str, UserCreds]
    master: tuple[str, str] = MASTER
    host: str = field(default="127.0.0.1")

    def source_account(self, user: str) -> tuple[str, int, str, str]:
        """(host, port, user, password) on the source -- e.g. ``seed(*pair.source_account(u), ...)``."""
        return self.host, self.source.imap_port, user, self.users[user].old_password

    def target_account(self, user: str) -> tuple[str, int, str, str]:
        return self.host, self.target.imap_port, user, self.users[user].new_password

    def target_master_account(self, user: str) -> tuple[str, int, str, str]:
        """Login ``user*master`` with the master password (Dovecot master user)."""
        return self.host, self.target.imap_port, f"{user}*{self.master[0]}", self.master[1]


@pytest.fixture
def make_dovecot(tmp_path):
    _require_dovecot()
    started: list[Dovecot] = []

    def make(name: str, users: dict[str, str] | None = None, **kwargs) -> Dovecot:
        d = Dovecot(str(tmp_path), name, dict(SOURCE_USERS if users is None else users), **kwargs)
        started.append(d)
        d.start()
        return d

    yield make
    errors = []
    for d in reversed(started):
        try:
            d.stop()
        except Exception as e:  # pragma: no cover - keep stopping the others
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def dovecot_pair(make_dovecot) -> DovecotPair:
    source = make_dovecot("source", SOURCE_USERS)
    target = make_dovecot("target", TARGET_USERS, master=MASTER)
    users = {u: UserCreds(SOURCE_USERS[u], TARGET_USERS[u]) for u in SOURCE_USERS}
    return DovecotPair(source, target, users)


@pytest.fixture
def quota_pair(dovecot_pair, make_dovecot) -> DovecotPair:
    """The pair with a target that refuses messages over 100 kB (what makes skipped messages)."""
    pair = dovecot_pair
    pair.target.stop()
    pair.target = make_dovecot("target2", TARGET_USERS, master=MASTER, extra_conf="""
mail_plugins = $mail_plugins quota
plugin {
  quota = maildir:User quota
  quota_max_mail_size = 100k
}""")
    return pair


(make_courier, make_cyrus, courier_server, cyrus_server,
 dovecot_dot_server, dovecot_shared_server) = servers.make_fixtures(SOURCE_USERS)


@pytest.fixture
def test_cert(tmp_path) -> tuple[str, str]:
    return make_test_cert(str(tmp_path / "tls"))


@pytest.fixture
def make_haproxy(tmp_path):
    """``make_haproxy([Frontend(...), ...])`` -> a started HAProxy (mailsyncd/testing/haproxy.py); stopped at teardown."""
    from mailsyncd.testing.haproxy import HAProxy, haproxy_missing_reason

    missing = haproxy_missing_reason()
    if missing is not None:
        pytest.fail(missing, pytrace=False) if _IN_CI else pytest.skip(missing)
    started: list[HAProxy] = []

    def make(frontends, name: str = "haproxy") -> HAProxy:
        h = HAProxy(str(tmp_path), frontends, name)
        started.append(h)
        h.start()
        return h

    yield make
    for h in started:
        h.stop()
# -- PostgreSQL (mailsyncd/testing/postgres.py): one server a session, a fresh database a test ---------
@pytest.fixture(scope="session")
def postgres_server():
    from mailsyncd.testing.postgres import Postgres, postgres_missing_reason
    reason = postgres_missing_reason()
    if reason is not None:
        pytest.fail(f"CI=true but {reason}", pytrace=False) if _IN_CI else pytest.skip(reason)
    with Postgres() as pg:
        yield pg


@pytest.fixture
def pg_database(postgres_server, request):
    """(url, password_file) of a database of its own (CREATE DATABASE ... TEMPLATE template0: fast)."""
    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[-50:].lower()
    postgres_server.drop_database(name)
    url = postgres_server.create_database(name)
    yield url, postgres_server.password_file
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request) -> str:
    return request.param


@pytest.fixture
def make_store(request, tmp_path, store_backend):
    """``make_store()`` -> a Store on this test's backend (SQLite in tmp_path/state, or its own PostgreSQL
    database, migrated); each call opens it again on the same data.  All closed at teardown."""
    from mailsyncd.store import Store
    opened = []

    def make(state_dir: str | None = None):
        if store_backend == "sqlite":
            s = Store.in_state_dir(state_dir or str(tmp_path / "state"))
        else:
            from mailsyncd.store.pg import PgStore
            from mailsyncd.testing.postgres import PASSWORD
            url, _ = request.getfixturevalue("pg_database")
            s = PgStore(url, password=PASSWORD, migrate=True)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()
