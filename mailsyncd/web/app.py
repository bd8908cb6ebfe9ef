"""The web listener's composition root: builds the site and mounts its pages (daemon.py calls make_site).

    /admin, /admin/...   the dashboard (admin.py)
    /api/...             the JSON API (api.py)
    /metrics             Prometheus (api.py, metrics.py)
    everything else      the self-service page (selfservice.py)

Every page stands on site.Shell (headers, Host and cross-site checks, replies) and shares one
access.Access (the admin password's throttle, the dashboard's sessions for /api/).
"""

from __future__ import annotations

import logging

from twisted.web import resource

from .access import Access, loopback_host
from .admin import Admin
from .api import ApiResource, MetricsResource
from .samples import Throughput
from .selfservice import SelfService
from .site import Site

logger = logging.getLogger("mailsyncd.web")

is_loopback = loopback_host      # daemon.py checks listen.http with it


class Root(resource.Resource):
    """Hands each request to the page mounted at the longest matching prefix: ``b"/api/"`` takes what
    starts with it, ``b"/admin"`` takes /admin and /admin/...; the rest goes to ``fallback``."""

    isLeaf = True

    def __init__(self, mounts: dict[bytes, resource.Resource], fallback: resource.Resource):
        super().__init__()
        self.mounts = sorted(mounts.items(), key=lambda kv: -len(kv[0]))
        self.fallback = fallback

    def page_for(self, path: bytes) -> resource.Resource:
        for prefix, page in self.mounts:
            if path == prefix or path.startswith(prefix if prefix.endswith(b"/") else prefix + b"/"):
                return page
        return self.fallback

    def render(self, request):
        return self.page_for(request.path).render(request)


def make_site(daemon) -> Site:
    """The web site for ``daemon`` (a mailsyncd.daemon.Daemon: gate, scheduler, store, state_pool, status).

    Whether a request came over HTTPS is decided per request (access.py), not here."""
    access = Access(daemon)
    selfservice = SelfService(daemon, access)
    dashboard = Admin(daemon, access, Throughput(daemon))
    access.dashboard = dashboard          # /api/ and /metrics accept the dashboard's sessions
    root = Root({b"/admin": dashboard, b"/api/": ApiResource(daemon, access),
                 b"/metrics": MetricsResource(daemon, access)}, selfservice)
    logger.info("event=web_sessions idle=%gs max=%gs", *selfservice.sessions.ages())
    return Site(root, daemon)
