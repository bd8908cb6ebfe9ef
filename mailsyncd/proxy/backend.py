"""The connection to the target: log in on the user's behalf, then carry bytes."""

from __future__ import annotations

import logging

from twisted.internet import defer, endpoints, protocol

from .. import __version__
from ..imap.targetlogin import Done, Failed, Send, StartTLS, TargetLogin
from . import tls

logger = logging.getLogger("mailsyncd.proxy")


class TargetFailed(Exception):
    def __init__(self, kind: str, detail: str):
        self.kind, self.detail = kind, detail
        super().__init__(f"{kind}: {detail}")


class TargetProtocol(protocol.Protocol):
    """Runs a TargetLogin, then relays everything to ``peer`` (the client's protocol)."""

    def take_early(self) -> bytes:
        """What arrived after the login and before the splice (and let the target go on)."""
        data, self.early = b"".join(self.early), []
        if data and self.transport is not None:
            self.transport.resumeProducing()
        return data

    def __init__(self, login: TargetLogin, endpoint):
        self.login = login
        self.endpoint = endpoint
        self.ready: defer.Deferred = defer.Deferred(self._cancel)
        self.peer = None
        self.early: list[bytes] = []   # what the target sends between its login's OK and the splice

    def _cancel(self, _d) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.from_target(data)
            return
        if self.login is None:
            # logged in, but the client side is not spliced yet (its answer may wait on the reactor):
            # keep it for the splice, in order; a target that floods meanwhile is paused, not buffered
            self.early.append(data)
            if sum(map(len, self.early)) > 1 << 20:
                self.transport.pauseProducing()
            return
        for action in self.login.receive(data):
            if isinstance(action, Send):
                self.transport.write(action.data)
            elif isinstance(action, StartTLS):
                self.transport.startTLS(tls.client_options(self.endpoint))
            elif isinstance(action, Done):
                self.login = None      # drop the secret as soon as it is no longer needed
                self.ready.callback((self, action.capabilities, action.leftover))
                return
            elif isinstance(action, Failed):
                self.transport.loseConnection()
                if not self.ready.called:
                    self.ready.errback(TargetFailed(action.kind, action.detail))
                return

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if not self.ready.called:
            self.ready.errback(TargetFailed("unavailable", f"connection lost: {reason.getErrorMessage()}"))
        if self.peer is not None:
            self.peer.target_lost()


@defer.inlineCallbacks
def connect(reactor, endpoint, address: str, password: str, client_ip: str, client_port: int,
            master_password: str | None = None):
    """Log in to ``endpoint`` as ``address``.  Fires (TargetProtocol, capabilities, leftover bytes).

    ``master_password``: for ``auth`` other than "same", read at start/reload (config.MasterPasswords).
    """
    secret = password if endpoint.auth == "same" else master_password
    if secret is None:
        raise TargetFailed("unavailable", f"no master password loaded for {endpoint.host}")
    login = TargetLogin(
        mode=endpoint.auth, user=endpoint.login_name(address), secret=secret,
        master_user=endpoint.master_user, separator=endpoint.master_separator,
        starttls=endpoint.security == "starttls",
        id_fields={"name": "mailsyncd", "version": __version__,
                   "x-originating-ip": client_ip, "x-originating-port": str(client_port)}
        if endpoint.send_id else None)
    proto = TargetProtocol(login, endpoint)
    ep = endpoints.HostnameEndpoint(reactor, endpoint.host, endpoint.port, timeout=endpoint.timeout)
    if endpoint.security == "tls":
        ep = endpoints.wrapClientTLS(tls.client_options(endpoint), ep)
    try:
        yield endpoints.connectProtocol(ep, proto)
    except Exception as e:
        raise TargetFailed("unavailable", f"cannot connect to {endpoint.host}:{endpoint.port}: "
                           f"{type(e).__name__}") from None
    proto.ready.addTimeout(endpoint.timeout, reactor)
    try:
        result = yield proto.ready
    except defer.TimeoutError:
        raise TargetFailed("unavailable", f"no login answer within {endpoint.timeout:g}s") from None
    return result
