"""`mailsyncctl detect DOMAIN`: find a domain's old mail server, and say how and why.

Tries provider presets (MX records), then RFC 6186 SRV records, then probes imap./mail.<domain>
(see :mod:`mailsyncd.providers`).  Prints every step tried, the decision, the provider's quirks
and where users get the password the provider accepts (app password / 授权码).

Exit status: 0 found, 1 nothing found (the steps tried and why each failed are listed),
2 bad command line.  Needs no config file.  Also runs alone: ``python -m mailsyncd.cli.detect``.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import textwrap

from ..text import json_text, shown

EXIT_FOUND, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2

_STEP_WORDS = {
    "preset": "provider preset, matched on the domain's MX records",
    "srv": "RFC 6186 SRV records",
    "probe": "probing: a live IMAP greeting and CAPABILITY",
}

DESCRIPTION = """\
Find DOMAIN's current (old) mail server, as `source: {host: auto}` does, and show how:
  1. provider presets matched on the domain's MX records (Tencent Exmail, NetEase, Alibaba,
     Google, Microsoft, ...; they also carry quirks and where to get the app password / 授权码)
  2. RFC 6186 SRV records (_imaps._tcp, _imap._tcp, _pop3s._tcp, _pop3._tcp)
  3. probing imap.DOMAIN and mail.DOMAIN on 993 (TLS) and 143 (STARTTLS): greeting and
     CAPABILITY only, certificates verified, no credentials sent
No config file is read."""

EPILOG = """exit codes:
  0  found (the decision and the steps that led to it are printed)
  1  nothing found (every step tried is listed with the reason it failed)
  2  bad command line
"""


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("domain", help="the mail domain (an address works too: its domain is used)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--dns-server", metavar="IP[:PORT]",
                   help="ask this DNS server (also to resolve probed hosts) instead of the system's; "
                        "IPv6 as [ADDR]:PORT")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="seconds per DNS look-up and per connection (default 5)")
    p.add_argument("--prefer", choices=["imap", "pop3"], default="imap",
                   help="protocol to pick when both are offered (default imap: POP3 sees only the inbox)")
    p.add_argument("--ca-file", metavar="FILE",
                   help="extra CA certificates (PEM) to accept when probing (default: the system's)")
    p.add_argument("--allow-private", action="store_true",
                   help="accept MX/SRV hosts on loopback, private or link-local addresses (refused by default)")


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``detect`` on an argparse subparsers object (``ap.add_subparsers(...)``)."""
    p = sub.add_parser("detect", help="find a domain's old mail server: MX presets, SRV records, probing",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return p


def parse_dns_server(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address -> (ip, port)."""
    t = text.strip()
    port = 53
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad DNS server {text!r}: use [IPv6]:PORT")
        if rest:
            port = _port(rest[1:], text)
    elif t.count(":") == 1:
        host, p = t.split(":")
        port = _port(p, text)
    else:
        host = t
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bad DNS server {text!r}: not an IP address") from None
    return host, port


def _port(s: str, text: str) -> int:
    if not s.isdigit() or not 1 <= int(s) <= 65535:
        raise ValueError(f"bad DNS server {text!r}: port must be 1..65535")
    return int(s)


def make_resolver(server: str | None, timeout: float):
    """A dnspython resolver: the given server only, or the system's configuration."""
    import dns.resolver
    if server is None:
        return None  # detect() uses the system configuration
    ip, port = parse_dns_server(server)
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [ip]
    r.port = port
    r.timeout = timeout
    r.lifetime = timeout
    return r


def _wrap(text: str, indent: str, width: int = 96) -> str:
    if sum("\u3000" <= c <= "\uffef" for c in text) * 5 > len(text):  # mostly CJK: no spaces to wrap at
        return indent + text
    return textwrap.fill(text, width=width, initial_indent=indent, subsequent_indent=indent + "  ")


def format_detection(d) -> str:
    lines = [f"{d.domain}: {d.protocol.upper()} {shown(d.host)}:{d.port} "
             f"({'implicit TLS' if d.security == 'tls' else 'STARTTLS'})",
             f"decided by: {_STEP_WORDS[d.step]}", "", "steps:"]
    lines += [_wrap(shown(r), "  ") for r in d.reasons]
    p = d.preset
    if p is not None:
        lines += ["", f"provider: {p.name} / {p.name_zh} (preset {p.key})"]
        servers = [f"{proto.upper()} {s}" for proto, s in (("imap", p.imap), ("pop3", p.pop3)) if s]
        lines.append("  servers: " + ", ".join(servers))
        lines.append("  send_id: " + ("yes: IMAP ID is sent before SELECT (the server requires it)" if p.send_id
                                      else "no (not required)"))
        lines.append("  max_connections: " + (str(p.max_connections) if p.max_connections is not None
                                              else "no preset value (config default)"))
        if p.app_password is not None:
            lines.append(f"  app_password: {p.app_password.name_en} / {p.app_password.name_zh}"
                         + (f" ({p.app_password.help_url})" if p.app_password.help_url else ""))
        if p.skip_folders:
            lines.append("  skip_folders: " + ", ".join(p.skip_folders))
        lines.append(_wrap("password: " + p.auth_hint_en, "  "))
        lines.append(_wrap("密码：" + p.auth_hint_zh, "  "))
    lines += ["", "config (the source endpoint this amounts to):", "  source:"]
    lines += [f"    {k}: {str(v).lower() if isinstance(v, bool) else shown(v)}"
              for k, v in d.endpoint_settings().items()]
    return "\n".join(lines)


def format_failure(e) -> str:
    lines = [f"{e.domain}: no mail server found", "", "steps tried:"]
    lines += [_wrap(shown(s), "  ") for s in e.steps]
    lines += ["", "Set the source's host, port and security in the config by hand "
                  "(or name a DNS server that knows the domain: --dns-server)."]
    return "\n".join(lines)


def cmd_detect(args) -> int:
    from ..providers import DetectionFailed, PresetError, detect

    timeout = getattr(args, "timeout", 5.0)
    if timeout is None or not timeout > 0:
        print(f"mailsyncctl detect: --timeout must be a positive number of seconds, not {timeout}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        resolver = make_resolver(getattr(args, "dns_server", None), timeout)
    except ValueError as e:
        print(f"mailsyncctl detect: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        found = detect(args.domain, resolver=resolver, timeout=timeout, prefer=getattr(args, "prefer", "imap"),
                       ca_file=getattr(args, "ca_file", None), allow_private=getattr(args, "allow_private", False))
    except DetectionFailed as e:
        print(json_text(e.to_dict(), indent=2) if getattr(args, "json", False)
              else format_failure(e))
        return EXIT_NOT_FOUND
    except PresetError as e:
        print(f"mailsyncctl detect: {e}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except ValueError as e:
        print(f"mailsyncctl detect: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(json_text(found.to_dict(), indent=2) if getattr(args, "json", False)
          else format_detection(found))
    return EXIT_FOUND


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mailsyncctl detect", description=DESCRIPTION, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(ap)
    return cmd_detect(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
