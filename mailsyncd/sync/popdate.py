"""INTERNALDATE for a message that has none (a POP3 source): from its Date: or Received: headers.

Pure: bytes in, a datetime out; a hostile header gives None, never an exception.
"""

from __future__ import annotations

import datetime as dt
from email.utils import parsedate_to_datetime

_HEADER_LIMIT = 1 << 20         # never look further than this for the end of the header block
_FUTURE_SLACK = dt.timedelta(days=2)


def header_block(raw: bytes) -> bytes:
    """The bytes before the first blank line (all of them if there is none, up to a bound)."""
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    # The first blank line is the first LF followed by LF or CRLF; two bytes.find scans (memchr speed),
    # ~15x faster than a regular expression tried at every byte (issue 16: CPU per message).
    end = raw.find(b"\n\r\n", 0, _HEADER_LIMIT)
    lf = raw.find(b"\n\n", 0, _HEADER_LIMIT if end < 0 else end + 1)
    if lf >= 0:
        end = lf
    if end < 0:
        return raw[:_HEADER_LIMIT]
    return raw[:end - 1 if end and raw[end - 1] == 13 else end]    # a CR before the LF is the line's end


def _fields(block: bytes) -> list[tuple[str, str]]:
    out: list[list[str]] = []
    for line in block.decode("latin-1").split("\n"):
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t"):
            if out:
                out[-1][1] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            out.append([name.strip().lower(), value.strip()])
    return [(n, v) for n, v in out]


def _when(text: str, now: dt.datetime) -> dt.datetime | None:
    try:
        d = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if d is None:
        return None
    if d.tzinfo is None:  # "-0000": zone unknown; RFC 5322 reads the time as UTC
        d = d.replace(tzinfo=dt.timezone.utc)
    try:
        if d.year < 1970 or d > now + _FUTURE_SLACK:  # targets refuse or misfile such dates
            return None
    except OverflowError:
        return None
    return d


def message_date(raw: bytes, now: dt.datetime | None = None) -> tuple[dt.datetime | None, str]:
    """(INTERNALDATE for the copy, where it came from: "date" | "received" | "none").

    Date: first; else the newest (topmost) Received: with a date after its last ';';
    else None, and the target stamps the time of the copy.  Dates before 1970 or
    more than two days ahead count as unparseable.  Only the header block is read.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    fields = _fields(header_block(raw))
    for name, value in fields:
        if name == "date":
            d = _when(value, now)
            if d is not None:
                return d, "date"
            break  # only the first Date: counts
    for name, value in fields:
        if name == "received" and ";" in value:
            d = _when(value.rsplit(";", 1)[1], now)
            if d is not None:
                return d, "received"
    return None, "none"


__all__ = ["header_block", "message_date"]
