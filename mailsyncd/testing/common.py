"""What the Dovecot, Courier and Cyrus test servers share: free ports, a test certificate, the
supervisor process that stops a server when its owner dies, and the "is it up?" checks."""

from __future__ import annotations

import imaplib
import os
import socket
import subprocess
import sys
from pathlib import Path


class LoginRefused(Exception):
    """The server answered the test login with NO: its configuration is wrong, waiting won't help."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, close)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` different free ports: all are held open while picking, so the kernel cannot hand out
    one twice (two listeners of one server on the same port make it refuse to start)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def make_test_cert(dirpath: str, cn: str = "localhost") -> tuple[str, str]:
    """Write a self-signed certificate + key for ``cn``, localhost and 127.0.0.1 (SAN).

    Returns ``(certfile, keyfile)`` (PEM, key unencrypted, 0600).  The certificate doubles as
    its own CA: ``ssl.create_default_context(cafile=certfile)`` verifies the server.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    dns = [cn] if cn == "localhost" else [cn, "localhost"]
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        # CA:TRUE + keyCertSign so that it is a valid trust anchor even under
        # VERIFY_X509_STRICT (Python >= 3.13 default), and serverAuth for the TLS handshake.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = d / f"{cn}.crt", d / f"{cn}.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return str(certfile), str(keyfile)


def make_traversable(path: str) -> None:
    """Give every ancestor of ``path`` the search bit for others (e.g. pytest's 0700
    /tmp/pytest-of-root) so that the unprivileged server processes can reach it."""
    p = Path(path)
    for d in [p, *p.parents]:
        st = d.stat()
        if not st.st_mode & 0o001:
            os.chmod(d, (st.st_mode & 0o7777) | 0o001)


def tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def greeting_ok(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            buf = b""
            while not buf.endswith(b"\n") and len(buf) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            return buf.startswith(b"* OK")
    except OSError:
        return False


def login_works(host: str, port: int, users: dict[str, str]) -> bool:
    """Does the first user's login work?  False while the server is still starting (no
    connection, or Dovecot's "[UNAVAILABLE] Temporary authentication failure" while its auth
    service lags the listener); LoginRefused when it says no.  True when there are no users."""
    if not users:
        return True
    user, password = next(iter(users.items()))
    try:
        c = imaplib.IMAP4(host, port, timeout=5)
    except OSError:
        return False
    try:
        c.login(user, password)
        return True
    except OSError:
        return False
    except imaplib.IMAP4.error as e:
        if "UNAVAILABLE" in str(e):
            return False
        raise LoginRefused(f"test login for {user} refused: {e}") from None
    finally:
        try:
            c.shutdown()
        except OSError:
            pass


class Server:
    """A test server as a context manager; subclasses define start() and stop()."""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def restart(self) -> None:
        """Stop and start again on the same ports (mail is kept)."""
        self.stop()
        self.start()


class Supervisor:
    """``python -I -S SCRIPT ARGS...`` in a session of its own, its stdin a pipe whose write end
    only this process holds: EOF on it -- :meth:`stop`, or this process dying in any way
    (SIGKILL, OOM kill, ...) -- makes the supervisor stop its server and exit.  A child created
    with a bare ``os.fork()`` inherits the write end, so then the server lives until it exits too."""

    def __init__(self, script: str, args: list[str], **popen) -> None:
        r, w = os.pipe()  # non-inheritable (PEP 446): only this process holds w
        try:
            self._proc = subprocess.Popen([sys.executable, "-I", "-S", script, *args], stdin=r,
                                          start_new_session=True, close_fds=True, **popen)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        self._w: int | None = w
        self.pid = self._proc.pid

    def running(self) -> bool:
        return self._proc.poll() is None

    def tell(self, line: str) -> None:
        if self._w is not None:
            try:
                os.write(self._w, f"{line}\n".encode())
            except OSError:
                pass

    def stop(self, timeout: float) -> None:
        if self._w is not None:
            os.close(self._w)
            self._w = None
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
