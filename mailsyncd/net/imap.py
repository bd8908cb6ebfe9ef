"""Opening IMAP connections for the sync engine, and the few commands imapclient lacks.

imapclient is blocking and not thread-safe: every job owns its clients.  Every
socket has a timeout.  Failures become the exceptions in ``mailsyncd.errors``,
whose text names host, port and cause, and never the password.

The two imapclient internals used here (``_raw_command`` for LIST-STATUS and
``_imap`` for untagged responses) are confined to this module.
"""

from __future__ import annotations

import ast
import imaplib
import logging
import re
import socket
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient import exceptions as imapexc
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_fetch_response, parse_response

from .. import __version__
from ..errors import AuthFailed, ConnectionLost, MailsyncError, ProtocolError, TLSFailure, Unreachable
from ..imap.fetchparse import parse_fetch, records
from ..imap.flags import split_flags
from ..imap.folders import Mailbox, Skipped
from ..imap.namespaces import Namespaces
from ..imap.namespaces import from_response as namespaces_from_response
from ..text import server_words, shown
from .imapguard import GuardedIMAPClient, expect_sizes

logger = logging.getLogger(__name__)

STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY")

# Errors that mean "the connection is gone": the caller may reconnect and resume.
TRANSIENT = (OSError, imaplib.IMAP4.abort, imapexc.IMAPClientAbortError, EOFError)


@dataclass(frozen=True, slots=True)
class Status:
    messages: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int | None
    size: int | None = None          # bytes, from STATUS=SIZE (RFC 8438) where the server has it


class _NamedTLS(ssl.SSLContext):
    """Checks the certificate against ``name`` instead of the host connected to: an SRV target
    outside the mail domain must present the domain's certificate (RFC 6186 s. 6)."""

    name = ""

    def wrap_socket(self, sock, *args, server_hostname=None, **kw):
        return super().wrap_socket(sock, *args, server_hostname=self.name, **kw)


def tls_context(endpoint) -> ssl.SSLContext:
    if endpoint.tls_name:
        ctx = _NamedTLS(ssl.PROTOCOL_TLS_CLIENT)      # what create_default_context sets up, plus the name
        ctx.name = endpoint.tls_name
        if endpoint.ca_file:
            ctx.load_verify_locations(cafile=endpoint.ca_file)
        else:
            ctx.load_default_certs()
    else:
        ctx = ssl.create_default_context(cafile=endpoint.ca_file)
    if not endpoint.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(endpoint, *, role: str) -> IMAPClient:
    """A connected, not yet authenticated client, with TLS as configured (never a silent fallback)."""
    where = f"{role} {endpoint.host}:{endpoint.port}"
    try:
        if endpoint.security == "tls":
            client = GuardedIMAPClient(endpoint.host, endpoint.port, ssl=True, ssl_context=tls_context(endpoint),
                                       timeout=endpoint.timeout)
        else:
            client = GuardedIMAPClient(endpoint.host, endpoint.port, ssl=False, timeout=endpoint.timeout)
            if endpoint.security == "starttls":
                if not client.has_capability("STARTTLS"):
                    client.shutdown()
                    raise TLSFailure(f"{where}: server does not offer STARTTLS (security: starttls)")
                client.starttls(tls_context(endpoint))
    except ssl.SSLCertVerificationError as e:
        raise TLSFailure(f"{where}: TLS certificate not trusted: {e.verify_message}") from None
    except ssl.SSLError as e:
        raise TLSFailure(f"{where}: TLS handshake failed: {e.reason or e}") from None
    except socket.gaierror as e:
        raise Unreachable(f"{where}: host name does not resolve ({e.strerror})") from None
    except (socket.timeout, TimeoutError):
        raise Unreachable(f"{where}: connection timed out after {endpoint.timeout:g}s") from None
    except ConnectionRefusedError:
        raise Unreachable(f"{where}: connection refused") from None
    except OSError as e:
        raise Unreachable(f"{where}: {e.strerror or e}") from None
    except (imaplib.IMAP4.error, imapexc.IMAPClientError) as e:
        raise ProtocolError(f"{where}: unexpected greeting: {e}") from None
    client.normalise_times = False  # keep the server's zone: INTERNALDATE goes back out as an instant
    # imapclient turns on imaplib's debug level 5, which formats every response (message bodies
    # included) with %r before the logger drops it: 40% of a copy's CPU, and a leak path for secrets.
    client._imap.debug = 0
    return client


