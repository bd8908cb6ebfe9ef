"""Every store method on both backends (SQLite, PostgreSQL): the same calls give the same answers.

The mixins' SQL is written once; this walks an account through all of it, so a statement PostgreSQL
reads differently (a scalar max(), an integer used as a boolean, a subquery without an alias, a sum
turning into Decimal) fails here rather than in a pass.
"""

from __future__ import annotations

import types

from mailsyncd.store import POP3_PATH, FolderReport, FolderState, Inflight, InflightItem, MapRow, Pop3Row

A, B, D = "alice@example.com", "bob@example.com", "example.com"


def test_an_account_through_every_store_method(make_store):
    s = make_store()
    s.import_accounts([(A, D, "import", "old-alice@example.com", b"\x01sealed"), (B, D, "login", None, None)])
    s.ensure_account(A, D, "login")                                  # the first plan stays
    assert s.account(A)["plan"] == "import" and s.account(A)["source_address"] == "old-alice@example.com"
    s.set_source_address(A, A)
    assert s.account(A)["source_address"] is None and s.revision() == 1
    assert s.secret_password(A) == b"\x01sealed" and s.secret_password(B) is None
    s.put_verifier(B, "$argon2id$v", 5.0)
    s.put_login(B, b"\x02b", "$argon2id$w", 6.0)
    assert s.verifier(B) == ("$argon2id$w", 6.0) and s.secret_password(B) == b"\x02b"
    s.forget_secret_password(B)
    assert s.secret_password(B) is None and s.revision() == 2
    assert [(a["address"], bool(a["has_password"]), bool(a["has_verifier"])) for a in s.accounts(D)] == \
        [(A, True, False), (B, False, True)]

    s.save_folder(A, FolderState("INBOX", "INBOX", "INBOX", 7, 0, 10, 9, None, None))
    s.save_folder(A, FolderState("Sent", "Sent", "Sent", 3, 0, 5, 4, None, 1.5))
    s.set_source_sizes(A, {"INBOX": 9000, "Sent": 4000})
    s.begin_batch(A, "INBOX", Inflight("INBOX", 70, 1, (InflightItem(1, 100, b"\xaa", ("\\Seen",)),)))
    assert s.inflight(A, "INBOX").items[0].fingerprint == b"\xaa"
    rows = [MapRow(u, 70, u, 100 * u, bytes([u]), ("\\Seen",) if u % 2 else ()) for u in range(1, 6)]
    s.commit_batch(A, "INBOX", 7, rows, [(6, 999, "too big")], 6)
    s.commit_batch(A, "INBOX", 7, [], [], 2)                          # a lower mark never moves it back
    assert s.folder(A, "INBOX").last_uid == 6 and s.inflight(A, "INBOX") is None
    assert s.mapped_uids(A, "INBOX", 7, above=2) == {3, 4, 5}
    assert s.map_rows(A, "INBOX", 7, [1, 2])[1] == rows[0]
    assert s.count_mapped(A, "INBOX", 7) == 5 and s.count_mapped_into(A, "INBOX") == 5
    assert s.count_skipped(A, "INBOX", 7) == 1 and s.skipped(A) == [("INBOX", 6, 999, "too big")]
    assert s.count_known(A, "INBOX", 7, 6) == 6 and s.count_known(A, "INBOX", 7, 4) == 4   # mapped or skipped
    assert s.sources_into(A, "INBOX") == [("INBOX", 7)] and s.sources_into(A, "Nowhere") == []
    s.record_altered(A, "INBOX", 7, [(2, 200, "8-bit header changed")])
    assert s.altered(A) == [("INBOX", 2, 200, "8-bit header changed")] and s.count_altered(A, "INBOX", 7) == 1
    s.update_flags(A, "INBOX", 7, {2: ("\\Flagged",)})
    assert s.map_rows(A, "INBOX", 7)[2].flags == ("\\Flagged",)
    s.begin_deletions(A, "INBOX", 7, {5: 5})
    assert s.pending_deletions(A, "INBOX", 7) == {5: 5}
    s.commit_deletions(A, "INBOX", 7, [5])
    assert s.pending_deletions(A, "INBOX", 7) == {} and s.count_mapped(A, "INBOX", 7) == 4
    s.replace_uidvalidity(A, "INBOX", 7, 8, {1: rows[0]})
    assert s.count_mapped(A, "INBOX", 8) == 1 and s.count_mapped(A, "INBOX", 7) == 0
    s.set_mapping_changes(A, {"Sent": "Sent Items"})
    assert s.mapping_changes(A) == [("Sent", "Sent", "Sent Items")]
    s.apply_remap(A, "Sent", 3, "Sent Items", {})
    assert s.mapping_changes(A) == [] and s.folders(A)["Sent"].target_name == "Sent Items"
    s.set_skipped_folders(A, [types.SimpleNamespace(path="Bad\x7f", reason="unsafe name"),
                              types.SimpleNamespace(path="a", reason="not a mailbox")])
    assert s.skipped_folders(A) == [("Bad\x7f", "unsafe name")]

    got = s.pop3_commit_batch(B, "INBOX", [Pop3Row("u1", 10, b"f1", 1, 1), Pop3Row("u2", 20, b"f2", skipped="no")])
    assert [r.id for r in got] == [1, 2]
    assert s.pop3_commit_batch(B, "INBOX", [Pop3Row("u1", 10, b"f1", 1, 1)]) == []     # already recorded
    s.pop3_commit_batch(B, "INBOX", [], claims={1: "u1-new"})
    assert [r.uidl for r in s.pop3_rows(B, "INBOX")] == ["u1-new", "u2"] and s.skipped(B)[0][0] == POP3_PATH
    assert s.account_counts(B) == (1, 10, 1) and s.account_counts(A) == (1, 100, 0)   # skips went with uidvalidity 7

    p1 = s.start_pass(A)
    s.finish_pass(p1, ok=True, copied=5, present=0, skipped=1, nbytes=1500, error=None)
    p2 = s.start_pass(A)
    assert p2 == p1 + 1
    s.finish_pass(p2, ok=False, copied=0, present=5, skipped=0, nbytes=0, error="boom", deleted=1)
    assert s.last_pass(A)["error"] == "boom" and [p["ok"] for p in s.passes(A)] == [0, 1]
    rep = FolderReport("INBOX", "INBOX", 9, 9, 5, 0, 1, 1500, 0.5, None, 10.0, altered=1)
    s.save_report(A, rep)
    s.save_report(A, rep)
    assert s.reports(A) == [rep]
    s.set_phase(A, "failed", "boom")
    s.retry_account(A)
    assert s.account(A)["phase"] == "synced"                        # a pass was ok once
    assert s.phase_counts(D) == {"synced": 1, "new": 1}
    prog = {r["address"]: r for r in s.progress_rows(D)}
    assert (prog[A]["source_messages"], prog[A]["source_bytes"], prog[A]["target_messages"], prog[A]["bytes"],
            prog[A]["last_pass_ok"], prog[A]["source_known"]) == (13, 13000, 1, 100, False, True)
    assert type(prog[A]["source_bytes"]) is int and type(prog[A]["bytes"]) is int
    assert s.notice_sent(A) is None
    s.mark_notice_sent(A)
    assert s.notice_sent(A) > 0

    s.remember_network(A, "192.0.2.0/24", now=100.0)
    assert s.is_known_network(A, "192.0.2.0/24", now=101.0)
    assert not s.is_known_network(A, "192.0.2.0/24", now=100.0 + 31 * 86400)

    s.set_cutover(D, 50.0, "scheduled", "n")
    assert s.begin_cutover(D, 50.0, "go", now=60.0) is None and s.cutover(D)["state"] == "final_pass"
    assert s.close_cutover(D, "done") == 2 and s.cancel_cutover(D, "late")["state"] == "done"
    assert list(s.cutovers()) == [D]
    s.clear_cutover(D)
    assert s.cutover(D) is None

    assert s.remove_account(A) and not s.remove_account(A)
    assert s.folders(A) == {} and s.secret_password(A) is None and s.reports(A) == [] and s.passes(A) == []
    assert [a["address"] for a in s.accounts()] == [B]
