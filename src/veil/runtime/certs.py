"""Certificates for a deployment: one CA, the server's certificate, one certificate per site.

Mutual TLS (TLS 1.3, RFC 8446, with client certificates): the server and every site prove who
they are with an X.509 certificate (RFC 5280) signed by the deployment's own certificate
authority, made here with ``cryptography``'s x509 builder. A site's name is its certificate's
common name (CN); the server admits only the names on its allowlist. Keys are ECDSA P-256,
written with mode 0600 and never printed.

Threat model: whoever holds the CA key can mint a certificate for any site, so ``ca.key`` should
move offline once the certificates are issued; a site's key identifies that site to the server.

Layout of a certificates folder (what ``veil certs init`` and ``veil certs issue`` write)::

    ca.pem  ca.key  server.pem  server.key  sites/NAME.pem  sites/NAME.key
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from veil.errors import ConfigError

SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
CA_DAYS = 5 * 365


@dataclass(frozen=True)
class Credentials:
    """PEM bytes a party needs for mTLS: its own key and certificate, and the CA certificate."""

    key: bytes
    certificate: bytes
    authority: bytes


def check_site_name(site: str) -> str:
    """``site`` if it is a valid site name (letters, digits, ``_ . -``; at most 64)."""
    if not SITE_NAME.fullmatch(site):
        raise ConfigError(
            f"site name {site!r} must be 1–64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    return site


def init_authority(
    folder: str | Path, hosts: tuple[str, ...] = DEFAULT_HOSTS, days: int = 365
) -> list[Path]:
    """Create a CA and the server's certificate (valid for ``hosts``) in a new ``folder``;
    return the files written."""
    folder = Path(folder)
    if (folder / "ca.key").exists():
        raise ConfigError(
            f"{folder / 'ca.key'} already exists: certificates were already initialised there; "
            "issue site certificates with `veil certs issue`, or choose a new folder"
        )
    if not hosts:
        raise ConfigError("the server certificate needs at least one host name or IP address")
    _check_days(days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "veil deployment CA")])
    ca = (
        _builder(name, name, ca_key, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    alternative = x509.SubjectAlternativeName([_general_name(h) for h in hosts])
    server = _leaf(ca, ca_key, server_key, "veil server", days, ExtendedKeyUsageOID.SERVER_AUTH)
    server = server.add_extension(alternative, critical=False).sign(ca_key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    return [
        _write_key(folder / "ca.key", ca_key),
        _write_certificate(folder / "ca.pem", ca),
        _write_key(folder / "server.key", server_key),
        _write_certificate(folder / "server.pem", server),
    ]


def issue_site(folder: str | Path, site: str, days: int = 365) -> list[Path]:
    """Issue ``site``'s certificate (CN = site name) from the CA in ``folder``."""
    folder = Path(folder)
    check_site_name(site)
    _check_days(days)
    key_path = folder / "sites" / f"{site}.key"
    if key_path.exists():
        raise ConfigError(f"{key_path} already exists: site {site!r} already has a certificate")
    ca_key = serialization.load_pem_private_key(_read(folder / "ca.key"), password=None)
    ca = x509.load_pem_x509_certificate(_read(folder / "ca.pem"))
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _leaf(ca, ca_key, key, site, days, ExtendedKeyUsageOID.CLIENT_AUTH)
    certificate = certificate.sign(ca_key, hashes.SHA256())
    key_path.parent.mkdir(exist_ok=True)
    return [
        _write_key(key_path, key),
        _write_certificate(key_path.with_suffix(".pem"), certificate),
    ]


def server_credentials(folder: str | Path) -> Credentials:
    """The server's key, certificate and the CA certificate from a certificates folder."""
    folder = Path(folder)
    return Credentials(
        _read(folder / "server.key"), _read(folder / "server.pem"), _read(folder / "ca.pem")
    )


def site_credentials(folder: str | Path, site: str) -> Credentials:
    """Site ``site``'s key and certificate and the CA certificate from a certificates folder."""
    folder = Path(folder)
    check_site_name(site)
    sites = folder / "sites"
    return Credentials(
        _read(sites / f"{site}.key"), _read(sites / f"{site}.pem"), _read(folder / "ca.pem")
    )


def common_name(certificate_pem: bytes) -> str:
    """The subject CN of a PEM certificate (a site's name)."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _builder(subject: x509.Name, issuer: x509.Name, key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _leaf(
    ca: x509.Certificate, ca_key, key, name: str, days: int, purpose
) -> x509.CertificateBuilder:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    authority = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        _builder(subject, ca.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(authority), False
        )
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _check_days(days: int) -> None:
    if not 1 <= days <= CA_DAYS:
        raise ConfigError(f"certificate validity must be 1–{CA_DAYS} days (got {days})")


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """Write a private key readable by its owner only (created 0600, never overwritten)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return path


def _write_certificate(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(
            f"cannot read {path} ({error.strerror or error}); create certificates with "
            "`veil certs init` and `veil certs issue`"
        ) from None
