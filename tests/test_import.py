"""CSV import (plans 1 and 2): parsing and checking, the all-or-nothing write, and end to end."""

from __future__ import annotations

import imaplib
import os
import time

import pytest

from conftest import MASTER, DovecotPair, UserCreds
from mailsyncd.config import parse_config
from mailsyncd.importer import ImportError_, parse
from proxyenv import Daemon
from secretscan import assert_no_secrets
from seed import Msg, make_message, seed, snapshot
from syncenv import ctl, make_config, on_backend

SECRET = "Pw-秘密-\"quoted\",x"


def config(tmp_path, **domain):
    doc = {"domains": {"example.com": {"source": {"host": "127.0.0.1", "security": "none"},
                                       "target": {"host": "127.0.0.1", "security": "none"}, **domain},
                       "example.org": {"source": {"host": "127.0.0.1", "security": "none"},
                                       "target": {"host": "127.0.0.1", "security": "none"}}},
           "state_dir": str(tmp_path / "state")}
    return parse_config(doc, path=str(tmp_path / "c.yaml"))


# -- parsing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding,delim,header", [
    ("utf-8", ",", "target,source,password"),
    ("utf-8-sig", ";", "搬家账号;待搬家账号;待搬家账号密码"),
    ("gb18030", "\t", "搬家账号\t待搬家账号\t待搬家账号密码"),
    ("gbk", ",", "Target,Source,Password"),
])
def test_encodings_delimiters_and_headers(tmp_path, encoding, delim, header):
    text = "\r\n".join([header, delim.join(["张三@example.com", "zhangsan@old.example.com", "密码1"]),
                        delim.join(["bob@example.org", "bob@old.example.org", ""]), ""])
    p = parse(text.encode(encoding), config(tmp_path))
    assert p.errors == []
    assert [(r.target, r.source, r.password, r.plan) for r in p.rows] == [
        ("张三@example.com", "zhangsan@old.example.com", "密码1", "import"),
        ("bob@example.org", "bob@old.example.org", None, "login")]
    assert p.delimiter == delim and p.language == ("zh" if "搬家" in header else "en")


def test_a_quoted_password_keeps_commas_and_quotes(tmp_path):
    data = 'target,source,password\na@example.com,a@old.net,"Pw-秘密-""quoted"",x"\n'.encode()
    (row,) = parse(data, config(tmp_path)).rows
    assert row.password == SECRET
    assert SECRET not in repr(row)


def test_mixed_encodings_are_refused(tmp_path):
    data = "target,source\n张三@example.com,a@old.net\n".encode() + "李四@example.com,b@old.net\n".encode("gbk")
    with pytest.raises(ImportError_, match=r"mixes encodings: lines 2 are UTF-8 but lines 3 are not"):
        parse(data, config(tmp_path))


def test_missing_required_column_is_named(tmp_path):
    with pytest.raises(ImportError_, match=r"line 1: missing required column source \(待搬家账号\)"):
        parse(b"target,password\na@example.com,x\n", config(tmp_path))


def test_every_bad_row_is_named_with_its_column(tmp_path):
    cfg = config(tmp_path, plans=["login"])
    data = "\n".join([
        "target,source,password",
        "not-an-address,a@old.net,x",                # 2
        "a@unknown.org,a@old.net,",                  # 3
        "ok@example.org,ok@old.net,pw",              # 4
        "ok@example.org,ok@old.net,pw",              # 5 duplicate
        "ok@example.org,other@old.net,pw",           # 6 merge
        "c@example.com,c@old.net,has-a-password",    # 7 plan import not allowed
        "d@example.org,,pw",                         # 8 empty source
        ""]).encode()
    p = parse(data, cfg)
    assert p.errors == [
        "row 2, column target: 'not-an-address' is not an email address",
        "row 3, column target: domain 'unknown.org' is not in the config (known: example.com, example.org)",
        "row 5: duplicate of row 4 (target ok@example.org)",
        "row 6, column target: ok@example.org is also the target of row 4 (source ok@old.net); merging two "
        "old mailboxes into one needs --allow-merge",
        "row 7: has a password, but example.com does not allow plan 'import' (plans: login)",
        "row 8, column source: empty",
    ]
    assert "has-a-password" not in "\n".join(p.errors)
    p = parse(b"target,source,password\na@example.org,a@old.net,pass,word\n", cfg)
    assert p.errors == ["row 2: 4 fields but the header has 3; a cell that contains a comma must be quoted"]
    assert [e for e in parse(data, cfg, domain="example.com").errors if "not in --domain" in e]


# -- the command -------------------------------------------------------------------------------------

