"""The store methods added for several nodes (throttle rows, web sessions, the first-login record, the paged
status queries, the folders a client's mailbox maps to) on both backends: the SQL is written once, and a
statement PostgreSQL reads differently fails here rather than at a login."""

from __future__ import annotations

from mailsyncd.store import FolderState

D = "example.com"


def test_throttle_rows_update_and_trim(make_store):
    s = make_store()
    keys = [("network", "10.0.0.0/24"), ("user", "a@example.com")]

    def spend(rows):
        assert set(rows) == set(keys) and all(r == (None, 0) for r in rows.values())   # new rows: full
        return "spent", {keys[0]: (4.0, 100.0), keys[1]: None}

    assert s.throttle_update(keys, spend) == "spent"
    seen = {}
    s.throttle_update(keys, lambda rows: (seen.update(rows), {})[1:] and (None, {}))
    assert seen[keys[0]] == (4.0, 100.0)
    assert s.throttle_rows() == 2              # the deleted one came back as a lockable (full) row
    assert s.throttle_trim("network", 5.0, 10.0, 105.0) == 0      # 100 + (5 - 4) * 10 = 110 > 105
    assert s.throttle_trim("network", 5.0, 10.0, 110.0) == 1
    assert s.throttle_trim("user", 5.0, 10.0, 0.0) == 1           # level NULL: full, trimmed


def test_web_sessions_create_get_flash_limit(make_store):
    s = make_store()
    s.session_create("self", "h1", "a@example.com", "c1", 100.0, idle=60, max_age=600, limit=2)
    s.session_flash("self", "h1", "ok", "saved")
    got = s.session_get("self", "h1", 110.0, 60, 600, touch=True, take_flash=True)
    assert (got["who"], got["csrf"], got["flash_kind"], got["flash_text"], got["seen"]) == \
        ("a@example.com", "c1", "ok", "saved", 110.0)
    assert s.session_get("self", "h1", 111.0, 60, 600, touch=False, take_flash=True)["flash_kind"] is None
    assert s.session_get("admin", "h1", 111.0, 60, 600, touch=False, take_flash=False) is None   # other site
    s.session_create("self", "h2", "b@example.com", "c2", 120.0, idle=60, max_age=600, limit=2)
    s.session_create("self", "h3", "c@example.com", "c3", 130.0, idle=60, max_age=600, limit=2)
    assert s.session_count("self") == 2          # h1, seen last at 110, went first
    assert s.session_get("self", "h1", 131.0, 60, 600, touch=False, take_flash=False) is None
    assert s.session_get("self", "h3", 500.0, 60, 600, touch=False, take_flash=False) is None       # idle
    s.session_drop("self", "h2")
    assert s.session_count("self") == 0
    assert s.web_key("csrf") == s.web_key("csrf") and len(s.web_key("csrf")) == 32


def test_first_login_is_recorded_once(make_store):
    s = make_store()
    assert s.record_login("a@example.com", D, "login", None, b"\x01", "$argon2id$v", 1.0) is True
    assert s.record_login("a@example.com", D, "self", None, b"\x02", "$argon2id$w", 2.0) is False
    assert s.account("a@example.com")["plan"] == "login" and s.secret_password("a@example.com") == b"\x02"


def test_status_pages_totals_and_folders_into(make_store):
    s = make_store()
    rows = [(f"u{i:03d}@{d}", d, "import", None, b"\x01" if i % 2 else None)
            for d in ("a.example", "b.example") for i in range(30)]
    s.import_accounts(rows)
    s.set_phase("u001@a.example", "failed", "boom")
    page = s.progress_page(limit=7, domain="a.example")
    assert [r["address"] for r in page] == [f"u{i:03d}@a.example" for i in range(7)]
    after = s.progress_page(limit=100, after=page[-1]["address"], domain="a.example")
    assert len(page) + len(after) == 30
    like = s.progress_page(limit=None, like="%u00_@b%")
    assert [r["address"] for r in like] == [f"u{i:03d}@b.example" for i in range(10)]
    totals = s.progress_totals(running=["u003@b.example"])
    assert sum(t["accounts"] for t in totals) == 60
    run = [t for t in totals if t["running"]]
    assert [(t["domain"], t["accounts"]) for t in run] == [("b.example", 1)]
    assert {(t["domain"], t["stored"], t["accounts"]) for t in totals if t["stored"] == "failed"} == \
        {("a.example", "failed", 1)}
    assert s.running_domains(["u003@b.example", "nobody@x"]) == {"u003@b.example": "b.example"}
    assert s.account_domains() == ["a.example", "b.example"]
    s.save_folder("u001@a.example", FolderState("Sent", "Sent", "Sent", 3, 0, 5, 4, None, None))
    assert s.folders_into("u001@a.example", "Sent") == [("Sent", 4)]    # 4 messages, none copied yet
    assert s.folders_into("u001@a.example", "Drafts") == []
