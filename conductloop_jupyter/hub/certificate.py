"""The phone listener's self-signed certificate (``loop.phone(tls=True)``).

A new key and certificate each time the listener opens with TLS, for its IP address only,
valid a year; the key file is 0600. A phone's browser warns about it once: the fingerprint
shown beside the QR code is how the user checks it is this one.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from pathlib import Path


def self_signed(home: Path, host: str) -> tuple[ssl.SSLContext, str]:
    """A TLS context with a new self-signed certificate for ``host`` (an IP address),
    written to ``home``; and the certificate's SHA-256 fingerprint, shown beside the QR code
    so that the user can check what the phone's browser is shown. Blocking (file I/O)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conductloop phone")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = home / "phone-cert.pem", home / "phone-key.pem"
    for path in (cert_path, key_path):  # made anew 0600, like everything in the home
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path.write_bytes(key_bytes)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    der = certificate.public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return context, ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
