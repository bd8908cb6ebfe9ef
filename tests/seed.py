"""Seed an IMAP account and take read-only snapshots of it (test helpers, imapclient based).

    seed(host, port, user, password, {"INBOX": [Msg(make_message(1))], "客户/重要": [...]})
    assert snapshot(*src) == snapshot(*dst)

Folder names are ``str`` with "/" as hierarchy delimiter (imapclient encodes them to modified
UTF-7 on the wire).  :func:`snapshot` only uses EXAMINE and BODY.PEEK, so it changes nothing:
no \\Seen, no \\Recent consumed... (\\Recent is excluded from the result anyway).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from imapclient import IMAPClient

__all__ = ["Msg", "make_message", "seed", "snapshot", "connect"]

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Msg:
    raw: bytes
    flags: tuple[str, ...] = ()
    # tz-aware; None lets the server use "now"
    internaldate: dt.datetime | None = field(default=None)

    def __post_init__(self) -> None:
        if self.internaldate is not None and self.internaldate.tzinfo is None:
            raise ValueError("Msg.internaldate must be timezone-aware")


def connect(host: str, port: int, user: str, password: str, *, ssl: bool = False,
            ssl_context=None, timeout: float = 30) -> IMAPClient:
    c = IMAPClient(host, port=port, ssl=ssl, ssl_context=ssl_context, timeout=timeout)
    c.normalise_times = False  # tz-aware INTERNALDATEs
    c.login(user, password)
    return c


def make_message(i: int, *, size: int | None = None, msgid: bool | str = True,
                 extra_headers: dict[str, str] | list[tuple[str, str]] | None = None,
                 body: str | bytes | None = None, subject: str | None = None,
                 date: dt.datetime | None = None) -> bytes:
    """A valid RFC 5322 message, deterministic in its arguments, CRLF line ends.

    ``size``: pad the body with ASCII lines (<= 78 chars) until the whole message is exactly
    ``size`` bytes (if it is not already bigger).  ``msgid``: True -> ``<i.N@mailsyncd.test>``,
    a str -> that Message-ID, False -> no Message-ID header.  ``body`` str is UTF-8 encoded
    (Content-Transfer-Encoding 8bit when non-ASCII).
    """
    if date is None:
        date = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))) + dt.timedelta(hours=i)
    headers: list[tuple[str, str]] = [
        ("From", f"Sender {i} <sender{i}@example.org>"),
        ("To", "Alice <alice@example.com>"),
        ("Subject", subject if subject is not None else f"Test message {i}"),
        ("Date", date.strftime("%a, %d %b %Y %H:%M:%S %z")),
    ]
    if msgid is True:
        headers.append(("Message-ID", f"<{i}.test@mailsyncd.test>"))
    elif isinstance(msgid, str):
        headers.append(("Message-ID", msgid if msgid.startswith("<") else f"<{msgid}>"))
    if extra_headers:
        headers += list(extra_headers.items()) if isinstance(extra_headers, dict) else list(extra_headers)
    if body is None:
        body_b = f"This is test message number {i}.\r\n".encode()
    else:
        body_b = body.encode("utf-8") if isinstance(body, str) else body
        body_b = body_b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not body_b.endswith(b"\r\n"):
            body_b += b"\r\n"
    eight_bit = any(b > 0x7F for b in body_b)
    headers += [("MIME-Version", "1.0"), ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Transfer-Encoding", "8bit" if eight_bit else "7bit")]
    head = b"".join(f"{k}: {v}\r\n".encode("utf-8") for k, v in headers) + b"\r\n"
    msg = head + body_b
    if size is not None and len(msg) < size:
        missing = size - len(msg)
        if missing <= 2:  # too short for a line: lengthen the body's last line
            return msg[:-2] + b"x" * missing + b"\r\n"
        pad = bytearray()
        n = 0
        while missing > 0:
            if missing <= 2:  # too short for a line: extend the previous one
                pad[-2:-2] = b"x" * missing
                break
            line = f"pad {i}.{n} ".encode()
            line = (line + b"." * 78)[: min(78, missing - 2)]
            pad += line + b"\r\n"
            missing -= len(line) + 2
            n += 1
        msg += bytes(pad)
    return msg


def seed(host: str, port: int, user: str, password: str, folders: dict[str, list[Msg]], *,
         subscribe: bool = True, ssl: bool = False, ssl_context=None) -> dict[str, list[int]]:
    """Create the folders (parents implicitly, "/" delimiter) and APPEND the messages in order.

    Returns {folder: [UIDs appended]} (from APPENDUID when the server has UIDPLUS, else []).
    """
    uids: dict[str, list[int]] = {}
    with connect(host, port, user, password, ssl=ssl, ssl_context=ssl_context) as c:
        existing = {name for _, _, name in c.list_folders()}
        for folder, msgs in folders.items():
            if folder.upper() != "INBOX" and folder not in existing:
                c.create_folder(folder)
                existing.add(folder)
            if subscribe and folder.upper() != "INBOX":
                c.subscribe_folder(folder)
            got = uids.setdefault(folder, [])
            for m in msgs:
                resp = c.append(folder, m.raw, flags=m.flags, msg_time=m.internaldate)
                got += _appenduid(resp)
    return uids


def _appenduid(resp: bytes | str | None) -> list[int]:
    # b"[APPENDUID 1700000000 5] Append completed."
    if isinstance(resp, bytes):
        resp = resp.decode("ascii", "replace")
    if resp and resp.startswith("[APPENDUID "):
        return [int(resp.split()[2].rstrip("]"))]
    return []


Snapshot = dict[str, list[tuple[str, tuple[str, ...], str]]]


def snapshot(host: str, port: int, user: str, password: str, *, ssl: bool = False,
             ssl_context=None) -> Snapshot:
    """{folder: [(sha256 hex of the full message, sorted flags without \\Recent,
    INTERNALDATE as UTC ISO-8601), ...] in UID order} for every selectable folder.

    Read-only: LIST, EXAMINE, UID FETCH (BODY.PEEK[] FLAGS INTERNALDATE).
    """
    out: Snapshot = {}
    with connect(host, port, user, password, ssl=ssl, ssl_context=ssl_context) as c:
        for flags, _delim, name in c.list_folders():
            fl = {f.decode() if isinstance(f, bytes) else f for f in flags}
            if fl & {"\\Noselect", "\\NonExistent"}:
                continue
            info = c.select_folder(name, readonly=True)  # EXAMINE
            rows = []
            if info.get(b"EXISTS", 0):
                # (imapclient 3.0 drops every result of a "1:*" string range: list the UIDs)
                data = c.fetch(c.search(["ALL"]), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
                for _uid, d in sorted(data.items()):  # keyed by UID (use_uid=True)
                    flags_ = tuple(sorted(
                        (f.decode() if isinstance(f, bytes) else f) for f in d[b"FLAGS"]
                        if (f.decode() if isinstance(f, bytes) else f) != "\\Recent"))
                    idate = d[b"INTERNALDATE"]
                    if idate.tzinfo is None:  # normalise_times off: should not happen
                        raise AssertionError(f"naive INTERNALDATE in {name}")
                    rows.append((hashlib.sha256(d[b"BODY[]"]).hexdigest(), flags_,
                                 idate.astimezone(UTC).isoformat()))
            out[name] = rows
    return out
