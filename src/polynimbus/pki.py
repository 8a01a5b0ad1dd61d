"""The lab's certificate authority and its gateways' certificates (X.509), for the
transports that authenticate with certificates (OpenVPN, IPsec).

Seed 003 §3.2.4.2 builds its OpenVPN overlay on a CA of its own with a certificate per
gateway; so does polynimbus, with ``cryptography`` instead of easy-rsa. Everything lives in
``STATE_DIR/pki/`` (directory 0700, every file 0600 from its first byte):

- ``ca.key``, ``ca.pem``: the CA's ECDSA P-256 key and self-signed certificate (CN
  ``polynimbus LAB CA``, basicConstraints CA:TRUE, pathlen 0; 10 years);
- ``gw.SITE.key``, ``gw.SITE.pem``: each gateway's key and certificate (CN and SAN DNS = the site
  name, SAN IP = its public address; serverAuth and clientAuth, since a gateway is both
  ends of its tunnels; 2 years).

A stored certificate is kept while it is signed by the stored CA, names the site and its
public address, and has more than :data:`RENEW_BEFORE` left; otherwise it is issued anew.
``rotate`` makes a new CA and new certificates for every site (``up --rotate-keys``). The
files of a site no longer in the lab are removed.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from polynimbus.errors import KeyFileError
from polynimbus.keys import write_private_file

if TYPE_CHECKING:
    from polynimbus.plan.model import Plan

CA_DAYS = 3650
"""Validity of the CA certificate, days."""
CERT_DAYS = 730
"""Validity of a gateway certificate, days."""
GATEWAY_PREFIX = "gw."
"""File name prefix of a gateway's key and certificate (``gw.SITE.key``): no site name can
take the CA's files."""
RENEW_BEFORE = dt.timedelta(days=30)
"""A gateway certificate with less than this left is issued anew on the next ``up``."""
_ROTATE = "run 'polynimbus up --rotate-keys' to make a new CA and certificates"


