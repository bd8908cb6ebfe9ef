"""Static files of the self-service page, kept in Python so that they ship with the package
(pyproject.toml installs modules, not data files).  Served under /static/."""

from __future__ import annotations

STYLE_CSS = b"""\
:root { color-scheme: light dark; --accent: #1f6feb; --bad: #c62828; --muted: #6b7280; }
* { box-sizing: border-box; }
body {
  margin: 0; padding: 1rem;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC",
        sans-serif;
}
main { max-width: 40rem; margin: 0 auto; }
header { display: flex; justify-content: space-between; align-items: baseline; gap: 1rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
a { color: var(--accent); }
label { display: block; font-weight: 600; margin-top: 1rem; }
input[type=text], input[type=email], input[type=password] {
  display: block; width: 100%; padding: .6rem .7rem; margin-top: .3rem;
  font: inherit; border: 1px solid #9ca3af; border-radius: .4rem;
}
button {
  margin-top: 1.25rem; padding: .7rem 1.2rem; font: inherit; font-weight: 600;
  color: #fff; background: var(--accent); border: 0; border-radius: .4rem; cursor: pointer;
}
button.secondary { color: var(--accent); background: transparent; border: 1px solid var(--accent); }
.note, .muted { color: var(--muted); font-size: .9rem; }
.error {
  border-left: 4px solid var(--bad); padding: .6rem .8rem; margin: 1rem 0;
  background: rgba(198, 40, 40, .08);
}
progress { width: 100%; height: 1.2rem; }
table { width: 100%; border-collapse: collapse; font-size: .95rem; }
th, td { text-align: left; padding: .35rem .4rem; border-bottom: 1px solid rgba(127, 127, 127, .3); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.path { word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; word-break: break-all; }
@media (max-width: 30rem) { th.opt, td.opt { display: none; } }
"""

# The employee page's times: the server writes UTC into <time datetime>; this shows them in the
# viewer's own zone (without JavaScript the UTC text stays, and says it is UTC).
LOCAL_TIME_JS = b"""\
"use strict";
document.querySelectorAll("time[data-local]").forEach(function (el) {
  var d = new Date(el.getAttribute("datetime"));
  if (isNaN(d.getTime())) { return; }
  function p(n) { return (n < 10 ? "0" : "") + n; }
  var off = -d.getTimezoneOffset(), sign = off < 0 ? "-" : "+";
  off = Math.abs(off);
  el.title = el.textContent;
  el.textContent = d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) +
    ":" + p(d.getMinutes()) + " UTC" + sign + p(Math.floor(off / 60)) + (off % 60 ? ":" + p(off % 60) : "");
});
"""
