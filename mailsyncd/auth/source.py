"""Is this the user's password?  Ask the source with a real login (blocking; runs in the auth pool)."""

from __future__ import annotations

import poplib
import ssl

from ..providers import quirks
from ..errors import AuthFailed, MailsyncError, not_now
from ..net import imap, popguard
from ..text import server_words

# APP_PASSWORD: refused, with the provider's words for "use the app password" (a WRONG that can say why)
OK, WRONG, UNAVAILABLE, APP_PASSWORD = "ok", "wrong", "unavailable", "app_password"

def _refused(endpoint, server_text: str, fallback: str = "") -> str:
    # Only the server's own words can ask for the app password (never our text, which names the user).
    # They come first: they may also say "try again", but mean "not this password".
    if quirks.wants_app_password(endpoint, server_text):
        return APP_PASSWORD
    return UNAVAILABLE if not_now(server_text or fallback) else WRONG


def check(endpoint, address: str, password: str) -> tuple[str, str]:
    """(OK | WRONG | APP_PASSWORD | UNAVAILABLE, reason for the log).  The reason never holds the password."""
    if endpoint.protocol == "pop3":
        return _check_pop3(endpoint, address, password)
    client = None
    try:
        client = imap.connect(endpoint, role="source")
        imap.login_source(client, endpoint, address, password)
        return OK, "source accepted"
    except AuthFailed as e:
        return _refused(endpoint, e.server_text, str(e)), str(e)
    except MailsyncError as e:
        return UNAVAILABLE, str(e)
    finally:
        imap.close(client)


def _check_pop3(endpoint, address: str, password: str) -> tuple[str, str]:
    where = f"source {endpoint.host}:{endpoint.port}"
    user = endpoint.login_name(address)
    conn = None
    try:
        try:
            if endpoint.security == "tls":
                conn = popguard.POP3_SSL(endpoint.host, endpoint.port, timeout=endpoint.timeout,
                                       context=imap.tls_context(endpoint))
            else:
                conn = popguard.POP3(endpoint.host, endpoint.port, timeout=endpoint.timeout)
                if endpoint.security == "starttls":
                    conn.stls(imap.tls_context(endpoint))
        except poplib.error_proto as e:
            return UNAVAILABLE, f"{where}: {_text(e)}"
        try:
            conn.user(user)
            conn.pass_(password)
        except poplib.error_proto as e:
            text = _text(e)
            result = _refused(endpoint, text)
            if result == UNAVAILABLE:
                return UNAVAILABLE, f"{where}: {text}"
            return result, f"{where}: login refused for {user}: {text}"
        return OK, "source accepted"
    except ssl.SSLError as e:
        return UNAVAILABLE, f"{where}: TLS failed: {e.reason or e}"
    except (TimeoutError, OSError) as e:
        return UNAVAILABLE, f"{where}: {e.strerror or e}"
    finally:
        if conn is not None:
            try:
                conn.quit()
            except (poplib.error_proto, OSError):
                pass


def _text(e: poplib.error_proto) -> str:
    arg = e.args[0] if e.args else b""
    return server_words(arg) if isinstance(arg, bytes) else str(arg)