def _cfg_file(tmp_path, pair=None) -> str:
    if pair is None:
        p = tmp_path / "mailsyncd.yaml"
        p.write_text("state_dir: ./state\ndomains:\n  example.com:\n    source: {host: 127.0.0.1, security: none}\n"
                     "    target: {host: 127.0.0.1, security: none}\n")
        return str(p)
    return make_config(tmp_path, pair)


def _dump(store) -> list:
    rows = store._conn().execute("SELECT a.address, a.plan, a.source_address, s.password FROM accounts a "
                                 "LEFT JOIN secrets s USING (address) ORDER BY a.address").fetchall()
    return [(a, plan, src, None if pw is None else bytes(pw)) for a, plan, src, pw in rows]


def test_fifty_thousand_rows_all_or_nothing_idempotent_and_secret(tmp_path, make_store, store_backend, request):
    """On both backends: the import is one transaction of the store's."""
    cfg = on_backend(_cfg_file(tmp_path), request, store_backend)
    store = make_store(str(tmp_path / "state"))
    secret = "Pw-秘密-x"
    rows = [f"u{i}@example.com,u{i}@old.example.com,{secret}{i}" for i in range(50_000)]
    bad = list(rows)
    bad[31_337] = "u31337@example.com,not an address,pw"
    (tmp_path / "bad.csv").write_text("target,source,password\n" + "\n".join(bad) + "\n")
    r = ctl("--config", cfg, "import", str(tmp_path / "bad.csv"))
    assert r.returncode == 1
    assert "1 problem in 50000 rows; nothing imported" in r.stderr
    assert "row 31339, column source: 'not an address' is not an email address" in r.stderr
    assert _dump(store) == []

    good = tmp_path / "good.csv"
    good.write_text("target,source,password\n" + "\n".join(rows) + "\n")
    t0 = time.monotonic()
    r = ctl("--config", cfg, "import", str(good))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("imported 50000 accounts (50000 with a password: plan import; 0 without")
    print(f"50,000-row import: {took:.1f}s wall for the whole mailsyncctl process")
    first = _dump(store)
    assert len(first) == 50_000 and first[0][1] == "import" and first[0][2] == "u0@old.example.com"

    r = ctl("--config", cfg, "import", str(good))          # the same file again changes nothing
    assert r.returncode == 0 and "50000 unchanged" in r.stdout, r.stdout
    assert _dump(store) == first

    rows[7] = f"u7@example.com,u7@old.example.com,{secret}-new"
    good.write_text("target,source,password\n" + "\n".join(rows) + "\n")
    r = ctl("--config", cfg, "import", str(good), "--dry-run")
    assert r.returncode == 0 and "1 password replaced" in r.stdout and "nothing changed" in r.stdout
    assert _dump(store) == first
    r = ctl("--config", cfg, "import", str(good))
    assert r.returncode == 0 and "1 password replaced, 49999 unchanged" in r.stdout, r.stdout
    after = _dump(store)
    assert [a for a, b in zip(after, first) if a != b] == [after[_index(after, "u7@example.com")]]

    assert not any(secret.encode() in (pw or b"") for _, _, _, pw in after)     # sealed, on either backend
    if store_backend == "sqlite":
        assert_no_secrets(tmp_path / "state", [secret], must_scan=("mailsyncd.sqlite3",),
                          encodings=("utf-8", "utf-16-le"))
    assert secret not in r.stdout + r.stderr


def _index(rows, address):
    return next(i for i, r in enumerate(rows) if r[0] == address)


def test_verify_lists_the_rows_that_fail_and_imports_nothing(tmp_path, dovecot_pair):
    cfg = make_config(tmp_path, dovecot_pair)
    csv = tmp_path / "accounts.csv"
    csv.write_text("target,source,password\n"
                   f"alice@example.com,alice@example.com,{dovecot_pair.users['alice@example.com'].old_password}\n"
                   "bob@example.com,bob@example.com,wrong-one\n")
    r = ctl("--config", cfg, "import", str(csv), "--verify")
    assert r.returncode == 1
    assert "1 of 2 logins failed at the old server; nothing imported" in r.stderr
    assert "row 3 (bob@example.com): wrong password: " in r.stderr
    assert "wrong-one" not in r.stderr
    csv.write_text(csv.read_text().replace("wrong-one", dovecot_pair.users["bob@example.com"].old_password))
    r = ctl("--config", cfg, "import", str(csv), "--verify")
    assert r.returncode == 0 and "imported 2 accounts" in r.stdout, r.stderr


# -- end to end ------------------------------------------------------------------------------------------

