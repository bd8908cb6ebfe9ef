"""Status views at scale: filters and keyset pages in the store's query, totals by the database.

The store is filled by bulk INSERTs (mailsyncd/testing/bulkaccounts.py), not by imports.  These tests
check correctness only, on both backends (``make_store``); bench/status_scale.py measures the time.
"""

import random

import pytest

from mailsyncd import status, statusquery
from mailsyncd.statusquery import Query, QueryError
from mailsyncd.testing.bulkaccounts import DOMAINS, fill

from mailsyncd.config import parse_config


def config(tmp_path):
    doc = {"domains": {d: {"source": {"host": "127.0.0.1", "security": "none"},
                           "target": {"host": "127.0.0.1", "security": "none"}} for d in DOMAINS},
           "scheduler": {"pass_interval": 300}}
    return parse_config(doc, path=str(tmp_path / "c.yaml"))


def python_model(store, c, live, *, domain=None, phase=None, q=None, now=5.0):
    """What the old code did: every account's entry in Python, then filtered."""
    views = [status.account_view(r, live.get(r["address"]), c.scheduler.pass_interval, now)
             for r in store.progress_rows()]
    return [a for a in views if (domain is None or a["domain"] == domain) and (phase is None or a["phase"] == phase)
            and (q is None or q in a["address"].lower() or q in (a["source_address"] or "").lower())]


def database_doc(store, c, live, query, now=5.0):
    got = statusquery.read(store, query, running=live.keys())
    return status.build_page(got["rows"], got["groups"], config=c, live=live, running_domains=got["running_domains"],
                             domain=query.domain, next_cursor=got["next_cursor"], now=now)


@pytest.fixture
def small(make_store):
    store = make_store()
    return store, fill(store, 700, seed=7)


def test_database_totals_equal_the_python_model_on_random_data(tmp_path, small):
    store, addresses = small
    c = config(tmp_path)
    rnd = random.Random(3)
    stored = {a["address"]: (a["phase"], a["has_password"]) for a in store.progress_rows()}
    for trial in range(3):
        # passes running now, in every stored phase, with rates: they turn phases into "syncing" (not the
        # cutover) and add to the rate
        running = [a for kind in set(stored.values()) for a in rnd.sample(sorted(x for x in stored
                                                                                  if stored[x] == kind), 2)]
        live = {a: {"done": 1, "total": rnd.randint(1, 50), "rate": rnd.uniform(0, 30), "current": ["INBOX"]}
                for a in running}
        filters = ([{}] + [{"domain": d} for d in DOMAINS] + [{"phase": p} for p in status.PHASES]
                   + [{"q": q} for q in ("user0001", "_x%", "old.", "beta", "zzz")]
                   + [{"domain": rnd.choice(DOMAINS), "phase": p, "q": "0"} for p in status.PHASES])
        for f in filters:
            expected = python_model(store, c, live, **f)
            doc = database_doc(store, c, live, Query(limit=None, **f))
            assert doc["totals"] == status._totals(expected), (trial, f)
            assert doc["accounts"] == sorted(expected, key=lambda a: a["address"]), (trial, f)
            for d in doc["domains"]:
                assert {k: v for k, v in d.items() if k not in ("name", "cutover")} == \
                    status._totals([a for a in expected if a["domain"] == d["name"]]), (trial, f, d["name"])
    # the random data has every phase and both kinds of source counts, so the comparison means something
    totals = database_doc(store, c, {addresses[1]: {"rate": 2.0}}, Query(limit=0))["totals"]
    assert all(totals["phases"][p] for p in status.PHASES)
    assert totals["rate"] == 2.0 and totals["skipped"] and totals["source_bytes"] and not totals["source_known"]


def test_search_takes_like_characters_literally(small):
    store, addresses = small
    got = statusquery.read(store, Query(q="_x%", limit=None))["rows"]
    assert [r["address"] for r in got] == [a for a in addresses if "_x%" in a] and got
    assert statusquery.read(store, Query(q="r0_", limit=None))["rows"] == []   # "_" is not a wildcard
    assert statusquery.read(store, Query(q="%", limit=None))["rows"] == [r for r in got if "%" in r["address"]]


