"""Man pages and shell completion, generated -- never written by hand, so they cannot disagree with
the program: mailsyncd(8) and mailsyncctl(1) from the argparse parsers (argparse-manpage),
mailsyncd.yaml(5) from the commented reference config etc/mailsyncd.yaml, and bash/zsh completion
(shtab).  Build-time only (the `docs` extra): ``python -m mailsyncd.docbuild OUTDIR`` or
scripts/build-docs.sh writes OUTDIR/man/ and OUTDIR/completion/."""

from __future__ import annotations

import argparse
import os
import re
import sys

from . import __version__

PROJECT = "mailsyncd"
_KEY_LINE = re.compile(r"^(?:# ?)?([a-z_]+):")     # a top-level key, set or commented out


def _roff(text: str) -> str:
    """One line of text made safe for roff: a backslash printed as such, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def cli_manpage(parser: argparse.ArgumentParser, section: int, summary: str, see_also: str) -> str:
    from argparse_manpage.manpage import Manpage
    page = Manpage(parser, {"project_name": PROJECT, "version": __version__, "manual_section": section,
                            "manual_title": "mailsyncd manual", "description": summary})
    text = str(page)
    return text.rstrip("\n") + f"\n.SH \"SEE ALSO\"\n{see_also}\n"


def config_sections(yaml_text: str) -> list[tuple[str | None, list[str], list[str]]]:
    """The reference config cut into (top-level key or None, its prose, its example lines).  A section
    starts after a blank line or at a key written at column 0; its prose is the comment block at
    column 0 before the key's line (set or commented out); from that line on, the YAML verbatim."""
    chunks: list[list[str]] = []
    for chunk in re.split(r"\n\s*\n", yaml_text.strip("\n")):
        lines = chunk.split("\n")
        start = 0
        for i, ln in enumerate(lines):
            if i and re.match(r"[a-z_]+:", ln) and any(_KEY_LINE.match(x) for x in lines[start:i]):
                head = i
                while head > start and lines[head - 1].startswith("#") and not _KEY_LINE.match(lines[head - 1]):
                    head -= 1
                chunks.append(lines[start:head])
                start = head
        chunks.append(lines[start:])
    out = []
    for lines in chunks:
        at = next((i for i, ln in enumerate(lines) if _KEY_LINE.match(ln)), len(lines))
        prose = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines[:at]]
        out.append((_KEY_LINE.match(lines[at]).group(1) if at < len(lines) else None, prose, lines[at:]))
    return out


def _prose(lines: list[str]) -> list[str]:
    """Comment prose: filled, except indented lines (lists, examples), which keep their lines."""
    out, verbatim = [".PP"], False
    for ln in lines:
        indented = ln.startswith(" ")
        if indented != verbatim:
            out.append(".nf" if indented else ".fi")
            verbatim = indented
        out.append(_roff(ln))
    if verbatim:
        out.append(".fi")
    return out


def config_manpage(yaml_text: str, date: str) -> str:
    out = [f'.TH MAILSYNCD.YAML 5 "{date}" "{PROJECT} {__version__}" "mailsyncd manual"',
           ".SH NAME", "mailsyncd.yaml \\- the mailsyncd configuration file",
           ".SH SYNOPSIS", "/etc/mailsyncd/mailsyncd.yaml", ".SH DESCRIPTION"]
    keys_started = False
    for key, prose, example in config_sections(yaml_text):
        if key is not None and not keys_started:
            out.append(".SH KEYS")
            keys_started = True
        if key is not None:
            out.append(f".SS {key}")
        if any(ln.strip() for ln in prose):
            out += _prose(prose)
        if example:
            out += [".PP", ".RS 4", ".nf"] + [_roff(ln) for ln in example] + [".fi", ".RE"]
    out += ['.SH "SEE ALSO"', "\\fBmailsyncd\\fR(8), \\fBmailsyncctl\\fR(1)"]
    return "\n".join(out) + "\n"


def _date() -> str:
    import time
    when = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))     # reproducible builds set it
    return time.strftime("%Y-%m-%d", time.gmtime(when))


def build(outdir: str, reference_config: str) -> list[str]:
    """Write the man pages and completions under ``outdir``; the paths written."""
    import shtab

    from .cli import ctl, daemon
    man, comp = os.path.join(outdir, "man"), os.path.join(outdir, "completion")
    os.makedirs(man, exist_ok=True)
    os.makedirs(comp, exist_ok=True)
    with open(reference_config, encoding="utf-8") as f:
        yaml_text = f.read()
    files = {
        os.path.join(man, "mailsyncd.8"): cli_manpage(
            daemon.build_parser(), 8, "the mailbox migration daemon: IMAP front door and background copy",
            "\\fBmailsyncctl\\fR(1), \\fBmailsyncd.yaml\\fR(5), \\fBsystemd.service\\fR(5)"),
        os.path.join(man, "mailsyncctl.1"): cli_manpage(
            ctl.build_parser(), 1, "administer mailsyncd: check the config, run and inspect migrations",
            "\\fBmailsyncd\\fR(8), \\fBmailsyncd.yaml\\fR(5)"),
        os.path.join(man, "mailsyncd.yaml.5"): config_manpage(yaml_text, _date()),
    }
    for prog, parser in (("mailsyncctl", ctl.build_parser()), ("mailsyncd", daemon.build_parser())):
        files[os.path.join(comp, "bash", prog)] = shtab.complete(parser, shell="bash")
        files[os.path.join(comp, "zsh", f"_{prog}")] = shtab.complete(parser, shell="zsh")
    for path, text in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return sorted(files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mailsyncd.docbuild",
                                 description="Write the man pages and shell completions into OUTDIR/man and "
                                             "OUTDIR/completion.")
    ap.add_argument("outdir")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "etc", "mailsyncd.yaml"),
                    help="the commented reference config (default: etc/mailsyncd.yaml of the source tree)")
    args = ap.parse_args(argv)
    for path in build(args.outdir, args.config):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
