"""``node:``: this daemon's name and its work leases, when several nodes share one database."""

import os
import re
import socket
from dataclasses import dataclass

from ._base import _Errors, _Invalid, _positive, _Section


@dataclass(frozen=True, slots=True)
class Node:
    name: str = ""                 # unique in a cluster; "" until parsed: the host name
    lease_seconds: float = 60.0    # a pass's lease: another node takes the account over once it expires
    heartbeat: float = 15.0        # how often leases are renewed (and the node's row touched)


def _node_name(v):
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", v):
        raise _Invalid("must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return v


def default_name() -> str:
    return socket.gethostname().split(".")[0] or "mailsyncd"


def _node(errs: _Errors, node: object) -> Node:
    s = _Section(errs, node, "node", ("name", "lease_seconds", "heartbeat"))
    name = s.get("name", _node_name, None) or default_name()
    lease = s.get("lease_seconds", _positive(86400), 60.0)
    heartbeat = s.get("heartbeat", _positive(86400), None)
    if heartbeat is None:
        heartbeat = lease / 4
    elif heartbeat * 2 > lease:
        # one missed renewal must not lose the lease
        errs.add("node.heartbeat", f"must be at most half of node.lease_seconds ({lease:g}) (got {heartbeat:g})")
    return Node(name=name, lease_seconds=lease, heartbeat=heartbeat)


def pid_alive(pid) -> bool:
    """Is process ``pid`` of this machine alive?  (EPERM: alive, another user's.)"""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError, OverflowError):
        return True
    return True
