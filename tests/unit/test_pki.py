"""The lab's CA and gateway certificates (polynimbus.pki)."""

from __future__ import annotations

import os
import stat

import pytest
from cryptography import x509

from polynimbus.errors import KeyFileError
from polynimbus.pki import CertificateAuthority

SITES = {"aws": "100.64.0.1", "azure": "100.64.0.3"}


def modes(d) -> dict[str, int]:
    return {p.name: stat.S_IMODE(os.lstat(p).st_mode) for p in d.iterdir()}


def test_files_are_private_and_certificates_chain_to_the_ca(tmp_path):
    got = CertificateAuthority(tmp_path, "lab").ensure(SITES)
    d = tmp_path / "pki"
    assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700
    assert set(modes(d)) == {
        "ca.key",
        "ca.pem",
        "gw.aws.key",
        "gw.aws.pem",
        "gw.azure.key",
        "gw.azure.pem",
    }
    assert set(modes(d).values()) == {0o600}
    ca = x509.load_pem_x509_certificate(got["aws"].ca_pem.encode())
    for site, public in SITES.items():
        cert = x509.load_pem_x509_certificate(got[site].cert_pem.encode())
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [site]
        assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == [public]
    assert "PRIVATE KEY" not in repr(got["aws"])


def test_second_run_keeps_everything_rotation_replaces_everything(tmp_path):
    ca = CertificateAuthority(tmp_path, "lab")
    first = ca.ensure(SITES)
    assert ca.ensure(SITES) == first
    rotated = ca.ensure(SITES, rotate=True)
    for site in SITES:
        assert rotated[site].ca_pem != first[site].ca_pem
        assert rotated[site].cert_pem != first[site].cert_pem
        assert rotated[site].key_pem != first[site].key_pem
    assert ca.ensure(SITES) == rotated


def test_a_changed_address_or_a_new_site_gets_a_new_certificate_only_there(tmp_path):
    ca = CertificateAuthority(tmp_path, "lab")
    first = ca.ensure(SITES)
    moved = ca.ensure({"aws": "100.64.0.9", "azure": "100.64.0.3", "edge": None})
    assert moved["azure"] == first["azure"]
    assert moved["aws"].cert_pem != first["aws"].cert_pem
    assert moved["edge"].ca_pem == first["aws"].ca_pem


def test_dry_run_writes_nothing(tmp_path):
    CertificateAuthority(tmp_path, "lab").ensure(SITES, dry_run=True)
    assert not (tmp_path / "pki").exists()
    ca = CertificateAuthority(tmp_path, "lab")
    stored = ca.ensure(SITES)
    before = {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()}
    assert ca.ensure(SITES, dry_run=True) == stored
    ca.ensure(SITES, rotate=True, dry_run=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()} == before


def test_unsafe_or_corrupt_files_are_refused(tmp_path):
    ca = CertificateAuthority(tmp_path, "lab")
    ca.ensure(SITES)
    os.chmod(tmp_path / "pki" / "gw.aws.key", 0o644)
    with pytest.raises(KeyFileError, match="0600"):
        ca.ensure(SITES)
    os.chmod(tmp_path / "pki" / "gw.aws.key", 0o600)
    (tmp_path / "pki" / "ca.key").write_text("garbage")
    with pytest.raises(KeyFileError, match="corrupt"):
        ca.ensure(SITES)
    ca.ensure(SITES, rotate=True)  # rotation recovers without reading
    os.chmod(tmp_path / "pki", 0o755)
    with pytest.raises(KeyFileError, match="0700"):
        ca.ensure(SITES)


def test_a_site_named_ca_keeps_apart_from_the_ca_and_a_removed_site_leaves_no_key(tmp_path):
    ca = CertificateAuthority(tmp_path, "lab")
    first = ca.ensure({"ca": "100.64.0.1", "eu": None, "us": None})
    assert ca.ensure({"ca": "100.64.0.1", "eu": None, "us": None}) == first
    root = x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.pem").read_bytes())
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.ensure({"ca": "100.64.0.1", "eu": None})
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == [
        "ca.key",
        "ca.pem",
        "gw.ca.key",
        "gw.ca.pem",
        "gw.eu.key",
        "gw.eu.pem",
    ]
