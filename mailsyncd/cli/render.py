"""Terminal output for mailsyncctl: a progress bar on a TTY, plain lines otherwise, and report tables."""

from __future__ import annotations

import sys
import threading
import time

from ..status import size_text as human_bytes   # the one size format; the name cli/ctl.py imports
from ..store import FolderReport
from ..sync.progress import Progress
from ..text import shown


class ProgressView:
    """Render a Progress: tqdm on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, stream=None, *, interval: float = 2.0, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self._last = 0.0
        self._lock = threading.Lock()
        self._bar = None

    def __call__(self, p: Progress) -> None:
        with self._lock:
            if self.tty:
                self._tty(p)
            elif time.monotonic() - self._last >= self.interval:
                self._last = time.monotonic()
                print(p.line(), file=self.stream, flush=True)

    def _tty(self, p: Progress) -> None:
        if self._bar is None:
            from tqdm import tqdm
            self._bar = tqdm(total=p.total, unit="msg", file=self.stream, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} msgs [{elapsed}<{remaining}, {postfix}]")
        bar = self._bar
        bar.total = max(p.total, p.done)
        bar.n = p.done
        folders = shown(", ".join(sorted(p.current)), 40)
        bar.set_postfix_str(f"{human_bytes(p.bytes)}, {p.rate:.0f} msg/s {folders}", refresh=False)
        bar.refresh()

    def close(self, p: Progress) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.n = p.done
                self._bar.close()
                self._bar = None
            elif not self.tty:
                print(p.line(), file=self.stream, flush=True)


def report_table(reports: list[FolderReport], *, with_pass: bool = True) -> str:
    # "on target": the messages of this source folder on the target (the UID map); "already there":
    # the target folder's other messages, once per target folder (a merged one has several rows)
    head = ["folder", "target", "source", "on target", "already there", "copied", "present", "skipped", "bytes",
            "secs", "status"]
    rows = []
    already: dict[str, int] = {}
    for r in reports:
        status = "ok" if not r.error and not r.skipped and not r.altered else (
            "FAILED: " + shown(r.error) if r.error else "skipped msgs" if r.skipped else "altered msgs")
        first = r.target_name not in already
        if first:
            already[r.target_name] = r.already_there or 0
        rows.append([shown(r.path), shown(r.target_name), _n(r.source_count), _n(r.target_count),
                     (_n(r.already_there) if first else "\""), str(r.copied),
                     str(r.present), str(r.skipped), human_bytes(r.bytes), f"{r.seconds:.1f}", status])
    tot = [sum(getattr(r, k) or 0 for r in reports) for k in ("source_count", "target_count", "copied",
                                                               "present", "skipped", "bytes")]
    rows.append(["TOTAL", "", str(tot[0]), str(tot[1]), str(sum(already.values())), str(tot[2]), str(tot[3]),
                 str(tot[4]), human_bytes(tot[5]), "", ""])
    if not with_pass:
        head, rows = head[:-3] + head[-1:], [r[:-3] + r[-1:] for r in rows]
    widths = [max(_w(x) for x in col) for col in zip(head, *rows)]
    out = [_fmt(head, widths), _fmt(["-" * w for w in widths], widths)]
    out += [_fmt(r, widths) for r in rows]
    return "\n".join(out)


def deletion_lines(reports: list[FolderReport]) -> list[str]:
    """sync.deletions: mirror: what each folder expunged on the target, and why it held any back."""
    out = []
    for r in reports:
        if r.deleted:
            out.append(f"deleted {r.deleted}: folder={shown(r.path)} (expunged at the source)")
        if r.held:
            out.append(f"deletions held back: folder={shown(r.path)}: {shown(r.held)}")
    return out


def _n(v) -> str:
    return "?" if v is None else str(v)


def _w(s: str) -> int:
    # East Asian wide characters take two columns on a terminal
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _fmt(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c + " " * (w - _w(c)) for c, w in zip(cells, widths)).rstrip()
