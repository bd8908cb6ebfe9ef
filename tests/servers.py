"""Fixtures for the other real IMAP servers (imported by conftest.py), each a fresh instance in
the test's tmp_path on free 127.0.0.1 ports, stopped at teardown:

* ``courier_server`` -> mailsyncd.testing.courier.Courier (users SOURCE_USERS; "INBOX." + ".")
* ``cyrus_server``   -> mailsyncd.testing.cyrus.Cyrus (users SOURCE_USERS; "INBOX." + ".")
* ``make_courier`` / ``make_cyrus`` -> factories ``make(name, users=None, **kwargs)``, e.g.
  ``make_cyrus("t", unixhierarchysep=True)``
* ``dovecot_dot_server``    -> Dovecot with separator "." and prefix "INBOX."
* ``dovecot_shared_server`` -> Dovecot with a shared namespace "shared/<login>/" and
  mail_shared_explicit_inbox

Courier and Cyrus run from the private prefix of scripts/setup-servers.sh.  When it is missing
the fixtures FAIL (never skip): setup.sh installs it, and a skip would hide the tests.
"""

from __future__ import annotations

import pytest

from mailsyncd.testing.courier import Courier, courier_missing_reason
from mailsyncd.testing.cyrus import Cyrus, cyrus_missing_reason

SERVER_FIXTURES = {"courier_server", "cyrus_server", "make_courier", "make_cyrus"}
DOVECOT_VARIANT_FIXTURES = {"dovecot_dot_server", "dovecot_shared_server"}


def _factory(tmp_path, cls, missing_reason, default_users):
    reason = missing_reason()
    if reason is not None:
        pytest.fail(f"{cls.__name__} test server unavailable: {reason}", pytrace=False)
    started = []

    def make(name: str, users: dict[str, str] | None = None, **kwargs):
        server = cls(str(tmp_path), name, dict(default_users if users is None else users), **kwargs)
        started.append(server)
        server.start()
        return server

    return make, started


def _stop_all(started) -> None:
    errors = []
    for s in reversed(started):
        try:
            s.stop()
        except Exception as e:  # pragma: no cover - keep stopping the others
            errors.append(e)
    if errors:
        raise errors[0]


def make_fixtures(source_users: dict[str, str]):
    """The fixtures, bound to conftest's users (returned so that conftest's namespace holds them)."""

    @pytest.fixture
    def make_courier(tmp_path):
        make, started = _factory(tmp_path, Courier, courier_missing_reason, source_users)
        yield make
        _stop_all(started)

    @pytest.fixture
    def make_cyrus(tmp_path):
        make, started = _factory(tmp_path, Cyrus, cyrus_missing_reason, source_users)
        yield make
        _stop_all(started)

    @pytest.fixture
    def courier_server(make_courier) -> Courier:
        return make_courier("courier")

    @pytest.fixture
    def cyrus_server(make_cyrus) -> Cyrus:
        return make_cyrus("cyrus")

    @pytest.fixture
    def dovecot_dot_server(make_dovecot):
        return make_dovecot("dovecot-dot", namespace="dot")

    @pytest.fixture
    def dovecot_shared_server(make_dovecot):
        return make_dovecot("dovecot-shared", namespace="shared")

    return make_courier, make_cyrus, courier_server, cyrus_server, dovecot_dot_server, dovecot_shared_server