def _login_error(where: str, user: str, e: Exception) -> AuthFailed:
    text = str(e)
    # imaplib wraps the server's text as the repr of its bytes, b'...': undo that, so that Chinese
    # words are words (a refusal may name the password it wants, in UTF-8 or GBK)
    m = re.search(r"b(['\"])(.*)\1", text, re.S)
    words = m.group(2) if m else text
    if m:
        try:
            words = server_words(ast.literal_eval(m.group(0)))
        except (ValueError, SyntaxError):
            pass
    return AuthFailed(f"{where}: login refused for {user}: {shown(words, 300)}", server_text=words)


def _safe_for_login(s: str) -> bool:
    return s.isascii() and not any(c in s for c in "\r\n\0")


def _login(client: IMAPClient, where: str, user: str, password: str) -> None:
    """LOGIN with both arguments quoted, or AUTHENTICATE PLAIN for what a quoted string cannot carry.

    imaplib quotes only the password: an unquoted user name with a space or CRLF
    would inject arguments or whole commands into the session.
    """
    if _safe_for_login(user) and _safe_for_login(password):
        client.login(_quoted(user), password)
    elif client.has_capability("AUTH=PLAIN"):
        client.plain_login(user, password)
    else:
        raise AuthFailed(f"{where}: the user name or password has characters LOGIN cannot send "
                         "(non-ASCII or control characters) and the server offers no AUTH=PLAIN")


