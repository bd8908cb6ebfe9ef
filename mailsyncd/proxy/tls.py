"""TLS options for the front door (server side) and for the target (client side)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import ssl

from ..errors import TLSFailure

# TLS 1.3 suites, the server's order: OpenSSL's own three (all AEAD), AES-128-GCM first: with AES-NI
# it costs both ends less per byte than AES-256-GCM or ChaCha20 (bench/tls_relay.py).  A client
# that puts ChaCha20 first (no AES hardware) still gets it: SSL_OP_PRIORITIZE_CHACHA, which
# pyOpenSSL does not name (openssl/ssl.h: SSL_OP_BIT(21)).
TLS13_SUITES = b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
_OP_PRIORITIZE_CHACHA = 1 << 21


def server_options(cert_file: str, key_file: str) -> ssl.CertificateOptions:
    """Certificate, key and any chain certificates that follow the leaf in ``cert_file``."""
    try:
        with open(cert_file, "rb") as f:
            cert_pem = f.read()
        with open(key_file, "rb") as f:
            key_pem = f.read()
    except OSError as e:
        raise TLSFailure(f"cannot read TLS file {e.filename}: {e.strerror}") from None
    blocks = _pem_blocks(cert_pem)
    if not blocks:
        raise TLSFailure(f"{cert_file}: no PEM certificate found")
    try:
        # cryptography objects: pyOpenSSL deprecates its own X509/PKey in contexts
        leaf, *chain = (x509.load_pem_x509_certificate(b) for b in blocks)
        key = serialization.load_pem_private_key(key_pem, password=None)
        options = ssl.CertificateOptions(privateKey=key, certificate=leaf, extraCertChain=chain)
        context = options.getContext()       # checks that the key belongs to the certificate
        context.set_tls13_ciphersuites(TLS13_SUITES)
        context.set_options(_OP_PRIORITIZE_CHACHA)
    except Exception as e:  # cryptography and pyOpenSSL raise their own types; say which files, not their content
        raise TLSFailure(f"{cert_file} / {key_file}: not a usable certificate and key pair "
                         f"({type(e).__name__})") from None
    return options


def client_options(endpoint):
    """Options for connecting to ``endpoint`` with the same trust rules as the sync engine."""
    if not endpoint.verify_tls:
        return ssl.CertificateOptions(verify=False)
    trust = None
    if endpoint.ca_file:
        with open(endpoint.ca_file, "rb") as f:
            trust = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in _pem_blocks(f.read())])
    # the name the certificate must carry: tls_name where set (an SRV target outside the mail domain)
    return ssl.optionsForClientTLS(getattr(endpoint, "tls_name", None) or endpoint.host, trustRoot=trust)


def _pem_blocks(pem: bytes) -> list[bytes]:
    marker = b"-----BEGIN CERTIFICATE-----"
    return [marker + b for b in pem.split(marker)[1:]]
