"""The self-signed serving pair (auth/certs.py)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kubemetrics.auth.certs import ensure_self_signed, generate_self_signed
from kubemetrics.auth.tls import TLSConfigError
from kubemetrics.config import ServingConfig


def _verify(child: x509.Certificate, issuer: x509.Certificate) -> None:
    key = issuer.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert child.signature_hash_algorithm is not None
    key.verify(
        child.signature,
        child.tbs_certificate_bytes,
        padding.PKCS1v15(),
        child.signature_hash_algorithm,
    )


def test_self_signed_chain_is_a_leaf_and_its_ca() -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    chain, key_pem = generate_self_signed(ips=("127.0.0.1", "::1"), dns=("metrics",), now=now)
    leaf, ca = x509.load_pem_x509_certificates(chain)
    _verify(leaf, ca)
    _verify(ca, ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "metrics"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert leaf.not_valid_before_utc == now - datetime.timedelta(hours=1)
    assert leaf.not_valid_after_utc == now + datetime.timedelta(days=365)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]


def test_pair_is_generated_once_then_reused(tmp_path: Path) -> None:
    serving = ServingConfig(cert_dir=str(tmp_path / "certs"), bind_address="127.0.0.7")
    cert, key, created = ensure_self_signed(serving)
    assert created
    assert Path(cert).name == "apiserver.crt" and Path(key).name == "apiserver.key"
    assert Path(key).stat().st_mode & 0o777 == 0o600
    leaf = x509.load_pem_x509_certificates(Path(cert).read_bytes())[0]
    ips = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # a specific bind address is named too, so clients dialing it can verify
    assert ipaddress.ip_address("127.0.0.7") in ips.get_values_for_type(x509.IPAddress)
    before = Path(cert).read_bytes()
    again = ensure_self_signed(serving)
    assert again == (cert, key, False)
    assert Path(cert).read_bytes() == before


def test_unwritable_cert_dir_is_a_startup_error(tmp_path: Path) -> None:
    # A TLSConfigError, which the server reports as a start-up error (app.StartupError).
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TLSConfigError, match="--cert-dir"):
        ensure_self_signed(ServingConfig(cert_dir=str(blocker / "certs")))
