"""How the dashboard shows numbers, times, sizes and throughput (admin.js formats the same way).

Plain functions of values and a language, so the HTML builders stay free of arithmetic.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from ...status import size_text
from ..i18n import w
from ..site import esc


def num(n) -> str:
    return "" if n is None else f"{int(n):,}"


def duration(seconds: float | None, lang: str) -> str:
    """``2 h 05 min`` / ``2 小时 05 分钟``; admin.js formats the same way."""
    if seconds is None:
        return w(lang, "none")
    s = max(0, round(seconds))
    sep = "" if lang == "zh" else " "
    if s < 60:
        return f"{s}{sep}{w(lang, 's')}"
    m = s // 60
    if m < 60:
        return f"{m}{sep}{w(lang, 'min')}"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}{sep}{w(lang, 'h')} {m:02d}{sep}{w(lang, 'min')}"
    d, h = divmod(h, 24)
    return f"{d}{sep}{w(lang, 'd')} {h}{sep}{w(lang, 'h')}"


def rate(per_second: float | None, lang: str) -> str:
    if per_second is None:
        return w(lang, "none")
    return f"{round(per_second * 60):,}{w(lang, 'per_min')}"


def when(ts: float | None, lang: str = "en") -> str:
    """A time of day on the server's clock, with its UTC offset."""
    if not ts:
        return w(lang, "never")
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(ts))


def byte_size(n: int | None) -> str:
    return size_text(n, "")


def fact(label: str, value_html: str, attrs: str = "") -> str:
    """One <dt>/<dd> pair; ``value_html`` is already escaped."""
    return f'<dt>{esc(label)}</dt><dd{" " + attrs if attrs else ""}>{value_html}</dd>'


def table_head(lang: str, *cols: tuple[str, str]) -> str:
    """The start of a scrollable table: (word key, class) per column."""
    cells = "".join(f'<th class="{cls}">{esc(w(lang, key))}</th>' if cls else f'<th>{esc(w(lang, key))}</th>'
                    for key, cls in cols)
    return f'<div class="scroll"><table><thead><tr>{cells}</tr></thead><tbody>'


def account_url(address: str) -> str:
    return "/admin/accounts/" + quote(address, safe="@")


def sparkline(rates: list[float | None], width: int = 300, height: int = 60) -> str:
    """A small inline SVG line (no style attributes: the CSP allows none), for pages without script."""
    pts = [r for r in rates if r is not None]
    if len(pts) < 2:
        return ""
    top = max(pts) or 1.0
    n = len(pts)
    coords = " ".join(f"{i * width / (n - 1):.1f},{height - 2 - (v / top) * (height - 4):.1f}"
                      for i, v in enumerate(pts))
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" preserveAspectRatio="none" aria-hidden="true">'
            f'<polyline points="{coords}" fill="none" stroke="currentColor" stroke-width="2" '
            'vector-effect="non-scaling-stroke"/></svg>')
