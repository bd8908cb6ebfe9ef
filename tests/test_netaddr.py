"""One loopback rule: the config's cleartext checks agree with the web pages' (mailsyncd/netaddr.py)."""

import copy

import pytest

from mailsyncd.config import ConfigError, parse_config
from mailsyncd.web.access import loopback_host

HOSTS = ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "localhost", "LocalHost.", "10.0.0.1",
         "::ffff:10.0.0.1", "mail.example.com", "localhost.example.com"]

BASE = {"domains": {"example.com": {
    "source": {"host": "127.0.0.1", "port": 10143, "security": "none"},
    "target": {"host": "127.0.0.1", "port": 20143, "security": "none"}}}}


def _cleartext_allowed(host: str) -> bool:
    data = copy.deepcopy(BASE)
    data["domains"]["example.com"]["source"]["host"] = host
    try:
        parse_config(data, path="/tmp/mailsyncd.yaml")
    except ConfigError as e:
        assert all("security" in err for err in e.errors), e.errors
        return False
    return True


@pytest.mark.parametrize("host", HOSTS)
def test_config_and_web_agree_on_loopback(host):
    assert _cleartext_allowed(host) == loopback_host(host)


def test_the_rule():
    from mailsyncd.netaddr import loopback_host as rule, loopback_ip
    assert [h for h in HOSTS if rule(h)] == ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "localhost",
                                             "LocalHost."]
    assert loopback_ip("::1%lo") and not loopback_ip("localhost") and not loopback_ip(None)
