"""Pre-flight of a migration: for one account, what the copy would meet, read without changing anything.

At the source: does the password work, which folders would be copied (the pass's own folder plan),
messages and bytes in each (STATUS, with SIZE where the server offers STATUS=SIZE, RFC 8438; else
EXAMINE and FETCH RFC822.SIZE), and how many messages are larger than the copy will take
(sync.max_message_size, lowered to the target's APPENDLIMIT as a pass does).  At the target: does the
login work (the mailbox exists), and its APPENDLIMIT.  Nothing is written on either side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import AuthFailed, MailsyncError
from .imap.folders import Skipped, plan_folders
from .net import imap
from .providers import quirks
from .imap.caps import appendlimit

# Without a measured copy in the store: a conservative figure for one account's pass over the Internet
# (a Dovecot pair on one machine copies several times faster; bench/README.md).
DEFAULT_BYTES_PER_SECOND = 2 * 1024 * 1024


@dataclass
class FolderCheck:
    path: str
    messages: int
    bytes: int
    too_large: int = 0            # messages over the limit: a pass skips them and reports them
    largest: int = 0              # bytes; 0 when the sizes were not fetched (STATUS=SIZE said all fit)


@dataclass
class AccountCheck:
    address: str
    source_login: str = "not tried"     # ok | refused: <the server's words> | error: <what>
    target_login: str = "not tried"
    limit: int = 0                     # the largest message a pass copies, bytes
    appendlimit: int | None = None
    size_from: str = ""                # STATUS=SIZE | RFC822.SIZE
    folders: list[FolderCheck] = field(default_factory=list)
    skipped_folders: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.source_login == "ok"

    @property
    def messages(self) -> int:
        return sum(f.messages for f in self.folders)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.folders)

    @property
    def too_large(self) -> int:
        return sum(f.too_large for f in self.folders)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ok=self.ok, messages=self.messages, bytes=self.bytes, too_large=self.too_large)
        return d


def _outcome(e: Exception) -> str:
    return f"refused: {e}" if isinstance(e, AuthFailed) else f"error: {e}"


def check_account(domain, address: str, password: str, *, source_address: str | None = None) -> AccountCheck:
    """One account's pre-flight; at most one source and one target connection, one after the other."""
    res = AccountCheck(address)
    tgt_boxes, tgt_ns, special = [], None, False
    res.limit = domain.sync.max_message_size
    try:
        tgt = imap.open_session(domain.target, role="target", address=address, password=password)
    except (MailsyncError, OSError) as e:
        res.target_login = _outcome(e)
    else:
        try:
            res.target_login = "ok"
            res.appendlimit = appendlimit(tgt.capabilities())
            tgt_boxes, _ = imap.list_mailboxes(tgt, with_status=False)
            tgt_ns = imap.namespaces(tgt, f"account={address} side=target")
            special = tgt.has_capability("CREATE-SPECIAL-USE")
        except (MailsyncError, OSError) as e:
            res.target_login = f"error: {e}"
        finally:
            imap.close(tgt)
    if res.appendlimit:
        res.limit = min(res.limit, res.appendlimit)
    try:
        src = imap.open_session(domain.source, role="source", address=source_address or address, password=password)
    except (MailsyncError, OSError) as e:
        res.source_login = _outcome(e)
        return res
    try:
        res.source_login = "ok"
        _read_source(src, domain, address, res, tgt_boxes, tgt_ns, special)
    except (MailsyncError, OSError) as e:
        res.source_login = f"error: {e}"
    finally:
        imap.close(src)
    return res


def _read_source(src, domain, address: str, res: AccountCheck, tgt_boxes, tgt_ns, special: bool) -> None:
    refused: list[Skipped] = []
    with imap.lost_is_transient("listing folders"):
        boxes, status = imap.list_mailboxes(src, with_status=True, refused=refused)
        src_ns = imap.namespaces(src, f"account={address} side=source")
    plans, skipped = plan_folders(boxes, tgt_boxes, domain.folders, src_ns, tgt_ns, special,
                                  skip=quirks.skip_folders(domain.source))
    res.skipped_folders = [f"{s.path}: {s.reason}" for s in skipped + refused if "not a mailbox" not in s.reason]
    has_size = src.has_capability("STATUS=SIZE")
    res.size_from = "STATUS=SIZE" if has_size else "RFC822.SIZE"
    for p in plans:
        st = status.get(p.source)
        if st is None:
            res.skipped_folders.append(f"{p.path}: the source refused STATUS")
            continue
        f = FolderCheck(p.path, st.messages, st.size or 0)
        # with STATUS=SIZE a folder smaller than the limit cannot hold a message over it: no FETCH
        if st.messages and not (has_size and st.size is not None and st.size <= res.limit):
            with imap.lost_is_transient(f"reading sizes in {p.source}"):
                src.select_folder(p.source, readonly=True)     # EXAMINE: the source stays as it is
                sizes = [int(d.get(b"RFC822.SIZE", 0)) for d in imap.fetch(src, "1:*", [b"RFC822.SIZE"]).values()]
            f.messages = len(sizes)
            f.bytes = sum(sizes) if not has_size or st.size is None else st.size
            f.too_large = sum(1 for s in sizes if s > res.limit)
            f.largest = max(sizes, default=0)
        res.folders.append(f)


@dataclass(frozen=True)
class Estimate:
    seconds: float
    bytes_per_second: float
    measured: bool              # from the store's finished passes, else DEFAULT_BYTES_PER_SECOND
    parallel: int               # accounts copied at once


def estimate(total_bytes: int, largest_account: int, *, measured: tuple[int, float] | None,
             parallel: int) -> Estimate:
    """Wall time of the first copy: accounts run ``parallel`` at once, each at the per-account rate;
    never less than the largest account alone."""
    if measured and measured[0] > 0 and measured[1] > 0:
        rate, known = measured[0] / measured[1], True
    else:
        rate, known = float(DEFAULT_BYTES_PER_SECOND), False
    parallel = max(1, parallel)
    return Estimate(max(total_bytes / (rate * parallel), largest_account / rate), rate, known, parallel)