@dataclass(frozen=True)
class GatewayCert:
    """One gateway's credentials, PEM text.

    Attributes:
        ca_pem: the CA certificate (the trust anchor of every peer).
        cert_pem: the gateway's certificate, signed by the CA.
        key_pem: the gateway's private key (PKCS#8, unencrypted): a secret.
    """

    ca_pem: str
    cert_pem: str
    key_pem: str

    def __repr__(self) -> str:  # never show the private key
        return "GatewayCert(<certificate>, key=<hidden>)"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(lab: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new CA key and self-signed certificate for lab ``lab``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"polynimbus {lab} CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    site: str,
    public_address: str | None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and certificate for the gateway of ``site``, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    san: list[x509.GeneralName] = [x509.DNSName(site)]
    if public_address:
        san.append(x509.IPAddress(ip_address(public_address)))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _still_good(
    cert: x509.Certificate, ca_cert: x509.Certificate, site: str, public_address: str | None
) -> bool:
    """Whether a stored gateway certificate may be kept (see the module docstring)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    want_ips = {str(ip_address(public_address))} if public_address else set()
    return san.get_values_for_type(x509.DNSName) == [site] and ips == want_ips


class CertificateAuthority:
    """The lab's CA and gateway certificates under ``STATE_DIR/pki`` (see the module).

    Args:
        state_dir: a directory prepared by ``state.prepare``.
        lab: the lab's name (the CA's common name).
    """

    def __init__(self, state_dir: Path, lab: str) -> None:
        self.dir = state_dir / "pki"
        self.lab = lab

    def _check_dir(self) -> bool:
        """Whether the directory exists; refuses an unsafe one."""
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise KeyFileError(
                f"{self.dir} is not a directory (a symbolic link or a file)",
                f"remove it; polynimbus makes it again ({_ROTATE})",
                path=str(self.dir),
            )
        if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
            raise KeyFileError(
                f"{self.dir} must be yours with mode 0700 "
                f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})",
                f"chmod 700 {self.dir}, or remove it and {_ROTATE}",
                path=str(self.dir),
            )
        return True

    def _read(self, name: str) -> bytes | None:
        """A stored file's bytes after checking it is a 0600 regular file of ours."""
        path = self.dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyFileError(
                f"cannot read {path}: {exc.strerror}", _ROTATE, path=str(path)
            ) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077:
                raise KeyFileError(
                    f"{path} must be a regular file only you can read (mode 0600)",
                    f"chmod 600 {path}, or {_ROTATE}",
                    path=str(path),
                )
            return f.read()

    def _load_pair(self, stem: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
        key_raw, cert_raw = self._read(f"{stem}.key"), self._read(f"{stem}.pem")
        if key_raw is None or cert_raw is None:
            return None
        try:
            key = serialization.load_pem_private_key(key_raw, password=None)
            cert = x509.load_pem_x509_certificate(cert_raw)
        except ValueError:
            raise KeyFileError(
                f"{self.dir / stem}.key or .pem is corrupt", _ROTATE, path=str(self.dir)
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
            raise KeyFileError(
                f"{self.dir / stem}.pem does not match {stem}.key", _ROTATE, path=str(self.dir)
            )
        return key, cert

    def _remove_others(self, sites: set[str]) -> None:
        """Remove the key and certificate of every gateway not in ``sites`` (a site that
        left the lab keeps no key here)."""
        for entry in os.scandir(self.dir):
            stem, dot, ext = entry.name.rpartition(".")
            if (
                dot
                and ext in ("key", "pem")
                and stem.startswith(GATEWAY_PREFIX)
                and stem[len(GATEWAY_PREFIX) :] not in sites
                and entry.is_file(follow_symlinks=False)
            ):
                os.unlink(entry.path)

    def _write_pair(
        self, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
    ) -> None:
        write_private_file(self.dir / f"{stem}.key", _key_pem(key))
        write_private_file(self.dir / f"{stem}.pem", _cert_pem(cert))

    def ensure(
        self,
        sites: Mapping[str, str | None],
        rotate: bool = False,
        dry_run: bool = False,
    ) -> dict[str, GatewayCert]:
        """The credentials of every site, issuing what is missing or no longer good.

        Args:
            sites: public address (or ``None``) by site name.
            rotate: a new CA and new certificates for every site, nothing read.
            dry_run: write nothing; what would be made is made in memory only.

        Returns:
            a :class:`GatewayCert` by site name.

        Raises:
            KeyFileError: the directory or a stored file is unsafe or corrupt, or a file
                cannot be written.
        """
        exists = self._check_dir()
        ca = None if rotate or not exists else self._load_pair("ca")
        new_ca = ca is None
        if ca is None:
            ca = make_ca(self.lab)
        if not dry_run and not exists:
            os.mkdir(self.dir, 0o700)
            os.chmod(self.dir, 0o700)
        try:
            if new_ca and not dry_run:
                self._write_pair("ca", *ca)
            ca_pem = _cert_pem(ca[1])
            out: dict[str, GatewayCert] = {}
            for site, public in sites.items():
                stem = f"{GATEWAY_PREFIX}{site}"
                pair = None if new_ca else self._load_pair(stem)
                if pair is None or not _still_good(pair[1], ca[1], site, public):
                    pair = issue(ca[0], ca[1], site, public)
                    if not dry_run:
                        self._write_pair(stem, *pair)
                out[site] = GatewayCert(ca_pem, _cert_pem(pair[1]), _key_pem(pair[0]))
            if not dry_run:
                self._remove_others(set(sites))
        except OSError as exc:
            raise KeyFileError(
                f"cannot write in {self.dir}: {exc.strerror}",
                f"check {self.dir} is a writable directory",
                path=str(self.dir),
            ) from None
        return out


def public_addresses(plan: Plan) -> dict[str, str | None]:
    """Public address by site name of ``plan`` (what :meth:`CertificateAuthority.ensure`
    takes)."""
    return {s.name: s.public_address for s in plan.sites}