def test_plan_import_end_to_end_with_a_renamed_account(make_dovecot, tmp_path):
    src = make_dovecot("source", {"old.alice@example.com": "a-old", "bob@example.com": "b-old"})
    tgt = make_dovecot("target", {"alice@example.com": "x", "bob@example.com": "y"}, master=MASTER)
    pair = DovecotPair(src, tgt, {"alice@example.com": UserCreds("a-old", "x")})
    seed("127.0.0.1", src.imap_port, "old.alice@example.com", "a-old",
         {"INBOX": [Msg(make_message(i)) for i in range(30)], "Projects/2024": [Msg(make_message(99))]})
    seed("127.0.0.1", src.imap_port, "bob@example.com", "b-old", {"INBOX": [Msg(make_message(200))]})
    with Daemon(tmp_path, pair, scheduler={"pass_interval": 1}) as d:
        csv = tmp_path / "accounts.csv"
        csv.write_text("搬家账号,待搬家账号,待搬家账号密码\nalice@example.com,old.alice@example.com,a-old\n"
                       "bob@example.com,bob@example.com,b-old\n", encoding="gb18030")
        r = ctl("--config", d.config_path, "import", str(csv))
        assert r.returncode == 0, r.stderr
        for u in ("alice@example.com", "bob@example.com"):      # no login needed: the daemon picks them up
            d.wait_log(f"event=pass_done account={u} ok=True", 60)
    assert snapshot("127.0.0.1", src.imap_port, "old.alice@example.com", "a-old") == \
        snapshot("127.0.0.1", tgt.imap_port, f"alice@example.com*{MASTER[0]}", MASTER[1])
    assert snapshot("127.0.0.1", src.imap_port, "bob@example.com", "b-old") == \
        snapshot("127.0.0.1", tgt.imap_port, f"bob@example.com*{MASTER[0]}", MASTER[1])


def test_plan_login_end_to_end_waits_for_the_first_login(tmp_path, dovecot_pair):
    A = "alice@example.com"
    seed(*dovecot_pair.source_account(A), {"INBOX": [Msg(make_message(i)) for i in range(12)]})
    with Daemon(tmp_path, dovecot_pair, scheduler={"pass_interval": 1}) as d:
        csv = tmp_path / "accounts.csv"
        csv.write_text(f"target;source\n{A};{A}\n")
        r = ctl("--config", d.config_path, "import", str(csv))
        assert r.returncode == 0 and "0 with a password: plan import; 1 without" in r.stdout, r.stdout
        doc = d.status_after(writes=2)
        assert sum(doc["phases"].values()) == 1, doc          # the daemon has read the import by now ...
        assert (doc["scheduler"]["scheduled"], doc["scheduler"]["running"]) == (0, 0), doc
        assert "event=pass_start" not in d.log()              # ... and has nothing to sync with: no password yet
        import json
        doc = json.loads(ctl("--config", d.config_path, "status", "--json", "--user", A).stdout)
        assert [a["phase"] for a in doc["accounts"]] == ["waiting"]
        assert "1 waiting" in ctl("--config", d.config_path, "status").stdout
        c = imaplib.IMAP4("127.0.0.1", d.imap_port)
        c.login(A, dovecot_pair.users[A].old_password)
        c.logout()
        d.wait_log(f"event=pass_done account={A} ok=True", 60)
        doc = json.loads(ctl("--config", d.config_path, "status", "--json").stdout)
        (acct,) = doc["accounts"]
        assert (acct["phase"], acct["source_messages"], acct["target_messages"], acct["percent"]) == \
            ("tailing", 12, 12, 100.0)
    assert snapshot(*dovecot_pair.source_account(A)) == snapshot(*dovecot_pair.target_account(A))
    from mailsyncd.store import Store
    store = Store(str(tmp_path / "state" / "mailsyncd.sqlite3"))
    assert store.account(A)["plan"] == "login"
    store.close()


@pytest.mark.parametrize("store_backend", ["postgresql"])      # the counter is PostgreSQL's (round trips)
def test_an_import_and_its_comparison_cost_a_few_round_trips_not_some_a_row(make_store, tmp_path):
    """A statement a row made a 50,000-row import take 70 s on PostgreSQL (5 s on SQLite), and a re-import's
    comparison read each stored password by itself: both are a few pipelined statements now."""
    from mailsyncd.vault import Vault
    store = make_store()
    vault = Vault(store, os.urandom(32))
    rows = [(f"u{i}@example.com", "example.com", "import", f"u{i}@old.example.com",
             vault.seal(f"u{i}@example.com", f"pw{i}") if i % 2 else None) for i in range(2000)]
    before = store.statements[0]
    store.import_accounts(rows)
    assert store.statements[0] - before <= 10
    assert len(store.accounts()) == 2000 and vault.source_password("u7@example.com") == "pw7"
    before = store.statements[0]
    stored = vault.source_passwords()
    assert store.statements[0] - before <= 2
    assert stored == {f"u{i}@example.com": f"pw{i}" for i in range(1, 2000, 2)}