def _quoted(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def login_source(client: IMAPClient, endpoint, address: str, password: str) -> None:
    user = endpoint.login_name(address)
    where = f"source {endpoint.host}:{endpoint.port}"
    try:
        _login(client, where, user, password)
    except imapexc.LoginError as e:
        raise _login_error(where, user, e) from None
    except TRANSIENT as e:
        raise ConnectionLost(f"{where}: connection lost during login: {e}") from None
    if endpoint.send_id:
        send_id(client)


def login_target(client: IMAPClient, endpoint, address: str, password: str | None) -> None:
    user = endpoint.login_name(address)
    where = f"target {endpoint.host}:{endpoint.port}"
    try:
        if endpoint.auth == "master":
            client.plain_login(endpoint.master_user, endpoint.read_master_password(), user)
        elif endpoint.auth == "master_separator":
            _login(client, where, f"{user}{endpoint.master_separator}{endpoint.master_user}",
                   endpoint.read_master_password())
        else:
            if password is None:
                raise AuthFailed(f"{where}: auth: same needs the user's password")
            _login(client, where, user, password)
    except imapexc.LoginError as e:
        shown = user if endpoint.auth == "same" else f"{user} (as master {endpoint.master_user})"
        raise _login_error(where, shown, e) from None
    except TRANSIENT as e:
        raise ConnectionLost(f"{where}: connection lost during login: {e}") from None


def send_id(client: IMAPClient) -> None:
    """NetEase (163/126/qiye) refuses SELECT until the client identifies itself."""
    if client.has_capability("ID"):
        try:
            client.id_({"name": "mailsyncd", "version": __version__})
        except imapexc.IMAPClientError as e:
            logger.info("event=id_refused reason=%r", str(e))


@contextmanager
def lost_is_transient(where: str) -> Iterator[None]:
    """Turn socket-level failures into ConnectionLost so the caller can resume."""
    try:
        yield
    except ConnectionLost:
        raise
    except TRANSIENT as e:
        raise ConnectionLost(f"{where}: connection lost: {e or type(e).__name__}") from None


_CTL = frozenset("\r\n\0")


def _name(raw) -> str | None:
    """A mailbox name from LIST/STATUS, or None if it holds CR, LF or NUL or is not modified UTF-7."""
    if isinstance(raw, int):
        return str(raw)
    if not isinstance(raw, bytes):
        return None
    try:
        name = decode_utf7(raw)
    except ValueError:   # ill-formed modified UTF-7
        return None
    if not isinstance(name, str) or _CTL & set(name):
        return None
    return name


def _refusal(raw, delim) -> str:
    """Why parse_list leaves a LIST entry out (see _name)."""
    if delim is not None and not isinstance(delim, str):
        return "refused: its hierarchy delimiter is not a character"
    if not isinstance(raw, bytes):
        return "refused: its name is not a string"
    try:
        name = decode_utf7(raw)
    except ValueError:
        return "refused: its name is not valid modified UTF-7"
    if _CTL & set(raw.decode("latin-1")) or _CTL & set(name):
        return "refused: its name holds CR, LF or NUL"
    return "refused: its name is not valid modified UTF-7"


def refused_name(raw) -> str:
    """A refused LIST name as it can be shown: its bytes, escapes for the rest (no parsing back)."""
    return shown(raw.decode("ascii", "backslashreplace") if isinstance(raw, bytes) else repr(raw), 200)


def parse_list(raw: list, refused: list[Skipped] | None = None) -> list[Mailbox]:
    """Mailboxes from LIST responses.  Raises ProtocolError; names with CR/LF/NUL are left out, logged,
    and added to ``refused`` (escaped) where given."""
    out = []
    for rec in records(raw):   # a name sent as a literal: (text, literal) then the rest of the line
        line = rec[0]
        try:
            flags, delim, raw_name = parse_response(rec)
            flags = tuple(f.decode("ascii") for f in split_flags(flags)[0])   # attributes are atoms too
            delim = delim.decode("ascii") if isinstance(delim, bytes) else delim
        except (imapexc.IMAPClientError, ValueError, TypeError) as e:
            raise ProtocolError(f"unparsable LIST response {shown(_first(line), 80)}: {e}") from None
        name = _name(raw_name)
        if name is None or (delim is not None and not isinstance(delim, str)):
            why = _refusal(raw_name, delim)
            logger.warning("event=folder_name_refused name=%s reason=%r", shown(repr(raw_name), 80), why)
            if refused is not None:
                refused.append(Skipped(refused_name(raw_name), why))
            continue
        out.append(Mailbox(name=name, delimiter=delim, flags=flags))
    return out


def parse_status(raw: list) -> dict[str, Status]:
    """{mailbox: Status} from STATUS responses.  Raises ProtocolError."""
    out = {}
    for rec in records(raw):
        line = rec[0]
        try:
            parsed = parse_response(rec)
            raw_name, items = parsed[0], parsed[-1]
            status = _status_from_items(items)
        except (imapexc.IMAPClientError, ValueError, TypeError, IndexError, AttributeError) as e:
            raise ProtocolError(f"unparsable STATUS response {shown(_first(line), 80)}: {e}") from None
        name = _name(raw_name)
        if name is not None:
            out[name] = status
    return out


def _first(line) -> bytes:
    return line[0] if isinstance(line, tuple) else line


def _status_from_items(items) -> Status:
    if not isinstance(items, tuple) or len(items) % 2:
        raise ValueError("not a list of item-value pairs")
    d = {}
    for k, v in zip(items[::2], items[1::2]):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{shown(repr(k), 80)} is not a number")
        d[k.decode("ascii", "replace").upper() if isinstance(k, bytes) else str(k).upper()] = v
    return Status(d.get("MESSAGES", 0), d.get("UIDNEXT", 0), d.get("UIDVALIDITY", 0), d.get("HIGHESTMODSEQ"),
                  d.get("SIZE"))


def _status_items(client: IMAPClient) -> tuple[str, ...]:
    return (STATUS_ITEMS + (("HIGHESTMODSEQ",) if client.has_capability("CONDSTORE") else ())
            + (("SIZE",) if client.has_capability("STATUS=SIZE") else ()))


def list_mailboxes(client: IMAPClient, *, with_status: bool,
                   refused: list[Skipped] | None = None) -> tuple[list[Mailbox], dict[str, Status]]:
    """LIST all mailboxes with special-use flags, and their STATUS where asked; names that cannot be
    used go to ``refused`` where given (see parse_list).

    One round trip with LIST-STATUS (RFC 5819); otherwise LIST, then one STATUS per
    selectable mailbox.  Either way the cost grows with folders, never with messages.
    """
    items = _status_items(client)
    ret = []
    if client.has_capability("SPECIAL-USE"):
        ret.append(b"SPECIAL-USE")
    if with_status and client.has_capability("LIST-STATUS"):
        ret.append(b"STATUS (" + " ".join(items).encode() + b")")
    args = [b'""', b'"*"']
    if ret:
        args += [b"RETURN", b"(" + b" ".join(ret) + b")"]
    try:
        typ, data = client._raw_command(b"LIST", args, uid=False)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as e:
        raise ProtocolError(f"LIST failed: {_imaplib_words(e)}") from None
    if typ != "OK":
        raise ProtocolError(f"LIST failed: {shown(response_text(data), 300)}")
    imap = client._imap
    _, list_raw = imap._untagged_response(typ, data, "LIST")
    _, status_raw = imap._untagged_response(typ, data, "STATUS")
    boxes = parse_list(list_raw, refused)
    statuses = parse_status(status_raw) if with_status else {}
    if with_status:
        for mb in boxes:
            if mb.name not in statuses and not _unselectable(mb):
                try:
                    statuses[mb.name] = folder_status(client, mb.name, items)
                except imapexc.IMAPClientAbortError:
                    raise
                except (imapexc.IMAPClientError, ProtocolError) as e:
                    logger.warning("event=status_refused folder=%r reason=%r", mb.name, str(e))
    return boxes, statuses


def namespaces(client: IMAPClient, where: str) -> Namespaces | None:
    """NAMESPACE (RFC 2342), or None when the server has none or answers nonsense (the planner
    then guesses from LIST)."""
    if not client.has_capability("NAMESPACE"):
        return None
    try:
        answer = client.namespace()
    except imapexc.IMAPClientAbortError:
        raise
    except (imapexc.IMAPClientError, ValueError, TypeError, IndexError) as e:
        logger.warning("event=namespace_refused %s reason=%r", where, str(e)[:200])
        return None
    ns = namespaces_from_response(answer)
    if ns is None:
        logger.warning("event=namespace_unusable %s answer=%r", where, str(answer)[:200])
    return ns


def create_folder(client: IMAPClient, name: str, use: str | None = None) -> None:
    """CREATE, with ``(USE (<use>))`` (RFC 6154 CREATE-SPECIAL-USE) when ``use`` is given; a
    server that refuses the attribute gets a plain CREATE."""
    if use is not None:
        typ, data = client._raw_command(b"CREATE", [client._normalise_folder(name),
                                                    b"(USE (" + use.encode("ascii") + b"))"], uid=False)
        if typ == "OK":
            return
        text = response_text(data)
        if "EXISTS" in text.upper() or "[USEATTR]" not in text.upper():
            raise imapexc.IMAPClientError(f"create failed: {text}")
        logger.info("event=special_use_refused folder=%r use=%s reason=%r", name, use, text)
    client.create_folder(name)


def _unselectable(mb: Mailbox) -> bool:
    return any(f.lower() in ("\\noselect", "\\nonexistent") for f in mb.flags)


def folder_status(client: IMAPClient, name: str, items=None) -> Status:
    if items is None:
        items = _status_items(client)
    try:
        st = client.folder_status(name, items)
        return _status_of(st)
    except (ValueError, TypeError) as e:
        raise ProtocolError(f"unparsable STATUS answer for {shown(name, 80)}: {shown(str(e), 80)}") from None


def _status_of(st: dict) -> Status:
    return Status(int(st.get(b"MESSAGES", 0)), int(st.get(b"UIDNEXT", 0)), int(st.get(b"UIDVALIDITY", 0)),
                  int(st[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in st else None,
                  int(st[b"SIZE"]) if b"SIZE" in st else None)


def fetch(client: IMAPClient, uids: str | list[int], items: list[bytes],
          modifiers: list[str] | None = None, *, sizes: dict[int, int] | None = None,
          on_dropped=None) -> dict[int, dict]:
    """UID FETCH that accepts ranges such as "5:*" (imapclient's fetch() insists on a UID list).

    ``sizes`` (UID -> RFC822.SIZE announced earlier) bounds the literals the answer may hold;
    ``on_dropped(uid, flag)`` hears of each flag that is not an RFC 3501 atom (it is left out).
    A malformed answer raises ProtocolError with the server's words, after dropping the
    connection: what follows it in the stream cannot be trusted.
    """
    if not isinstance(uids, str):
        if not uids:
            return {}
        uids = uid_ranges(uids)
    return _fetched(client, uids, items, modifiers, sizes,
                    lambda data: parse_fetch_data(data, client.normalise_times, on_dropped))


def fetch_sizes(client: IMAPClient, uids: str) -> dict[int, int]:
    """UID -> RFC822.SIZE (0 where not said), like ``fetch(client, uids, [b"RFC822.SIZE"])`` but without a
    dict per message: that held 430 bytes a message (43 MB for a folder of 100,000) through a copy."""
    return _fetched(client, uids, [b"RFC822.SIZE"], None, None, sizes_from_fetch_data)


def sizes_from_fetch_data(data: list) -> dict[int, int]:
    """UID -> RFC822.SIZE from imaplib's untagged FETCH data; each line is let go once read."""
    out: dict[int, int] = {}
    for i, piece in enumerate(data):
        # a line of its own (not the rest of a response with a literal) that says just UID and size
        m = _SIZE_LINE.fullmatch(piece) if isinstance(piece, bytes) and not (
            i and isinstance(data[i - 1], tuple)) else None
        if m:
            out[int(m[1] or m[4])] = int(m[2] or m[3])
            data[i] = None
    rest = [p for p in data if p is not None]
    if rest:    # anything else: the general parser, as fetch() would
        for uid, d in parse_fetch_data(rest).items():
            out[uid] = int(d.get(b"RFC822.SIZE", 0))
    return out


_SIZE_LINE = re.compile(rb"\d+ \((?:UID (\d{1,10}) RFC822\.SIZE (\d{1,19})|RFC822\.SIZE (\d{1,19}) UID (\d{1,10}))\)",
                        re.I)


def _fetched(client: IMAPClient, uids: str, items: list[bytes], modifiers, sizes, parse):
    args = ["UID", "FETCH", uids, "(" + " ".join(i.decode() for i in items) + ")"]
    if modifiers:
        args.append("(" + " ".join(modifiers) + ")")
    imap = client._imap
    expect_sizes(client, sizes)
    try:
        tag = imap._command(*args)
        typ, data = imap._command_complete("FETCH", tag)
        if typ != "OK":
            raise imapexc.IMAPClientError(f"fetch failed: {response_text(data)}")
        typ, data = imap._untagged_response(typ, data, "FETCH")
        return parse(data)
    except imaplib.IMAP4.abort:
        raise
    except (imaplib.IMAP4.error, ProtocolError) as e:
        _drop(client)
        raise ProtocolError(f"UID FETCH: {_imaplib_words(e)}") from None


def parse_fetch_data(data, normalise_times: bool = False, on_dropped=None) -> dict[int, dict]:
    """{uid: {item: value}} from imaplib's untagged FETCH data; ProtocolError if malformed."""
    def fallback(rec: list) -> dict:
        try:
            return parse_fetch_response(rec, normalise_times, True)
        except Exception as e:  # noqa: BLE001 - any failure of the general parser on hostile bytes
            raise ProtocolError(f"unparsable FETCH response {shown(_first(rec[0]), 80)}: {shown(str(e), 80)}") from None
    try:
        return parse_fetch(data, fallback, on_dropped)
    except MailsyncError:
        raise
    except (ValueError, TypeError, OverflowError) as e:
        raise ProtocolError(f"unparsable FETCH response: {shown(str(e), 80)}") from None


def _imaplib_words(e: Exception) -> str:
    """imaplib's "FETCH command error: BAD [b'words']" -> "BAD words"; control characters escaped."""
    text = str(e)
    m = re.search(r"(BAD|NO) \[b['\"](.*)['\"]\]$", text, re.S)
    return shown(f"server said {m.group(1)} {m.group(2)}" if m else text, 300)


def _drop(client: IMAPClient) -> None:
    try:
        client._imap.shutdown()
    except OSError:
        pass


_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.I)


def parse_appenduid(text: bytes | str) -> tuple[int, list[int]] | None:
    """(uidvalidity, uids) from an APPEND response's [APPENDUID v set] (RFC 4315), or None."""
    if isinstance(text, str):
        text = text.encode()
    m = _APPENDUID.search(text)
    if not m:
        return None
    return int(m.group(1)), expand_uidset(m.group(2).decode())


def uid_ranges(uids: Iterable[int]) -> str:
    """Compact IMAP sequence set: 1:3,7,9:10."""
    s = sorted(set(uids))
    parts = []
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        parts.append(str(s[i]) if i == j else f"{s[i]}:{s[j]}")
        i = j + 1
    return ",".join(parts)


def expand_uidset(s: str) -> list[int]:
    out: list[int] = []
    for part in s.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            lo, hi = min(a, b), max(a, b)
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    return out


def response_text(data) -> str:
    """The human part of a tagged response, for reports."""
    if isinstance(data, (list, tuple)):
        data = data[0] if data else b""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return str(data).strip()


def open_session(endpoint, *, role: str, address: str, password: str | None) -> IMAPClient:
    """Connected and logged in as ``role`` ("source" or "target"); closed again if the login fails."""
    client = connect(endpoint, role=role)
    try:
        (login_source if role == "source" else login_target)(client, endpoint, address, password)
    except BaseException:
        close(client)
        raise
    return client


def close(client: IMAPClient | None) -> None:
    if client is None:
        return
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - a dying connection must not mask the real outcome
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001
            pass
