"""Private certificate authorities: the PEM an account may carry, checked on save, trusted at connect.

Servers of small providers and companies often present a certificate signed by their own CA.
An account can carry that CA's certificate; connections to its server then trust the system store
plus that CA, and host names are still checked.
"""

from __future__ import annotations

import functools
import ssl
from datetime import UTC, datetime

from cryptography import x509

# A CA bundle of a few certificates fits easily; the cap keeps rows and TLS setup small.
MAX_CA_PEM_CHARS = 65_536
_BEGIN = "-----BEGIN CERTIFICATE-----"


class InvalidCertificate(ValueError):
    """The given PEM is not one or more CA certificates; the message says what to give instead."""


def validate_ca_pem(text: str) -> str:
    """The PEM, stripped, if it holds only readable, current CA certificates; raises InvalidCertificate."""
    text = text.strip()
    if "PRIVATE KEY" in text:
        raise InvalidCertificate(
            "ca_pem contains a private key: give only the certificate authority's certificate, and "
            "consider that key compromised"
        )
    if _BEGIN not in text:
        raise InvalidCertificate(
            f"ca_pem must be the certificate authority's certificate in PEM form (text that starts with "
            f"{_BEGIN})"
        )
    try:
        certificates = x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        raise InvalidCertificate(
            "ca_pem holds no readable certificate: copy the whole PEM block of the certificate authority, "
            "from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----"
        ) from None
    now = datetime.now(UTC)
    for certificate in certificates:
        name = certificate.subject.rfc4514_string() or "(no subject)"
        if not _is_authority(certificate):
            raise InvalidCertificate(
                f"the certificate for {name} in ca_pem is not a certificate authority: give the certificate "
                "of the authority that signed the server's certificate (or the server's own certificate if it "
                "is self-signed)"
            )
        if certificate.not_valid_after_utc < now:
            raise InvalidCertificate(
                f"the certificate authority {name} in ca_pem expired on "
                f"{certificate.not_valid_after_utc:%Y-%m-%d}: ask the server's administrator for the current one"
            )
    try:
        # What the TLS library will be given: it must accept it too.
        ssl.create_default_context(cadata=text)
    except ssl.SSLError as exc:
        raise InvalidCertificate(f"ca_pem cannot be used for TLS ({exc.reason or exc})") from None
    return text


def _is_authority(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        # Old self-signed certificates carry no extensions and act as their own authority.
        return certificate.issuer == certificate.subject
    return constraints.ca


@functools.lru_cache(maxsize=64)
def context_trusting(ca_pem: str) -> ssl.SSLContext:
    """The system trust store plus `ca_pem`, hostname checks on; built once per PEM (loading costs ~17 ms)."""
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=ca_pem)
    return context
