"""The front door's login policy, in process: the real Gate, Store and Vault on a fake clock.

Only the source check is replaced (it counts its calls); blocking work runs at once in a
synchronous pool, so a thousand guesses take milliseconds and timers move only when told.
The "source checks per 1,000 guesses" figures in the README's Security section come from here.
"""

from __future__ import annotations

import time

import pytest

from fakes import FakeReactor, SyncPool

from mailsyncd.auth import source
from mailsyncd.auth.gate import Gate
from mailsyncd.config import parse_config
from mailsyncd.vault import Vault

A = "alice@example.com"
NETWORK, USER_NETWORK, USER = "network", "user+network", "user"    # auth.throttle's budget names
RIGHT = "alice-right-pw"


class SourceStub:
    def __init__(self, passwords: dict[str, str]):
        self.passwords = passwords
        self.calls = 0

    def __call__(self, endpoint, address, password):
        self.calls += 1
        if self.passwords.get(address) == password:
            return source.OK, "source accepted"
        return source.WRONG, "login refused"


class Env:
    def __init__(self, tmp_path, monkeypatch, make_store, frontdoor=None):
        fd = {"failure_delay": 0.001, "failure_delay_max": 0.001, **(frontdoor or {})}
        doc = {"state_dir": str(tmp_path / "state"), "frontdoor": fd,
               "domains": {"example.com": {
                   "source": {"host": "127.0.0.1", "port": 1, "security": "none", "protocol": "imap"},
                   "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}}
        self.config = parse_config(doc, path=str(tmp_path / "mailsyncd.yaml"))
        self.reactor = FakeReactor()
        self.reactor.advance(1000)
        self.pool = SyncPool()
        self.make_store = make_store
        self.store = make_store(self.config.state_dir)
        self.vault = Vault.open(self.config.state_dir, self.store)
        self.source = SourceStub({A: RIGHT, **{f"user{i}@example.com": f"pw{i}" for i in range(1000)}})
        monkeypatch.setattr(source, "check", self.source)
        self.verifier_calls = 0
        real = self.vault.check_verifier

        def counted(*a, **kw):
            self.verifier_calls += 1
            return real(*a, **kw)
        monkeypatch.setattr(self.vault, "check_verifier", counted)
        self.wall = time.time()
        self.gate = Gate(self.reactor, self.pool, lambda: self.config, self.store, self.vault,
                         wall=lambda: self.wall, state_pool=SyncPool())

    def start(self, ip, user, password):
        return self.gate.authenticate(ip, user, password)

    def login(self, ip, user, password):
        d = self.start(ip, user, password)
        out = []
        d.addCallback(out.append)
        for _ in range(100):
            if out:
                return out[0]
            self.reactor.advance(0.001)
        raise AssertionError("no verdict")

    def comparisons(self) -> int:
        return self.source.calls + self.verifier_calls


@pytest.fixture
def env(tmp_path, monkeypatch, make_store):
    """On both backends: the throttle buckets, verifiers and first-login records are the store's."""
    return Env(tmp_path, monkeypatch, make_store)


def figure(what: str, n: int) -> None:
    print(f"\nFIGURE {what}: {n}")


def budget(v) -> str | None:
    """The empty budget a refusal names (its log reason says "budget=NAME empty")."""
    assert not v.ok, v
    return getattr(v, "throttled", None)


def test_guesses_from_one_network_do_not_lock_the_user_out_of_another(env):
    verdicts = [env.login("203.0.113.7", A, f"guess-{i}") for i in range(50)]
    assert not any(v.ok for v in verdicts)
    assert env.source.calls == 5                       # the (user, network) budget
    last = verdicts[-1]
    assert last.unavailable and budget(last) == USER_NETWORK, last
    assert "budget=user+network empty for 203.0.113.7/32" in last.reason
    v = env.login("198.51.100.9", A, RIGHT)
    assert v.ok and v.checked_at_source, v


def test_a_thousand_guesses_from_one_address_reach_the_source_five_times(env):
    for i in range(1000):
        env.login("203.0.113.7", A, f"guess-{i}")
    figure("source checks per 1,000 guesses, one user, one network, within minutes", env.source.calls)
    assert env.source.calls <= 5
    env.reactor.advance(3600)                          # an hour later: one more every 5 minutes
    for i in range(1000):
        env.login("203.0.113.7", A, f"later-{i}")
    assert env.source.calls <= 5 + 5


def test_the_circuit_breaker_caps_checks_of_one_user_across_a_thousand_networks(env):
    for i in range(1000):
        v = env.login(f"10.{i // 250}.{i % 250}.1", A, f"guess-{i}")
    figure("source checks per 1,000 guesses, one user, 1,000 networks, at once", env.source.calls)
    assert env.source.calls <= 30
    assert budget(v) == USER and "budget=user empty" in v.reason
    env.source.calls = 0
    for i in range(1000):                              # the next hour, spread out
        env.reactor.advance(3.6)
        env.login(f"10.{4 + i // 250}.{i % 250}.1", A, f"later-{i}")
    figure("source checks per 1,000 guesses, one user, 1,000 networks, spread over the next hour",
           env.source.calls)
    assert env.source.calls <= 31


def test_a_remembered_network_keeps_its_budget_while_strangers_drain_the_breaker(env):
    assert env.login("192.0.2.10", A, RIGHT).ok        # the user's office, remembered from now on
    for i in range(1000):
        env.login(f"10.{i // 250}.{i % 250}.1", A, f"guess-{i}")
    assert budget(env.login("198.51.100.1", A, RIGHT)) == USER     # strangers are stopped...
    env.gate.forget_recent()                           # (no in-memory shortcut for the office)
    env.vault.expire_verifier(A)
    before = env.source.calls
    v = env.login("192.0.2.10", A, RIGHT)              # ...the office is not
    assert v.ok and env.source.calls == before + 1, v
    # The office's own budget is still full: five wrong tries there reach the source.
    for i in range(5):
        assert not env.login("192.0.2.10", A, f"typo-{i}").unavailable
    assert budget(env.login("192.0.2.10", A, "typo-5")) == USER_NETWORK


def test_known_networks_are_stored_as_prefixes_and_forgotten_after_30_days(env):
    assert env.login("2001:db8:1:2:aaaa:bbbb:cccc:dddd", A, RIGHT).ok
    rows = env.store._conn().execute("SELECT address, network FROM known_networks").fetchall()
    assert rows == [(A, "2001:db8:1:2::/64")]
    assert env.store.is_known_network(A, "2001:db8:1:2::/64", now=env.wall + 29 * 86400)
    assert not env.store.is_known_network(A, "2001:db8:1:2::/64", now=env.wall + 31 * 86400)
    env.store.remember_network("bob@example.com", "192.0.2.1/32", now=env.wall + 31 * 86400)
    rows = env.store._conn().execute("SELECT address FROM known_networks").fetchall()
    assert rows == [("bob@example.com",)]              # pruned


def test_one_network_spraying_many_users_is_capped(env):
    for i in range(1000):
        v = env.login("203.0.113.50", f"user{i}@example.com", "Summer2026!")
    figure("source checks per 1,000 guesses, 1,000 users, one network", env.source.calls)
    assert env.source.calls <= 10
    assert budget(v) == NETWORK


def test_no_password_comparison_without_a_token_while_the_verifier_is_fresh(env):
    assert env.login("192.0.2.10", A, RIGHT).ok        # a fresh argon2 verifier from now on
    env.source.calls = env.verifier_calls = 0
    results = [env.login("203.0.113.7", A, f"guess-{i}") for i in range(999)]
    results.append(env.login("203.0.113.7", A, RIGHT))
    figure("password comparisons (argon2 + source) per 1,000 guesses, fresh verifier", env.comparisons())
    assert env.verifier_calls <= 5 and env.source.calls <= 5, (env.verifier_calls, env.source.calls)
    assert not results[-1].ok and budget(results[-1]) == USER_NETWORK   # the right one, too late


def test_the_in_memory_caches_are_behind_the_token_too(env):
    assert env.login("192.0.2.10", A, RIGHT).ok        # now in the 60 s positive cache
    for i in range(20):
        env.login("203.0.113.7", A, f"guess-{i}")
    v = env.login("203.0.113.7", A, RIGHT)
    assert not v.ok and budget(v) == USER_NETWORK, v


def test_a_right_password_gives_its_token_back(env):
    for i in range(4):
        env.login("203.0.113.7", A, f"guess-{i}")      # 4 of 5 tokens spent
    for _ in range(50):                                 # the right password, over and over
        assert env.login("203.0.113.7", A, RIGHT).ok
    before = env.source.calls
    assert not env.login("203.0.113.7", A, "guess-x").unavailable    # the last token is still there
    assert env.source.calls == before + 1
    assert budget(env.login("203.0.113.7", A, "guess-y")) == USER_NETWORK


def test_a_phone_repeating_a_stale_password_does_not_drain_the_budget(env):
    for _ in range(100):
        v = env.login("192.0.2.10", A, "last-years-password")
        assert not v.ok and not v.unavailable
    assert env.source.calls == 1
    assert env.login("192.0.2.10", A, RIGHT).ok


def test_password_checks_in_progress_per_network_are_capped(env):
    env.pool.hold = True                                # every check stays in progress
    pending = [env.start("203.0.113.7", A, f"guess-{i}") for i in range(30)]
    refused = []
    for d in pending:
        d.addCallback(lambda v: refused.append(v) if budget(v) == "pending" else None)
    env.reactor.advance(1)
    assert len(refused) == 30 - 8                       # max_pending_per_ip
    assert all(v.unavailable and "in progress from 203.0.113.7/32" in v.reason for v in refused)
    other = env.start("198.51.100.1", A, RIGHT)         # another network is not affected
    env.pool.release()
    env.reactor.advance(1)
    assert other.result.ok


def test_throttle_limits_apply_on_reload_without_a_fresh_allowance():
    from mailsyncd.auth.throttle import Limits, Throttle
    clock = [0.0]
    th = Throttle(Limits(user_network_burst=5), lambda: clock[0])
    assert sum(th.take("n", "a", known=False) is None for _ in range(10)) == 5
    th.update(Limits(user_network_burst=50))
    assert th.take("n", "a", known=False) == USER_NETWORK


def test_connection_limits_per_client_and_in_total():
    from mailsyncd.connlimits import PER_KEY, TOTAL, ConnectionLimits
    lim = ConnectionLimits(per_key=2, total=3)
    assert lim.admit("a") is None and lim.admit("a") is None
    assert lim.admit("a") == PER_KEY
    assert lim.admit("b") is None
    assert lim.admit("c") == TOTAL
    lim.settle("a")                                     # logged in: frees the per-client slot only
    assert lim.admit("c") == TOTAL
    lim.release("a", settled=True)
    assert lim.admit("a") is None and lim.held == 3 and lim.open("a") == 2


def test_network_of():
    from mailsyncd.auth.throttle import network_of
    assert network_of("203.0.113.7") == "203.0.113.7/32"
    assert network_of("::ffff:203.0.113.7") == "203.0.113.7/32"
    assert network_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


def test_login_checks_share_the_source_hosts_connections_with_passes(env):
    import threading

    from mailsyncd.scheduler import Scheduler, _Running, host_key
    from mailsyncd.sync.progress import Progress

    sched = Scheduler(env.reactor, None, None, env.store, env.vault, lambda: env.config)
    ep = env.config.domains["example.com"].source
    host = host_key(ep)
    full = ep.max_connections
    sched.running["bob@example.com"] = _Running(Progress(), threading.Event(), host, full, "example.com")
    got = []
    sched.acquire(ep, 5.0).addCallback(got.append)
    env.reactor.advance(4.9)
    assert got == []                                   # waits while the pass holds every connection
    env.reactor.advance(0.2)
    assert got == [False] and sched.counts["login_checks_refused"] == 1
    sched.acquire(ep, 5.0).addCallback(got.append)
    sched._ended(None, "bob@example.com", env.config.domains["example.com"])   # the pass ends
    assert got == [False, True] and sched.checks == {host: 1}
    # While a login holds one, a pass may use only the rest.
    assert sched._host_free(host, ep) == full - 1
    sched.release(ep)
    assert sched.checks == {} and sched._host_free(host, ep) == full


def test_a_waiting_login_goes_before_new_passes(env):
    import threading

    from mailsyncd.scheduler import Scheduler, _Account, _Running, host_key
    from mailsyncd.sync.progress import Progress

    env.pool.hold = True                               # passes that start stay "running"
    # passes held; the state work (the shared budget's confirmations) at once
    sched = Scheduler(env.reactor, env.pool, SyncPool(), env.store, env.vault, lambda: env.config)
    ep = env.config.domains["example.com"].source
    host = host_key(ep)
    sched.running["bob@example.com"] = _Running(Progress(), threading.Event(), host, ep.max_connections,
                                                "example.com")
    sched.accounts["carol@example.com"] = _Account("carol@example.com", "example.com")
    got = []
    sched.acquire(ep, 30.0).addCallback(got.append)    # a login waits for the busy host
    sched._ended(None, "bob@example.com", env.config.domains["example.com"])
    assert got == [True]                               # the freed connection went to the login...
    sched.tick()
    assert "carol@example.com" in sched.running        # ...and the pass takes what is left
    assert sched.running["carol@example.com"].connections <= ep.max_connections - 1
    got2 = []
    sched.running["carol@example.com"].connections = ep.max_connections - 1   # the host is full again
    sched.acquire(ep, 30.0).addCallback(got2.append)
    sched.accounts["dave@example.com"] = _Account("dave@example.com", "example.com")
    sched.release(ep)                                  # the first login's check is done
    assert got2 == [True]
    sched.tick()
    assert "dave@example.com" not in sched.running     # no connection left for a new pass


# -- several nodes on one store -----------------------------------------------------------------

def node(env):
    """A second node: its own store connections, vault and gate on the same database, the same clock."""
    store = env.make_store(env.config.state_dir)
    vault = Vault.open(env.config.state_dir, store)
    gate = Gate(env.reactor, SyncPool(), lambda: env.config, store, vault, wall=lambda: env.wall,
                state_pool=SyncPool())
    return gate, store


def login_at(env, gate, ip, user, password):
    out = []
    gate.authenticate(ip, user, password).addCallback(out.append)
    for _ in range(100):
        if out:
            return out[0]
        env.reactor.advance(0.001)
    raise AssertionError("no verdict")


@pytest.mark.parametrize(("ip", "user", "most"), [
    (lambda i: "203.0.113.7", lambda i: A, 5),                                  # one user, one network
    (lambda i: f"10.{i // 250}.{i % 250}.1", lambda i: A, 30),                  # the circuit breaker
    (lambda i: "203.0.113.50", lambda i: f"user{i}@example.com", 10),           # one network, many users
], ids=["user+network", "user", "network"])
def test_guesses_alternated_between_two_nodes_reach_the_source_as_often_as_through_one(env, ip, user, most):
    gate_b, store_b = node(env)
    nodes = [env.gate, gate_b]
    for i in range(1000):
        v = login_at(env, nodes[i % 2], ip(i), user(i), f"guess-{i}")
    assert not v.ok and v.throttled
    assert env.source.calls <= most, env.source.calls     # the same as through one node
    store_b.close()


def test_the_failure_delay_grows_across_nodes_and_old_rows_are_trimmed(env):
    from mailsyncd.auth.throttle import Limits, Throttle
    clock = [1000.0]
    store_b = env.make_store(env.config.state_dir)
    a = Throttle(Limits(delay_base=2, delay_max=15), lambda: clock[0], state=env.store)
    b = Throttle(Limits(delay_base=2, delay_max=15), lambda: clock[0], state=store_b)
    assert [(a, b)[i % 2].failed("9.9.9.9") for i in range(5)] == [2, 4, 8, 15, 15]
    b.succeeded("9.9.9.9")
    assert a.failed("9.9.9.9") == 2
    for i in range(50):
        assert a.take(f"10.0.{i}.1/32", f"u{i}@example.com", known=False) is None
    assert env.store.throttle_rows() > 50
    clock[0] += 3 * 3600                                # every bucket full again, the streak over
    assert b.take("10.1.0.1/32", A, known=False) is None    # a take trims, every few minutes
    assert env.store.throttle_rows() == 3                  # only the three buckets just spent from
    store_b.close()


def test_two_nodes_verifying_the_same_first_login_at_once_report_one_first_login(env):
    """The first-login record is a compare-and-set in the store: two nodes that both verified a new
    user's password at the source at the same moment start ONE migration, not two."""
    import threading

    gate_b, store_b = node(env)
    for n in range(4):
        user = f"user{n}@example.com"
        barrier = threading.Barrier(2)
        firsts = []

        def remember(gate):
            barrier.wait()
            firsts.append(gate._remember(user, "example.com", f"pw{n}", "login", None))

        threads = [threading.Thread(target=remember, args=(g,)) for g in (env.gate, gate_b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(firsts) == [False, True], (user, firsts)
        assert env.vault.source_password(user) == f"pw{n}"
        assert env.store.account(user)["plan"] == "login"
    # and a later login of the same user is not a first one on either node
    assert gate_b._remember("user0@example.com", "example.com", "pw0", "login", None) is False
    store_b.close()
