"""CSV import of accounts: pure parsing and checking, no database.

The file is what an admin exports from Excel: UTF-8 with or without a BOM, or
GB18030/GBK; comma, semicolon or tab; English headers (target, source,
password) or the hosted products' Chinese ones (搬家账号, 待搬家账号,
待搬家账号密码).  Every row is checked and every problem reported with its
row number and column; the import is all or nothing.  A password never
appears in a message or a repr.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

HEADERS = {
    "target": ("target", "搬家账号"),
    "source": ("source", "待搬家账号"),
    "password": ("password", "待搬家账号密码"),
}
_ADDRESS = re.compile(r"[^\s@\"\\\x00-\x1f\x7f]{1,200}@[A-Za-z0-9\u0080-\uffff](?:[A-Za-z0-9\u0080-\uffff.-]{0,251}"
                      r"[A-Za-z0-9\u0080-\uffff])?")
MAX_ERRORS_SHOWN = 50


class ImportError_(Exception):
    """The file cannot be read at all (encoding, header): one message, nothing imported."""


@dataclass(frozen=True, slots=True)
class Row:
    line: int                 # the row's line number in the file (the header is line 1)
    target: str               # the account on the new server (lower-case)
    source: str               # the login on the old server (lower-case)
    domain: str
    password: str | None = field(default=None, repr=False)

    @property
    def plan(self) -> str:
        return "import" if self.password else "login"


@dataclass
class Parsed:
    rows: list[Row]
    errors: list[str]
    encoding: str
    delimiter: str
    language: str             # "en" | "zh": which headers the file uses


def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding name).  Refuses a file that mixes UTF-8 and another encoding."""
    if data.startswith(b"\xef\xbb\xbf"):
        data, bom = data[3:], True
    else:
        bom = False
    try:
        return data.decode("utf-8"), "utf-8-sig" if bom else "utf-8"
    except UnicodeDecodeError:
        pass
    lines = data.split(b"\n")
    utf8_lines, other_lines = [], []
    for i, ln in enumerate(lines, 1):
        if ln.isascii():
            continue
        try:
            ln.decode("utf-8")
            utf8_lines.append(i)
        except UnicodeDecodeError:
            other_lines.append(i)
    if utf8_lines and other_lines:
        raise ImportError_(
            f"the file mixes encodings: lines {_lines(utf8_lines)} are UTF-8 but lines {_lines(other_lines)} "
            "are not; save the whole sheet again as 'CSV UTF-8' (Excel) and re-import")
    if bom:
        raise ImportError_("the file starts with a UTF-8 BOM but is not valid UTF-8 "
                           f"(line {other_lines[0] if other_lines else '?'}); save it again as 'CSV UTF-8'")
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ImportError_(f"line {line}: neither UTF-8 nor GB18030/GBK; save the sheet as 'CSV UTF-8' "
                           "and re-import") from None


def _lines(nums: list[int]) -> str:
    shown = ", ".join(map(str, nums[:5]))
    return shown + (f" (and {len(nums) - 5} more)" if len(nums) > 5 else "")


def _delim_name(d: str) -> str:
    return {",": "a comma", ";": "a semicolon", "\t": "a tab"}[d]


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        return ","       # a single column: the header check will say what is missing
    return best


def _columns(header: list[str]) -> tuple[dict[str, int], str]:
    names = [h.strip().lower() for h in header]
    found: dict[str, int] = {}
    language = "en"
    for key, spellings in HEADERS.items():
        for sp in spellings:
            if sp in names:
                found[key] = names.index(sp)
                if sp != key:
                    language = "zh"
    missing = [k for k in ("target", "source") if k not in found]
    if missing:
        want = " / ".join(f"{HEADERS[k][0]} ({HEADERS[k][1]})" for k in missing)
        raise ImportError_(f"line 1: missing required column {want}; the header has: "
                           f"{', '.join(repr(h) for h in header) or 'nothing'}. Expected "
                           "'target,source,password' or '搬家账号,待搬家账号,待搬家账号密码'")
    return found, language


def parse(data: bytes, config, *, domain: str | None = None, allow_merge: bool = False) -> Parsed:
    """Read and check the whole file.  ``errors`` empty means every row can be imported."""
    text, encoding = decode(data)
    if not text.strip():
        raise ImportError_("the file is empty")
    first = text.split("\n", 1)[0]
    delim = _delimiter(first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(reader)
    except csv.Error as e:
        raise ImportError_(f"line 1: {e}") from None
    cols, language = _columns(header)
    rows: list[Row] = []
    errors: list[str] = []
    by_target: dict[str, Row] = {}
    only = domain.lower() if domain else None
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue        # blank lines, as Excel leaves at the end
            if len(values) > len(header) and any(v.strip() for v in values[len(header):]):
                # most likely an unquoted delimiter inside a password: never cut a password silently
                errors.append(f"row {line}: {len(values)} fields but the header has {len(header)}; a cell that "
                              f"contains {_delim_name(delim)} must be quoted")
                continue
            row, problems = _row(line, values, cols, config, only)
            if problems:
                errors += problems
                continue
            prev = by_target.get(row.target)
            if prev is not None:
                if prev.source == row.source:
                    errors.append(f"row {line}: duplicate of row {prev.line} (target {row.target})")
                elif not allow_merge:
                    errors.append(f"row {line}, column target: {row.target} is also the target of row "
                                  f"{prev.line} (source {prev.source}); merging two old mailboxes into one "
                                  "needs --allow-merge")
                else:
                    errors.append(f"row {line}, column target: merging {row.source} and {prev.source} into "
                                  f"{row.target} is not supported yet; import one of them now, the other "
                                  "after cutover with `mailsyncctl sync`")
                continue
            by_target[row.target] = row
            rows.append(row)
    except csv.Error as e:
        errors.append(f"row {reader.line_num}: {e}")
    return Parsed(rows, errors, encoding, delim, language)


def _row(line: int, values: list[str], cols: dict[str, int], config, only: str | None):
    problems: list[str] = []

    def cell(key: str) -> str:
        i = cols.get(key)
        return values[i].strip() if i is not None and i < len(values) else ""

    target, source = cell("target").lower(), cell("source").lower()
    i = cols.get("password")
    password = values[i] if i is not None and i < len(values) else ""
    password = password.strip("\r\n")
    for col, value in (("target", target), ("source", source)):
        if not value:
            problems.append(f"row {line}, column {col}: empty")
        elif not _ADDRESS.fullmatch(value):
            problems.append(f"row {line}, column {col}: {value[:80]!r} is not an email address")
    dom = None
    if not problems:
        dom_name = target.rpartition("@")[2]
        dom = config.domains.get(dom_name)
        if only and dom_name != only:
            problems.append(f"row {line}, column target: {target} is not in --domain {only}")
        elif dom is None:
            problems.append(f"row {line}, column target: domain {dom_name!r} is not in the config "
                            f"(known: {', '.join(sorted(config.domains))})")
    if password and any(c in password for c in "\r\n\0"):
        problems.append(f"row {line}, column password: contains a line break or NUL (the password is not shown)")
    if dom is not None and not problems:
        plan = "import" if password else "login"
        if not dom.allows(plan):
            what = ("has a password, but" if password else "has no password (the user would start the "
                    "migration at first login), but")
            problems.append(f"row {line}: {what} {dom.name} does not allow plan {plan!r} "
                            f"(plans: {', '.join(dom.plans)})")
    if problems:
        return None, problems
    return Row(line, target, source, dom.name, password or None), []
