"""mailsyncctl preflight against the real Dovecot pair: what it counts matches the source, a refused
password is named, messages over the limit are found, and neither server changes."""

from __future__ import annotations

import csv
import io
import json

import pytest
from seed import Msg, connect, make_message, seed
from syncenv import ctl, make_config

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(180)]

A, B = "alice@example.com", "bob@example.com"
LIMIT = 64 * 1024


@pytest.fixture
def env(tmp_path, dovecot_pair):
    s = dovecot_pair.source
    seed("127.0.0.1", s.imap_port, A, "alice-old-pw", {
        "INBOX": [Msg(make_message(i, size=2000 + 100 * i)) for i in range(5)] + [Msg(make_message(9, size=LIMIT + 5000))],
        "Archive/2023": [Msg(make_message(20 + i, size=3000)) for i in range(3)],
    })
    cfg = make_config(tmp_path, dovecot_pair, sync={"max_message_size": "64KiB"})
    return cfg, dovecot_pair


def snapshot(server, user, password):
    """Every folder with its STATUS and every message's flags and size: what a read-only visitor leaves alone."""
    with connect("127.0.0.1", server.imap_port, user, password) as c:
        out = {}
        for flags, _, name in c.list_folders():
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                out[name] = flags
                continue
            st = c.folder_status(name, ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN"])
            c.select_folder(name, readonly=True)
            msgs = c.fetch(c.search("ALL"), ["FLAGS", "RFC822.SIZE"]) if st[b"MESSAGES"] else {}
            out[name] = (st, {u: (d[b"FLAGS"], d[b"RFC822.SIZE"]) for u, d in msgs.items()})
        return out


def accounts_csv(tmp_path, rows) -> str:
    p = tmp_path / "accounts.csv"
    p.write_text("target,source,password\n" + "".join(f"{a},{a},{pw}\n" for a, pw in rows))
    return str(p)


def test_preflight_counts_what_the_source_holds_and_changes_nothing(tmp_path, env):
    cfg, pair = env
    before_src = snapshot(pair.source, A, "alice-old-pw")
    before_tgt = snapshot(pair.target, A, "alice-new-pw")
    sizes = {name: sum(s for _, s in v[1].values()) for name, v in before_src.items() if isinstance(v[1], dict)}
    r = ctl("preflight", accounts_csv(tmp_path, [(A, "alice-old-pw"), (B, "not-bobs-pw")]), "--json", "-c", cfg)
    assert r.returncode == 1, r.stdout + r.stderr          # bob's login is refused
    assert "alice-old-pw" not in r.stdout + r.stderr and "not-bobs-pw" not in r.stdout + r.stderr
    doc = json.loads(r.stdout)
    alice, bob = doc["accounts"]
    assert bob["address"] == B and bob["source_login"].startswith("refused: source 127.0.0.1:"), bob
    assert "AUTHENTICATIONFAILED" in bob["source_login"] or "failed" in bob["source_login"].lower(), bob
    assert alice["source_login"] == "ok" and alice["target_login"] == "ok", alice
    got = {f["path"]: (f["messages"], f["bytes"], f["too_large"]) for f in alice["folders"]}
    assert got == {"INBOX": (6, sizes["INBOX"], 1), "Archive/2023": (3, sizes["Archive/2023"], 0)}, (got, sizes)
    assert alice["limit"] == LIMIT and alice["too_large"] == 1
    assert doc["total"] == {"accounts": 2, "messages": 9, "bytes": sum(sizes.values()), "too_large": 1}
    assert doc["estimate"]["measured"] is False and doc["estimate"]["bytes_per_second"] == 2 * 1024 * 1024
    assert "preflight: 2/2" in r.stderr                     # progress on stderr
    assert snapshot(pair.source, A, "alice-old-pw") == before_src    # no \Seen, no folder, nothing
    assert snapshot(pair.target, A, "alice-new-pw") == before_tgt    # no folder created on the target


def test_preflight_table_and_csv_and_exit_3_for_messages_too_large(tmp_path, env):
    cfg, _pair = env
    accounts = accounts_csv(tmp_path, [(A, "alice-old-pw")])
    r = ctl("preflight", accounts, "-c", cfg)
    assert r.returncode == 3, r.stdout + r.stderr           # all log in; one message would be skipped
    assert f"{A}: source login ok" in r.stdout
    assert "Archive/2023" in r.stdout and "1 over 64.0 KiB" in r.stdout, r.stdout
    assert "estimated first copy:" in r.stdout and "no copy measured yet" in r.stdout, r.stdout
    r = ctl("preflight", accounts, "--csv", "-c", cfg)
    assert r.returncode == 3, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {(x["folder"], x["messages"], x["too_large"]) for x in rows} == {("INBOX", "6", "1"), ("Archive/2023", "3", "0")}


def test_preflight_uses_the_stored_passwords_without_a_csv(tmp_path, env):
    cfg, _pair = env
    r = ctl("import", accounts_csv(tmp_path, [(A, "alice-old-pw"), (B, "")]), "-c", cfg)
    assert r.returncode == 0, r.stderr
    r = ctl("preflight", "--json", "-c", cfg)
    doc = json.loads(r.stdout)
    by = {a["address"]: a for a in doc["accounts"]}
    assert by[A]["source_login"] == "ok" and by[A]["messages"] == 9, by[A]
    assert by[B]["source_login"].startswith("no password"), by[B]
    assert r.returncode == 1


def test_the_estimate_uses_the_measured_rate_and_never_beats_the_largest_account(make_store, monkeypatch):
    """On both backends: the rate is the store's query over the passes."""
    from mailsyncd import preflight
    store = make_store()
    clock = iter([100.0, 110.0, 200.0, 200.5])        # a 10 s pass of 20 MiB; a 0.5 s pass of 10 bytes
    monkeypatch.setattr("mailsyncd.store.reports.time.time", lambda: next(clock))
    assert store.copy_rate() is None
    for nbytes in (20 << 20, 10):
        p = store.start_pass(A)
        store.finish_pass(p, ok=True, copied=1, present=1, skipped=0, nbytes=nbytes, error=None)
    measured = store.copy_rate()
    assert measured == (20 << 20, 10.0)               # the small pass measures round trips: left out
    est = preflight.estimate(100 << 20, 10 << 20, measured=measured, parallel=4)
    assert est.measured and est.bytes_per_second == 2 << 20 and est.seconds == pytest.approx(12.5)
    est = preflight.estimate(100 << 20, 90 << 20, measured=measured, parallel=4)
    assert est.seconds == pytest.approx(45.0)           # one big account alone takes that long
    est = preflight.estimate(100 << 20, 1, measured=None, parallel=1)
    assert not est.measured and est.seconds == pytest.approx(50.0)


def test_preflight_keeps_within_the_source_hosts_connection_budget(tmp_path, monkeypatch, capsys):
    """In-process, the checks replaced by a recorder: never more at once than source.max_connections,
    and as many as --connections when the source allows them (so the limit is real, not a serial loop)."""
    import threading
    from argparse import Namespace

    import yaml

    from mailsyncd import preflight
    from mailsyncd.cli.preflight import cmd_preflight
    from mailsyncd.config import load_config

    def run(max_connections: int, connections: int, n: int) -> int:
        doc = {"state_dir": str(tmp_path / "state"), "domains": {"example.com": {
            "source": {"host": "127.0.0.1", "port": 1, "security": "none", "max_connections": max_connections},
            "target": {"host": "127.0.0.1", "port": 2, "security": "none"}}}}
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump(doc))
        lock, state = threading.Lock(), {"now": 0, "most": 0}
        everyone = threading.Barrier(min(n, max_connections, connections), timeout=10)

        def fake(domain, address, password, *, source_address=None):
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            try:
                everyone.wait()        # as many as allowed meet here; one more would wait for nobody
            except threading.BrokenBarrierError:
                pass
            with lock:
                state["now"] -= 1
            return preflight.AccountCheck(address, source_login="ok", target_login="ok")
        monkeypatch.setattr(preflight, "check_account", fake)
        rows = [(f"u{i}@example.com", "pw") for i in range(n)]
        args = Namespace(csv=accounts_csv(tmp_path, rows), domain=None, connections=connections, as_csv=False,
                         json=True)
        assert cmd_preflight(load_config(str(path)), args) == 0
        capsys.readouterr()
        return state["most"]

    assert run(max_connections=2, connections=8, n=6) == 2
    assert run(max_connections=8, connections=3, n=6) == 3
    assert run(max_connections=1, connections=4, n=3) == 1


def test_appendlimit_is_read_from_the_capability_list_only_when_it_is_a_number():
    from mailsyncd.imap.caps import appendlimit
    assert appendlimit([b"IMAP4rev1", b"APPENDLIMIT=35882577"]) == 35882577
    assert appendlimit(["imap4rev1", "appendlimit=10"]) == 10
    assert appendlimit([b"APPENDLIMIT"]) is None                 # per mailbox (RFC 7889 2.1): not a server limit
    assert appendlimit([b"APPENDLIMIT=-1", b"APPENDLIMIT=1e9", b"APPENDLIMIT=\xff"]) is None
