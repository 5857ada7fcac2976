"""Throwaway certificates for TLS on loopback: a private CA, a server certificate for
127.0.0.1/localhost and a client certificate signed by it. Made fresh where they are
used (tests, the security benchmark, trying TLS out); never for production. Needs the
``cryptography`` package (in the ``test`` extra).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CertFiles:
    """Paths of the PEM files ``make_certs`` wrote."""

    ca: str            # the CA certificate (what both sides trust)
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_certs(directory: str, name: str = "pomelo_rpc test") -> CertFiles:
    """Write a new CA, a server and a client certificate (EC P-256, valid one day)
    into ``directory``; ``name`` prefixes their common names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def write(path: str, data: bytes) -> str:
        full = os.path.join(directory, path)
        with open(full, "wb") as f:
            f.write(data)
        return full

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def issue(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
              issuer_key: ec.EllipticCurvePrivateKey | None,
              usage: x509.ObjectIdentifier | None) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (x509.CertificateBuilder()
                   .subject_name(subject).issuer_name(issuer or subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        if usage is None:      # the CA
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0),
                                            critical=True)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            if usage == ExtendedKeyUsageOID.SERVER_AUTH:
                builder = builder.add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                    critical=False)
        return builder.sign(issuer_key or key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(f"{name} CA", ca_key, None, None, None)
    pem = serialization.Encoding.PEM
    files = {"ca": write("ca.pem", ca.public_bytes(pem))}
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = issue(f"{name} {role}", key, ca.subject, ca_key, usage)
        files[f"{role}_cert"] = write(f"{role}.pem", cert.public_bytes(pem))
        files[f"{role}_key"] = write(f"{role}-key.pem", key_pem(key))
    return CertFiles(**files)
