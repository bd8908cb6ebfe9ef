"""The folder you open goes next: the front door's part (issue 14, item 3).

After login the relay shows the client's bytes to imap.clientcmds.ClientCommands.  When the client
opens a mailbox, the relay holds the stream from that command's last byte (its LF: the server has not
got the command yet) while it asks the scheduler what copying that folder would take:

* nothing (complete, not a source folder, not syncing): forward at once;
* a few messages (under ``frontdoor.copy_on_open`` and under HOLD_ESTIMATE seconds at the account's
  copy rate): focus the folder and hold until its copy is done or ``copy_on_open_deadline`` passes,
  whatever the source does; the held bytes then go on unchanged, in order;
* more: focus it, forward at once, and add one ``* OK [ALERT]`` line.  The line goes in between two
  complete server responses (imap.clientcmds.ResponseBoundaries), so the server's stream stays whole
  and the line comes before the server's reply to the SELECT, which has not been sent yet;
* not known yet (a folder never copied): focus it and hold until the pass has planned and says.

Nothing else is ever held, and after COMPRESS nothing is looked at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..imap.clientcmds import ClientCommands, Opened, ResponseBoundaries
from ..status import folder_alert_text

logger = logging.getLogger("mailsyncd.proxy")

HOLD_ESTIMATE = 3.0       # seconds: what is left must be expected to take less than this to be waited for
MAX_HELD = 256 * 1024     # bytes a client may send behind a held SELECT before we stop reading it


def decide(left: int | None, rate: float | None, limit: int) -> str:
    """pass: forward; hold: wait for the copy; alert: forward with the ALERT; wait: not known yet."""
    if left is None:
        return "wait"
    if left == 0:
        return "pass"
    if left < limit and (not rate or left / rate < HOLD_ESTIMATE):
        return "hold"
    return "alert"


@dataclass(eq=False)
class _Hold:
    opened: Opened
    buffer: bytearray            # the command's LF (already read), then bytes not read yet
    started: float
    timer: object = None
    left: int | None = None
    paused: bool = False
    verdict: str = "wait"


class OpenFolderWatch:
    def __init__(self, session, server_leftover: bytes = b""):
        self.s = session             # the FrontDoor: transport, target, f (factory), config, user
        self.client = ClientCommands()
        self.server = ResponseBoundaries()
        self.server.feed(server_leftover)
        self.hold: _Hold | None = None
        self.alert: bytes | None = None
        self._feeding = False        # from_client's loop is running
        self._later = b""            # what a hold released inside that loop gave back to it

    @property
    def _fd(self):
        return self.s.config.frontdoor

    # -- client -> target ---------------------------------------------------------------
    def from_client(self, data: bytes) -> None:
        h = self.hold
        if h is not None:
            h.buffer += data
            if len(h.buffer) > MAX_HELD:
                # every time, not once: the relay's flow control (the target's registerProducer) may have
                # resumed the client meanwhile, and one resumeProducing undoes any number of pauses
                h.paused = True
                self.s.transport.pauseProducing()
            return
        if self._feeding:
            # a hold released at once, inside the loop below: the loop goes on with the rest (recursing
            # once per pipelined SELECT would exhaust the stack and lose the stream)
            self._later += data
            return
        self._feeding = True
        try:
            while data:
                if self.client.stopped:
                    self.s.to_target(data)
                    return
                opened, n = self.client.feed(data)
                if opened is None:
                    self.s.to_target(data)
                    return
                self.s.to_target(data[:n - 1])
                self._begin(opened, data[n - 1:])
                if self.hold is not None:
                    return               # the rest is in the hold's buffer
                data, self._later = self._later, b""
        finally:
            self._feeding = False

    def _begin(self, opened: Opened, rest: bytes) -> None:
        reactor = self.s.f.reactor
        h = self.hold = _Hold(opened, bytearray(rest), reactor.seconds())
        h.timer = reactor.callLater(self._fd.copy_on_open_deadline, self._release, h, "deadline")
        if self._fd.copy_on_open == 0:
            self._release(h, "off")
            return
        d = self.s.f.scheduler.folder_left(self.s.user, opened.mailbox)
        d.addCallback(self._looked, h)
        d.addErrback(self._failed, h)

    def _looked(self, found, h: _Hold) -> None:
        if self.hold is not h:
            return
        if found is None:
            h.verdict = "pass"
            self._release(h, "complete")
            return
        key, h.left = found
        d = self.s.f.scheduler.focus(self.s.user, key, reason="open", on_left=lambda n: self._learned(h, n))
        d.addCallback(lambda result: self._release(h, f"copy {result.state}"))
        d.addErrback(self._failed, h)
        self._judge(h)

    def _learned(self, h: _Hold, left: int) -> None:
        if self.hold is h:
            h.left = left
            self._judge(h)

    def _judge(self, h: _Hold) -> None:
        h.verdict = decide(h.left, self.s.f.scheduler.copy_rate(self.s.user), self._fd.copy_on_open)
        if h.verdict == "pass":
            self._release(h, "complete")
        elif h.verdict == "alert":
            self._alert(h.left)
            self._release(h, "large")

    def _failed(self, failure, h: _Hold) -> None:
        logger.error("event=open_folder_error user=%s error=%r", self.s.user, failure.getErrorMessage())
        self._release(h, "error")

    def _release(self, h: _Hold, why: str) -> None:
        if self.hold is not h:
            return
        self.hold = None
        if h.timer is not None and h.timer.active():
            h.timer.cancel()
        if why == "deadline" and h.left:
            self._alert(h.left)
        held = self.s.f.reactor.seconds() - h.started
        logger.info("event=open_folder user=%s folder=%r verb=%s left=%s verdict=%s held=%.3fs why=%r",
                    self.s.user, h.opened.mailbox, h.opened.verb, h.left, h.verdict, held, why)
        if self.s.target is None:
            return
        buf = bytes(h.buffer)
        self.s.to_target(buf[:1])
        if h.paused:
            self.s.transport.resumeProducing()
        self.from_client(buf[1:])

    def close(self) -> None:
        h, self.hold = self.hold, None
        if h is not None and h.timer is not None and h.timer.active():
            h.timer.cancel()

    # -- target -> client ------------------------------------------------------------------
    def _alert(self, left: int) -> None:
        line = b"* OK [ALERT] " + folder_alert_text(left).encode() + b"\r\n"
        if self.server.at_boundary:
            self.s.to_client(line)
        else:
            self.alert = line            # at the end of the response in progress

    def from_target(self, data: bytes) -> None:
        if self.client.stopped:
            self.alert = None            # COMPRESS: the server's stream is no longer ours to read
            self.s.to_client(data)
            return
        k = self.server.feed(data)
        if self.alert is None or k is None:
            self.s.to_client(data)
            return
        line, self.alert = self.alert, None
        self.s.to_client(data[:k] + line + data[k:])
