"""`source: {host: auto}`: turn detections into concrete endpoints (blocking: DNS and probes)."""

from __future__ import annotations

import dataclasses
import logging
from types import MappingProxyType

from ..config import Config
from .steps import Detection, DetectionFailed, detect

logger = logging.getLogger("mailsyncd.autodetect")


def resolver_for(config: Config):
    """A resolver on the config's dns.nameservers, or None for the system's."""
    if not config.dns.nameservers:
        return None
    import dns.resolver
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [a.host for a in config.dns.nameservers]
    r.nameserver_ports = {a.host: a.port for a in config.dns.nameservers}
    r.timeout = r.lifetime = config.dns.timeout
    return r


def resolve(config: Config, *, detector=detect) -> tuple[Config, dict[str, Detection], dict[str, str]]:
    """The config with every ``host: auto`` source resolved.

    Returns (config, detections by domain, errors by domain).  A domain whose provider cannot be
    detected is left out of the returned config (its users cannot log in or sync until it is
    found), and the error lists every step tried.
    """
    found: dict[str, Detection] = {}
    errors: dict[str, str] = {}
    domains = dict(config.domains)
    for name, dom in config.domains.items():
        if not dom.source.auto:
            continue
        try:
            d = detector(name, prefer=dom.source.protocol, resolver=resolver_for(config),
                         timeout=config.dns.timeout, ca_file=dom.source.ca_file,
                         allow_private=config.dns.allow_private)
        except DetectionFailed as e:
            errors[name] = "; ".join(e.steps)
            logger.error("event=detect_failed domain=%s tried=%r", name, errors[name])
            del domains[name]
            continue
        found[name] = d
        settings = d.endpoint_settings()
        if dom.source.preset is not None:
            settings.pop("preset", None)      # the admin named the provider: that preset's quirks apply
        source = dataclasses.replace(dom.source, **settings)
        domains[name] = dataclasses.replace(dom, source=source)
        logger.info("event=detected domain=%s host=%s port=%d security=%s protocol=%s step=%s preset=%s why=%r",
                    name, d.host, d.port, d.security, d.protocol, d.step, d.preset.key if d.preset else "-",
                    "; ".join(d.reasons))
    if not found and not errors:
        return config, found, errors
    return dataclasses.replace(config, domains=MappingProxyType(domains)), found, errors
