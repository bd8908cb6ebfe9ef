"""Logging set-up: one event per line, key=value fields, to stderr.

Under systemd (JOURNAL_STREAM set) the journal stamps each line, so ours has no
timestamp.  A last-resort filter masks anything that looks like a credential,
in case a library logs a command line we did not write.  The formatter makes each
record exactly one line of printable text (a traceback included, its newlines written
as \\n): a folder name or server reply passed with %s can neither forge a line nor
reach the admin's terminal as an escape sequence.
"""

from __future__ import annotations

import logging
import os
import re
import sys

from .text import shown

# IMAP command words are matched in capitals only, so prose like "login refused for bob" survives.
_SECRET = re.compile(r"\b(LOGIN\s+\S+\s+|AUTHENTICATE\s+PLAIN\s+|(?i:password)[=:]\s*)(\S+)")


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = _SECRET.sub(lambda m: m.group(1) + "***", msg)
        if red != msg:
            record.msg, record.args = red, None
        return True


# A hostile server line logged whole is cut here; a traceback fits easily.
MAX_LINE = 16000


class LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record), MAX_LINE)


def setup(level: str = "info", stream=None) -> None:
    stream = stream or sys.stderr
    journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if journal else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(fmt, "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # imapclient logs every command at DEBUG (it redacts LOGIN, but not AUTHENTICATE continuations)
    logging.getLogger("imapclient").setLevel(logging.WARNING)
