"""The whole file: read the YAML strictly, parse every section, and describe the result."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import yaml

from ..netaddr import loopback_host
from ._base import ConfigError, _choice, _Errors, _got, _Section, _split_address, _text, UnknownDomain
from .database import Database, _database
from .dns import DNS, _dns
from .domains import Domain, _domains
from .endpoint import Endpoint
from .frontdoor import FrontDoor, _frontdoor
from .listen import Listen, TLSFiles, _listen, _tls
from .notice import Notice, _notice
from .scheduler import Scheduler, _scheduler
from .sync import SyncSettings, _sync
from .web import Admin, Web, _admin, _web


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    state_dir: str
    log_level: str
    sync: SyncSettings
    domains: Mapping[str, Domain]
    listen: Listen = field(default_factory=Listen)
    tls: TLSFiles | None = None
    frontdoor: FrontDoor = field(default_factory=FrontDoor)
    scheduler: Scheduler = field(default_factory=Scheduler)
    dns: DNS = field(default_factory=DNS)
    web: Web = field(default_factory=Web)
    admin: Admin = field(default_factory=Admin)
    notice: Notice = field(default_factory=Notice)
    database: Database = field(default_factory=Database)

    def domain_for(self, address: str) -> Domain:
        domain = _split_address(address)[1].lower()
        try:
            return self.domains[domain]
        except KeyError:
            raise UnknownDomain(domain, sorted(self.domains)) from None



def parse_config(data: object, *, path: str) -> Config:
    path = os.path.abspath(path)
    base_dir = os.path.dirname(path)
    if not isinstance(data, dict):
        what = "is empty" if data is None else f"must be a mapping at the top level (got {_got(data)})"
        raise ConfigError([f"{path}: config {what}"])
    errs = _Errors()
    s = _Section(errs, data, "", ("state_dir", "log_level", "sync", "domains", "listen", "tls", "frontdoor",
                                  "scheduler", "dns", "web", "admin", "notice", "database"))
    state_dir = os.path.normpath(os.path.join(base_dir, s.get("state_dir", _text, "./state")))
    log_level = s.get("log_level", _choice("debug", "info", "warning", "error"), "info")
    sync = _sync(errs, s.node.get("sync"), "sync", SyncSettings())
    domains = {}
    if s.has("domains"):
        domains = _domains(errs, s.node["domains"], base_dir, sync)
    else:
        errs.add("domains", "required key is missing (configure at least one domain)")
    listen = _listen(errs, s.node.get("listen"))
    tls = _tls(errs, s.node.get("tls"), base_dir)
    frontdoor = _frontdoor(errs, s.node.get("frontdoor"), listen, s.node.get("tls") is not None) if (
        s.has("frontdoor") or listen.imap or listen.imaps) else FrontDoor()
    scheduler = _scheduler(errs, s.node.get("scheduler"))
    dns = _dns(errs, s.node.get("dns"))
    web = _web(errs, s.node.get("web"))
    admin = _admin(errs, s.node.get("admin"))
    notice = _notice(errs, s.node.get("notice"))
    database = _database(errs, s.node.get("database"), base_dir)
    if listen.http and not s.has("tls") and not loopback_host(listen.http.host):
        errs.add("listen.http", f"plain HTTP on {listen.http} would send passwords across the network: add a "
                 "tls: section (the page is then HTTPS), or listen on a loopback address behind a TLS proxy")
    if listen.proxy_protocol and not frontdoor.trusted_proxies and \
            not any(e.startswith("frontdoor.trusted_proxies") for e in errs):
        errs.add("listen.proxy_protocol", "is on, but frontdoor.trusted_proxies is empty: list the load "
                 "balancers' addresses (CIDR), else every connection would be refused")
    if errs:
        raise ConfigError(errs)
    return Config(path=path, state_dir=state_dir, log_level=log_level, sync=sync,
                  domains=MappingProxyType(domains), listen=listen, tls=tls, frontdoor=frontdoor,
                  scheduler=scheduler, dns=dns, web=web, admin=admin, notice=notice, database=database)


class _StrictLoader(yaml.SafeLoader):
    """safe_load, except that a repeated key is an error: the first domain would vanish silently."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_config(path: str) -> Config:
    path = os.path.abspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config file: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: config file is not valid UTF-8"]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
        raise ConfigError([f"{where}: invalid YAML: {e.problem or e.context}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: invalid YAML: {e}"]) from None
    return parse_config(data, path=path)


def _hostport(e: Endpoint) -> str:
    return f"[{e.host}]:{e.port}" if ":" in e.host else f"{e.host}:{e.port}"


def summary(config: Config) -> str:
    """One line per domain, for ``mailsyncctl check-config``."""
    lines = []
    for d in config.domains.values():
        s, t, f = d.source, d.target, d.folders
        folders = "mirror" if f.layout == "mirror" else f"under {f.prefix!r}"
        extra = "".join(f", {n} {what}" for n, what in ((len(f.map), "mapped"), (len(f.exclude), "excluded")) if n)
        lines.append(f"{d.name}: source {_hostport(s)}/{s.security}/{s.protocol} -> "
                     f"target {_hostport(t)}/{t.security}/auth={t.auth}; folders {folders}{extra}")
    return "\n".join(lines)


