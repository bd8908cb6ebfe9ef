"""Many accounts fast: a state store filled by bulk INSERTs (not by N imports), for the status-at-scale
tests and bench/status_scale.py.

Random but reproducible (``seed``): every stored phase, with and without a password, folders counted or
not, IMAP and POP3 UID-map rows, skipped messages, reports, passes -- the inputs of every progress number.
Portable SQL with explicit column lists, one transaction per table.
"""

from __future__ import annotations

import random

DOMAINS = ("alpha.example", "beta.example", "gamma.example", "delta.example", "eps.example")


def fill(store, n: int, *, seed: int = 1, domains: tuple[str, ...] = DOMAINS, messages: int = 4,
         sealed: bool = True) -> list[str]:
    """Add ``n`` accounts to ``store``; returns their addresses.  ``messages``: at most this many UID-map
    rows per folder of an account that has been synced (keeps the fixture quick at 50,000 accounts).
    ``sealed=False``: verifiers but no stored passwords, so that a daemon on this store starts no pass
    (bench/status_scale.py)."""
    rnd = random.Random(seed)
    now = 1_800_000_000.0
    accounts, secrets, folders, msgs, pop3, skipped, reports, passes = ([] for _ in range(8))
    addresses = []
    for i in range(n):
        domain = domains[i % len(domains)]
        # a name with LIKE's special characters now and then: the search must escape them
        name = f"user{i:06d}" + ("_x%" if i % 997 == 0 else "")
        address = f"{name}@{domain}"
        addresses.append(address)
        phase = rnd.choices(("new", "synced", "failed", "cutover"), (60, 25, 10, 5))[0]
        has_pw = phase != "new" or rnd.random() < 0.3
        accounts.append((address, domain, phase, "refused: quota" if phase == "failed" else None, now, now,
                         rnd.choice(("import", "login", "self_service")),
                         f"old.{address}" if i % 50 == 0 else None))
        if has_pw:
            secrets.append((address, b"sealed", None, now) if sealed else (address, None, "verifier", now))
        if phase == "new" and rnd.random() < 0.7:
            continue                                   # never counted: source unknown
        pop = rnd.random() < 0.1
        if pop:
            count = rnd.randint(0, messages)
            reports.append((address, "INBOX (pop3)", "INBOX", count + 2, count, count, 0, 0, 100 * count, 1.0,
                            None, now))
            for k in range(count):
                pop3.append((address, k + 1, f"u{k}", 100, b"f", "INBOX", None if k % 5 else "too big", now))
        else:
            for path in ("INBOX", "Sent"):
                count = rnd.randint(0, messages)
                total = count + rnd.randint(0, 3)
                # not counted yet (NULL), or counted; its report (a pass's) may say otherwise
                folders.append((address, path, path, path, 1, count, total + 1, rnd.choice((None, total, total)),
                                rnd.choice((None, 1000 * total))))
                if rnd.random() < 0.5:
                    reports.append((address, path, path, total + rnd.randint(0, 2), count, count, 0, 0, 1000,
                                    1.0, None, now))
                for uid in range(1, count + 1):
                    msgs.append((address, path, 1, uid, 1, uid, 1000 + uid, b"f", ""))
                if total > count and rnd.random() < 0.2:
                    skipped.append((address, path, 1, count + 1, 5_000_000, "too big", now))
        if phase != "new":
            ok = phase == "synced"
            passes.append((address, now - 600, now - 500, 1 if ok else 0, 1, 0, 0, 10, None if ok else "refused"))
            if rnd.random() < 0.3:
                passes.append((address, now - 100, None, None, None, None, None, None, None))
    with store._tx() as c:
        c.executemany("INSERT INTO accounts (address, domain, phase, last_error, created, updated, plan, "
                      "source_address) VALUES (?,?,?,?,?,?,?,?)", accounts)
        c.executemany("INSERT INTO secrets (address, password, verifier, updated) VALUES (?,?,?,?)", secrets)
        c.executemany("INSERT INTO folders (account, path, source_name, target_name, uidvalidity, last_uid, "
                      "uidnext, messages, size) VALUES (?,?,?,?,?,?,?,?,?)", folders)
        c.executemany("INSERT INTO messages (account, path, uidvalidity, uid, target_uidvalidity, target_uid, "
                      "size, fingerprint, flags) VALUES (?,?,?,?,?,?,?,?,?)", msgs)
        c.executemany("INSERT INTO pop3_messages (account, id, uidl, size, fingerprint, target_name, skipped, at) "
                      "VALUES (?,?,?,?,?,?,?,?)", pop3)
        c.executemany("INSERT INTO skipped (account, path, uidvalidity, uid, size, reason, at) "
                      "VALUES (?,?,?,?,?,?,?)", skipped)
        c.executemany("INSERT INTO reports (account, path, target_name, source_count, target_count, copied, "
                      "present, skipped, bytes, seconds, error, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                      reports)
        c.executemany("INSERT INTO passes (account, started, finished, ok, copied, present, skipped, bytes, error) "
                      "VALUES (?,?,?,?,?,?,?,?,?)", passes)
    return addresses
