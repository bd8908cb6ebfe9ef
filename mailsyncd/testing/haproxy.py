"""A throwaway HAProxy (Debian's /usr/sbin/haproxy) in TCP mode in front of mailsyncd nodes.

The config is written by :func:`haproxy_config` -- the same text README's "Running several nodes"
shows (tests/test_proxyproto.py checks that they match).  Each frontend listens on a free
127.0.0.1 port and spreads connections round-robin over its nodes with a PROXY protocol header
(``send-proxy-v2``, or ``send-proxy`` for v1); health checks are plain TCP connects that carry a v2
LOCAL header, which mailsyncd reads and closes.  HAProxy runs in the foreground (``-db``), as a
child of this process that the kernel stops when this process dies (PR_SET_PDEATHSIG), in a
temp dir; no system service is touched::

    with HAProxy(tmpdir, [Frontend("imaps", [("127.0.0.1", 9931), ("127.0.0.1", 9932)])]) as h:
        socket.create_connection(("127.0.0.1", h.port("imaps")))
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from .common import Server, free_ports, tail

HAPROXY = "/usr/sbin/haproxy"
START_TIMEOUT = 10.0


@dataclass
class Frontend:
    name: str                                   # imap, imaps, http, ...
    nodes: list[tuple[str, int]]                # the mailsyncd listeners behind it
    bind: str = "127.0.0.1:0"                   # port 0: the fixture picks a free one
    send_proxy: str = "send-proxy-v2"           # or "send-proxy" (v1)
    check: bool = True                          # TCP health checks (a v2 LOCAL header)
    extra: list[str] = field(default_factory=list)


def haproxy_config(frontends: list[Frontend], *, log: str = "stdout format raw local0 info") -> str:
    """The HAProxy config: TCP mode, round robin, PROXY header to every node."""
    out = ["# HAProxy in TCP mode in front of mailsyncd nodes (listen.proxy_protocol: true;",
           "# frontdoor.trusted_proxies must list the address HAProxy connects from).",
           "global",
           f"    log {log}",
           "    maxconn 4000",
           "",
           "defaults",
           "    mode tcp",
           "    log global",
           "    option tcplog",
           "    timeout connect 5s",
           "    timeout client 32m     # above frontdoor.idle_timeout (1860 s): mailsyncd closes first",
           "    timeout server 32m",
           "    timeout check 5s"]
    for f in frontends:
        out += ["",
                f"frontend {f.name}",
                f"    bind {f.bind}",
                f"    default_backend {f.name}_nodes",
                "",
                f"backend {f.name}_nodes",
                "    balance roundrobin",
                *(f"    {line}" for line in f.extra)]
        for i, (host, port) in enumerate(f.nodes, 1):
            addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            out.append(f"    server node{i} {addr} {f.send_proxy}" + (" check inter 2s" if f.check else ""))
    return "\n".join(out) + "\n"


def example_config() -> str:
    """README's "Running several nodes": three nodes behind one HAProxy, the template the tests run."""
    nodes = ("10.0.0.11", "10.0.0.12", "10.0.0.13")
    return haproxy_config([Frontend("imap", [(h, 143) for h in nodes], bind="0.0.0.0:143"),
                           Frontend("imaps", [(h, 993) for h in nodes], bind="0.0.0.0:993"),
                           Frontend("https", [(h, 8443) for h in nodes], bind="0.0.0.0:443")])


def haproxy_missing_reason() -> str | None:
    return None if os.access(HAPROXY, os.X_OK) else f"{HAPROXY} not found (Debian package haproxy)"


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)    # PR_SET_PDEATHSIG


class HAProxy(Server):
    def __init__(self, root: str, frontends: list[Frontend], name: str = "haproxy"):
        self.dir = os.path.join(root, name)
        self.frontends = frontends
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen | None = None
        self.config_path = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(self.dir, "haproxy.log")

    def port(self, frontend: str) -> int:
        return self.ports[frontend]

    def start(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        todo = [f for f in self.frontends if f.bind.endswith(":0")]
        for f, port in zip(todo, free_ports(len(todo))):
            f.bind = f"{f.bind.rsplit(':', 1)[0]}:{port}"
        self.ports = {f.name: int(f.bind.rsplit(":", 1)[1]) for f in self.frontends}
        with open(self.config_path, "w") as fh:
            fh.write(haproxy_config(self.frontends))
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", self.config_path], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c refused {self.config_path}:\n{check.stdout}{check.stderr}")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.config_path], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
                                         preexec_fn=_die_with_parent)
        finally:
            log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + START_TIMEOUT
        for port in self.ports.values():
            while not self._listening(port):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"haproxy did not start:\n{tail(self.log_path)}")
                time.sleep(0.02)

    @staticmethod
    def _listening(port: int) -> bool:
        # /proc/net/tcp: a LISTEN socket (state 0A) on the port; connecting would count as a client
        with open("/proc/net/tcp") as f:
            return any(line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
                       for line in f.readlines()[1:])

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


__all__ = ["Frontend", "HAProxy", "example_config", "haproxy_config", "haproxy_missing_reason"]
