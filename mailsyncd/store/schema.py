"""The schema: one forward migration a version, applied in one transaction by StoreBase._migrate.

A version is its portable SQL (_MIGRATIONS) and the row triggers it adds (_TRIGGERS: the body as portable
statements; dialect.triggers writes them as SQLite or PostgreSQL wants them).
"""

SCHEMA_VERSION = 17

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE accounts (
        address       TEXT PRIMARY KEY,
        domain        TEXT NOT NULL,
        phase         TEXT NOT NULL DEFAULT 'new',
        last_error    TEXT,
        created       REAL NOT NULL,
        updated       REAL NOT NULL
    );
    -- one row per source folder, path is the source name with '/' as separator
    CREATE TABLE folders (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        source_name   TEXT NOT NULL,
        target_name   TEXT NOT NULL,
        uidvalidity   INTEGER,
        last_uid      INTEGER NOT NULL DEFAULT 0,
        uidnext       INTEGER,
        messages      INTEGER,
        highestmodseq INTEGER,
        flags_checked REAL,
        PRIMARY KEY (account, path)
    );
    -- the UID map: source message to target message, with the flags last agreed
    CREATE TABLE messages (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        uidvalidity   INTEGER NOT NULL,
        uid           INTEGER NOT NULL,
        target_uidvalidity INTEGER,
        target_uid    INTEGER,
        size          INTEGER NOT NULL,
        fingerprint   BLOB NOT NULL,
        flags         TEXT NOT NULL,
        PRIMARY KEY (account, path, uidvalidity, uid)
    ) WITHOUT ROWID;
    -- a batch being appended: written before APPEND, removed by the commit after it
    CREATE TABLE inflight (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        target_name   TEXT NOT NULL,
        target_uidvalidity INTEGER NOT NULL,
        target_uidnext INTEGER NOT NULL,
        items         TEXT NOT NULL,
        PRIMARY KEY (account, path)
    );
    CREATE TABLE skipped (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        uidvalidity   INTEGER NOT NULL,
        uid           INTEGER NOT NULL,
        size          INTEGER,
        reason        TEXT NOT NULL,
        at            REAL NOT NULL,
        PRIMARY KEY (account, path, uidvalidity, uid)
    );
    CREATE TABLE reports (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        target_name   TEXT NOT NULL,
        source_count  INTEGER,
        target_count  INTEGER,
        copied        INTEGER NOT NULL,
        present       INTEGER NOT NULL,
        skipped       INTEGER NOT NULL,
        bytes         INTEGER NOT NULL,
        seconds       REAL NOT NULL,
        error         TEXT,
        finished      REAL NOT NULL,
        PRIMARY KEY (account, path)
    );
    CREATE TABLE passes (
        id            INTEGER PRIMARY KEY,
        account       TEXT NOT NULL,
        started       REAL NOT NULL,
        finished      REAL,
        ok            INTEGER,
        copied        INTEGER,
        present       INTEGER,
        skipped       INTEGER,
        bytes         INTEGER,
        error         TEXT
    );
    CREATE INDEX passes_account ON passes (account, id);
    """,
    2: """
    -- how the account entered: 'import', 'login' or 'self_service' (NULL: before this was recorded)
    ALTER TABLE accounts ADD COLUMN plan TEXT;
    -- written by the vault only: password is AES-GCM ciphertext, verifier an argon2 hash.
    -- No foreign key: a login may be remembered before the account row exists.
    CREATE TABLE secrets (
        address       TEXT PRIMARY KEY,
        password      BLOB,
        verifier      TEXT,
        verified_at   REAL,
        updated       REAL NOT NULL
    );
    """,
    3: """
    -- per domain, set by `mailsyncctl cutover`: overrides the YAML's cutover time while present.
    -- state: scheduled | cancelled | final_pass | done
    -- (final_pass -> done is the point of no return: see Store.close_cutover)
    CREATE TABLE cutovers (
        domain        TEXT PRIMARY KEY,
        at            REAL,
        state         TEXT NOT NULL,
        note          TEXT,
        updated       REAL NOT NULL
    );
    CREATE INDEX accounts_domain ON accounts (domain);
    """,
    4: """
    -- the account's login at the source when it differs from its (target) address: a CSV
    -- import or the self-service page may rename. NULL: the same address.
    ALTER TABLE accounts ADD COLUMN source_address TEXT;
    """,
    5: """
    -- POP3 sources (sync/pop3.py): one row per source message copied to (or refused by) the target.
    -- id numbers the rows of an account (shown as "uid" in the skipped table, path 'INBOX (pop3)');
    -- uidl is NULL for messages copied under the no-UIDL fallback, which matches by size+fingerprint.
    CREATE TABLE pop3_messages (
        account       TEXT NOT NULL,
        id            INTEGER NOT NULL,
        uidl          TEXT,
        size          INTEGER NOT NULL,
        fingerprint   BLOB NOT NULL,
        target_name   TEXT NOT NULL,
        target_uidvalidity INTEGER,
        target_uid    INTEGER,
        skipped       TEXT,
        at            REAL NOT NULL,
        PRIMARY KEY (account, id)
    );
    CREATE UNIQUE INDEX pop3_messages_uidl ON pop3_messages (account, target_name, uidl);
    -- a POP3 batch being appended: written before APPEND, removed by the commit after it
    CREATE TABLE pop3_inflight (
        account       TEXT PRIMARY KEY,
        target_name   TEXT NOT NULL,
        target_uidvalidity INTEGER NOT NULL,
        target_uidnext INTEGER NOT NULL,
        items         TEXT NOT NULL
    );
    """,
    6: """
    -- when the "your mail has been moved" notice was appended to the account's new INBOX
    ALTER TABLE accounts ADD COLUMN notice_sent REAL;
    """,
    7: """
    -- the source folder's size in bytes at its last STATUS (STATUS=SIZE, RFC 8438), NULL where unknown
    ALTER TABLE folders ADD COLUMN size INTEGER;
    """,
    8: """
    -- sync.deletions: mirror (sync/expunge.py). A target message being expunged because its source
    -- message is gone: written before UID STORE +FLAGS (the Deleted flag), removed with its UID map row once
    -- the target no longer holds it. A row left by a crash lets the next pass finish the expunge.
    CREATE TABLE deleting (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        uidvalidity   INTEGER NOT NULL,
        uid           INTEGER NOT NULL,
        target_uid    INTEGER NOT NULL,
        PRIMARY KEY (account, path, uidvalidity, uid)
    );
    -- messages a pass expunged on the target, and why it held deletions back (NULL: it did not)
    ALTER TABLE reports ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE reports ADD COLUMN held TEXT;
    ALTER TABLE passes ADD COLUMN deleted INTEGER;
    """,
    9: """
    -- client networks (IPv4 /32, IPv6 /64 prefixes, never a full IPv6 address) a user logged in from:
    -- they keep their own login budget when strangers guess the user's password (auth/throttle.py)
    CREATE TABLE known_networks (
        address       TEXT NOT NULL,
        network       TEXT NOT NULL,
        last_ok       REAL NOT NULL,
        PRIMARY KEY (address, network)
    );
    CREATE INDEX known_networks_last_ok ON known_networks (last_ok);
    """,
    10: """
    -- folders.target_name is the mapping recorded at the folder's first copy; would_be is where
    -- the current plan would put it instead (config or servers changed), until `mailsyncctl remap`
    -- applies it. NULL: no change pending.
    ALTER TABLE folders ADD COLUMN would_be TEXT;
    -- messages in the report's target folder that did not come from any source folder (there before)
    ALTER TABLE reports ADD COLUMN already_there INTEGER;
    """,
    11: """
    -- one in-flight journal for both engines (sync/appender.py): a POP3 batch is the row of path
    -- 'INBOX (pop3)', its items [uidl, size, fingerprint] where an IMAP batch's are [uid, size, fp, flags]
    -- (no IMAP row can have that path yet: a plain INSERT, the same as the OR REPLACE it was)
    INSERT INTO inflight (account, path, target_name, target_uidvalidity, target_uidnext, items)
        SELECT account, 'INBOX (pop3)', target_name, target_uidvalidity, target_uidnext, items FROM pop3_inflight;
    DROP TABLE pop3_inflight;
    """,
    12: """
    -- source folders the last pass did not copy, and why (folder rules, a name refused as unsafe):
    -- replaced by each pass that listed the folders, so that `mailsyncctl report` can list them
    CREATE TABLE skipped_folders (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        reason        TEXT NOT NULL,
        at            REAL NOT NULL,
        PRIMARY KEY (account, path)
    );
    -- messages on the target that the target changed at APPEND (sync/appender.py checks those with raw
    -- 8-bit header bytes: Cyrus's munge8bit); keyed as the skipped table is (POP3: path 'INBOX (pop3)')
    CREATE TABLE altered (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        uidvalidity   INTEGER NOT NULL,
        uid           INTEGER NOT NULL,
        size          INTEGER,
        reason        TEXT NOT NULL,
        at            REAL NOT NULL,
        PRIMARY KEY (account, path, uidvalidity, uid)
    );
    ALTER TABLE reports ADD COLUMN altered INTEGER NOT NULL DEFAULT 0;
    """,
    13: """
    -- status views at scale (store/progress.py): a page of one domain or one phase in address order
    CREATE INDEX accounts_domain_address ON accounts (domain, address);
    CREATE INDEX accounts_phase_address ON accounts (phase, address);
    """,
    14: """
    -- the front door's memory, shared by every node on this store (auth/throttle.py): token buckets
    -- keyed by kind ("network", "user+network", "user", the admin's) and key, and each client
    -- address's failure streak (kind "streak", level = failures in a row).  level NULL: a full bucket
    -- (a row made only to be locked).  Rows that are full again are trimmed.
    CREATE TABLE throttle (
        kind          TEXT NOT NULL,
        key           TEXT NOT NULL,
        level         REAL,
        at            REAL NOT NULL,
        PRIMARY KEY (kind, key)
    );
    -- web sessions of the self-service page (site 'self') and the dashboard (site 'admin'), so that
    -- any node accepts a session made on another; only the SHA-256 of the cookie's token is kept
    CREATE TABLE web_sessions (
        token_hash    TEXT PRIMARY KEY,
        site          TEXT NOT NULL,
        who           TEXT NOT NULL,
        csrf          TEXT NOT NULL,
        created       REAL NOT NULL,
        seen          REAL NOT NULL,
        flash_kind    TEXT,
        flash_text    TEXT
    );
    CREATE INDEX web_sessions_seen ON web_sessions (site, seen);
    """,
    15: """
    -- the daemons sharing this database (config node.name), each touched every node.heartbeat
    CREATE TABLE nodes (
        name          TEXT PRIMARY KEY,
        pid           INTEGER NOT NULL,
        host          TEXT NOT NULL,
        started       REAL NOT NULL,
        heartbeat     REAL NOT NULL,
        version       TEXT NOT NULL
    );
    -- work leases (store/leases.py): the node running the account's pass until expires; token grows by one
    -- at every claim, and each write of a pass checks it (fencing). due: when the next pass may begin.
    CREATE TABLE leases (
        account       TEXT PRIMARY KEY,
        node          TEXT,
        token         INTEGER NOT NULL DEFAULT 0,
        expires       REAL NOT NULL DEFAULT 0,
        claimed       REAL,
        due           REAL NOT NULL DEFAULT 0
    );
    -- source connections in use per host, shared by every node: a pass's (owner 'pass ACCOUNT TOKEN') or a
    -- login check's (owner 'login NODE N'); a row past expires is free (its node died or stopped renewing)
    CREATE TABLE host_slots (
        host          TEXT NOT NULL,
        owner         TEXT NOT NULL,
        node          TEXT NOT NULL,
        connections   INTEGER NOT NULL,
        expires       REAL NOT NULL,
        PRIMARY KEY (host, owner)
    );
    -- which node ran a pass, under which lease token (NULL: recorded before schema 15; a one-off sync has a node name of its own, ctl-HOST-PID)
    ALTER TABLE passes ADD COLUMN node TEXT;
    ALTER TABLE passes ADD COLUMN token INTEGER;
    -- the adaptive connection limit of a source host (halved when it throttles, +0.25 per good pass)
    CREATE TABLE host_limits (
        host          TEXT PRIMARY KEY,
        connections   REAL NOT NULL,
        updated       REAL NOT NULL
    );
    """,
    16: """
    -- per account, the sums the status views add up, kept by the triggers of _TRIGGERS[16] in the transaction
    -- that writes the rows they count, so that no view counts every copied message: the UID map rows
    -- (messages, and pop3_messages not refused: count and bytes), skipped rows, the folders' last STATUS
    -- (messages, size; sized_folders: those with a size) and the reports' source counts
    CREATE TABLE account_totals (
        account         TEXT PRIMARY KEY,
        messages        INTEGER NOT NULL DEFAULT 0,
        bytes           INTEGER NOT NULL DEFAULT 0,
        skipped         INTEGER NOT NULL DEFAULT 0,
        source_messages INTEGER NOT NULL DEFAULT 0,
        source_bytes    INTEGER NOT NULL DEFAULT 0,
        sized_folders   INTEGER NOT NULL DEFAULT 0,
        folders         INTEGER NOT NULL DEFAULT 0,
        reported        INTEGER NOT NULL DEFAULT 0,
        reports         INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO account_totals (account, messages, bytes, skipped, source_messages, source_bytes, sized_folders,
                                folders, reported, reports)
        SELECT account, sum(n), sum(b), sum(k), sum(sm), sum(sb), sum(sf), sum(nf), sum(rp), sum(nr) FROM (
            SELECT account, 1 AS n, size AS b, 0 AS k, 0 AS sm, 0 AS sb, 0 AS sf, 0 AS nf, 0 AS rp, 0 AS nr
              FROM messages
            UNION ALL SELECT account, 1, size, 0, 0, 0, 0, 0, 0, 0 FROM pop3_messages WHERE skipped IS NULL
            UNION ALL SELECT account, 0, 0, 1, 0, 0, 0, 0, 0, 0 FROM skipped
            UNION ALL SELECT account, 0, 0, 0, coalesce(messages, 0), coalesce(size, 0),
                             CASE WHEN size IS NULL THEN 0 ELSE 1 END, 1, 0, 0 FROM folders
            UNION ALL SELECT account, 0, 0, 0, 0, 0, 0, 0, coalesce(source_count, 0), 1 FROM reports) x
        GROUP BY account;
    """,
    17: """
    -- one journal row per batch in flight: several connections (lanes) may copy one large folder at
    -- once, each with its own batch (sync/folder.py); lane 0 is the folder's own and POP3's
    CREATE TABLE inflight_lanes (
        account       TEXT NOT NULL,
        path          TEXT NOT NULL,
        lane          INTEGER NOT NULL DEFAULT 0,
        target_name   TEXT NOT NULL,
        target_uidvalidity INTEGER NOT NULL,
        target_uidnext INTEGER NOT NULL,
        items         TEXT NOT NULL,
        PRIMARY KEY (account, path, lane)
    );
    INSERT INTO inflight_lanes (account, path, lane, target_name, target_uidvalidity, target_uidnext, items)
        SELECT account, path, 0, target_name, target_uidvalidity, target_uidnext, items FROM inflight;
    DROP TABLE inflight;
    ALTER TABLE inflight_lanes RENAME TO inflight;
    """,
}


def _add(row: str, vals: dict[str, str]) -> str:
    """``row``'s (NEW or OLD) contribution added to its account's totals (the row made if missing)."""
    return (f"INSERT INTO account_totals (account, {', '.join(vals)}) VALUES ({row}.account, {', '.join(vals.values())})"
            " ON CONFLICT (account) DO UPDATE SET " + ", ".join(f"{c} = account_totals.{c} + excluded.{c}" for c in vals))


def _sub(row: str, vals: dict[str, str]) -> str:
    """``row``'s contribution taken away (no row: the account's totals went first, as remove_account may do)."""
    return ("UPDATE account_totals SET " + ", ".join(f"{c} = {c} - {v}" for c, v in vals.items())
            + f" WHERE account = {row}.account")


def _counted(table: str, columns: str, vals: dict[str, str]) -> list[tuple[str, str, str, list[str]]]:
    """The three triggers of a table counted in account_totals: (name, event, table, body).  ``vals``: each
    account_totals column the table adds to, and what one row ``R`` (NEW or OLD) adds; an update of
    ``columns`` takes the old row off and adds the new."""
    def of(row: str) -> dict[str, str]:
        return {c: v.replace("R.", f"{row}.") for c, v in vals.items()}
    return [(f"{table}_totals_ins", "INSERT", table, [_add("NEW", of("NEW"))]),
            (f"{table}_totals_del", "DELETE", table, [_sub("OLD", of("OLD"))]),
            (f"{table}_totals_upd", f"UPDATE OF {columns}", table, [_sub("OLD", of("OLD")), _add("NEW", of("NEW"))])]


_TRIGGERS: dict[int, list[tuple[str, str, str, list[str]]]] = {
    16: _counted("messages", "account, size", {"messages": "1", "bytes": "R.size"})
        + _counted("pop3_messages", "account, size, skipped",
                   {"messages": "CASE WHEN R.skipped IS NULL THEN 1 ELSE 0 END",
                    "bytes": "CASE WHEN R.skipped IS NULL THEN R.size ELSE 0 END"})
        + _counted("skipped", "account", {"skipped": "1"})
        + _counted("folders", "account, messages, size",
                   {"source_messages": "coalesce(R.messages, 0)", "source_bytes": "coalesce(R.size, 0)",
                    "sized_folders": "CASE WHEN R.size IS NULL THEN 0 ELSE 1 END", "folders": "1"})
        + _counted("reports", "account, source_count", {"reported": "coalesce(R.source_count, 0)", "reports": "1"}),
}
