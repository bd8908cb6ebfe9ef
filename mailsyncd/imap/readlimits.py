"""How much a server may send us in answer to one command, decided before we read it.

imaplib reads a literal whole, whatever its size: a source announcing an 86-byte
message and sending 300 MB would take that much memory.  The guarded client asks
``ReadLimits.literal`` before reading each ``{n}`` and ``ReadLimits.line`` for
each line; both raise instead of letting the bytes in.  Pure: no sockets here.
"""

from __future__ import annotations

import re

from ..errors import MessageTooLarge, ProtocolError

LINE_BUDGET = 128 * 1024**2     # response lines per command: a FLAGS scan of a million messages fits
_UID = re.compile(rb"\bUID (\d{1,10})\b", re.I)


def slack(announced: int) -> int:
    """What a literal may exceed RFC822.SIZE by.

    Some servers count stored LF line ends but send CRLF: one byte per line, about 1/60
    of a text message; 1/16 covers lines of 16 bytes and more.
    """
    return 64 * 1024 + announced // 16


class ReadLimits:
    def __init__(self, cap: int):
        self.cap = cap                      # sync.max_message_size, lowered to the target's APPENDLIMIT
        self._sizes: dict[int, int] | None = None
        self._literals_left: int | None = None
        self._lines = 0
        self._budget = LINE_BUDGET
        self.next_budget: int | None = None   # the next command's line budget, when it can be told smaller

    def start(self, sizes: dict[int, int] | None = None) -> None:
        """A new command.  ``sizes``: the RFC822.SIZE the server announced for the UIDs asked for."""
        self._sizes = sizes or None
        self._literals_left = (sum(min(self.cap, s + slack(s)) for s in sizes.values()) if sizes else None)
        self._lines = 0
        self._budget, self.next_budget = min(self.next_budget or LINE_BUDGET, LINE_BUDGET), None

    def literal(self, size: int, line: bytes) -> None:
        """Before reading a literal of ``size`` bytes announced at the end of ``line``."""
        m = _UID.search(line or b"")
        uid = int(m.group(1)) if m else None
        announced = None
        if self._sizes is not None:
            if uid in self._sizes:
                announced = self._sizes[uid]
            elif len(self._sizes) == 1:
                uid, announced = next(iter(self._sizes.items()))
            else:   # not a message we asked for, or no UID before the literal: the largest we expect
                uid, announced = None, max(self._sizes.values())
        limit = self.cap if announced is None else min(self.cap, announced + slack(announced))
        if self._literals_left is not None and size <= limit and size > self._literals_left:
            limit = self._literals_left
        if size > limit:
            said = f"RFC822.SIZE said {announced}" if announced is not None else "no size announced"
            raise MessageTooLarge(
                f"message UID {uid if uid is not None else '?'} is {size} bytes ({said}; the limit is {limit}): "
                "not read, connection dropped", uid=uid, announced=announced, actual=size, limit=limit)
        if self._literals_left is not None:
            self._literals_left -= size

    def line(self, n: int) -> None:
        self._lines += n
        if self._lines > self._budget:
            raise ProtocolError(f"the server sent more than {self._budget} bytes of response lines to one "
                                "command: connection dropped")