def walk(store, query, between=None):
    seen, pages = [], 0
    while True:
        got = statusquery.read(store, query, totals=False)
        seen += [r["address"] for r in got["rows"]]
        pages += 1
        if got["next_cursor"] is None:
            return seen, pages
        if between:
            between(pages)
        query = Query(**{**query.__dict__, "after": statusquery.decode_cursor(got["next_cursor"])})


def test_pages_visit_every_account_once_even_while_accounts_are_added(tmp_path, small):
    store, addresses = small
    seen, pages = walk(store, Query(limit=64))
    assert seen == sorted(addresses) and pages == 11           # 700 = 10 full pages + 60

    added = []

    def add(page):
        for name in (f"aaa{page}", f"user000300x{page}", f"zzz{page}"):   # before, inside and after the cursor
            store.ensure_account(f"{name}@alpha.example", "alpha.example")
            added.append(f"{name}@alpha.example")
    seen, _ = walk(store, Query(limit=50), between=add)
    assert len(seen) == len(set(seen)) and set(addresses) <= set(seen)   # none twice, none of the old ones lost

    only = [a for a in addresses if a.endswith("@gamma.example")]
    assert walk(store, Query(limit=33, domain="gamma.example"))[0] == sorted(only)


def test_fifty_thousand_accounts(tmp_path, make_store):
    """The issue's size: one page, totals of the whole store, and a filtered walk over a domain."""
    store = make_store()
    addresses = fill(store, 50_000, seed=11)
    c = config(tmp_path)
    doc = database_doc(store, c, {}, Query())
    assert len(doc["accounts"]) == statusquery.DEFAULT_LIMIT and doc["next"]
    assert doc["totals"]["accounts"] == 50_000 == sum(d["accounts"] for d in doc["domains"])
    assert doc["accounts"] == sorted(doc["accounts"], key=lambda a: a["address"])
    failed = database_doc(store, c, {}, Query(phase="failed", limit=statusquery.MAX_LIMIT))
    assert failed["totals"]["accounts"] == doc["totals"]["phases"]["failed"]
    assert {a["phase"] for a in failed["accounts"]} == {"failed"}
    seen, _ = walk(store, Query(limit=statusquery.MAX_LIMIT, domain="delta.example"))
    assert seen == sorted(a for a in addresses if a.endswith("@delta.example"))


@pytest.mark.parametrize("params, message", [
    ({"limit": "0"}, "limit: 0 is out of range (1 to 1000)"),
    ({"limit": "1001"}, "limit: 1001 is out of range"),
    ({"limit": "ten"}, "limit: 'ten' is not a whole number"),
    ({"limit": "all"}, "limit: 'all' is not a whole number"),
    ({"phase": "done"}, "phase: 'done' is not one of failed, syncing, waiting, tailing, cutover"),
    ({"cursor": "!!!"}, "cursor: not a cursor this server gave"),
    ({"cursor": statusquery.encode_cursor("x@y")[:-3] + "A"}, "cursor: not a cursor"),
    ({"q": "a\x00b"}, "q: control characters are not allowed"),
    ({"q": "x" * 201}, "q: longer than 200 characters"),
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(QueryError) as e:
        statusquery.parse(params.get)
    assert str(e.value).startswith(message)


def test_parameters():
    cursor = statusquery.encode_cursor("ünï@x.example")
    got = statusquery.parse({"limit": "5", "cursor": cursor, "phase": "FAILED", "q": " Ab ", "domain": "X.example"}.get)
    assert got == Query(domain="x.example", phase="failed", q="ab", limit=5, after="ünï@x.example")
    assert statusquery.parse({}.get) == Query(limit=statusquery.DEFAULT_LIMIT)
    assert statusquery.parse({"limit": "all"}.get, allow_all=True).limit is None
