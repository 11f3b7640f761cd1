"""The self-signed serving pair, as the generic apiserver makes it when no --tls-cert-file is
given (client-go's cert util): a throwaway CA plus a leaf for localhost / 127.0.0.1 (and a
specific bind address), valid for a year, written once to --cert-dir and reused after."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from kubemetrics.auth.tls import TLSConfigError
from kubemetrics.config import ServingConfig

SELF_SIGNED_HOST = "localhost"
SELF_SIGNED_IPS: tuple[str, ...] = ("127.0.0.1",)
SELF_SIGNED_DAYS = 365


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def generate_self_signed(
    host: str = SELF_SIGNED_HOST,
    ips: tuple[str, ...] = SELF_SIGNED_IPS,
    dns: tuple[str, ...] = (),
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """(certificate chain PEM: leaf then CA, private key PEM) for `host`, `ips` and `dns`."""
    now = now or datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)  # tolerate a little clock skew
    not_after = now + datetime.timedelta(days=SELF_SIGNED_DAYS)
    stamp = int(now.timestamp())

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{host}-ca@{stamp}")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    names += [x509.DNSName(d) for d in dns if d != host]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{host}@{stamp}")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return _pem_cert(leaf) + _pem_cert(ca), key_pem


def _write_file(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def ensure_self_signed(serving: ServingConfig) -> tuple[str, str, bool]:
    """The (cert, key) paths in `--cert-dir`, generating them unless both already exist.

    Returns whether a new pair was written. Blocking (key generation, files): run in a thread.
    """
    cert = os.path.join(serving.cert_dir, f"{serving.pair_name}.crt")
    key = os.path.join(serving.cert_dir, f"{serving.pair_name}.key")
    if os.path.isfile(cert) and os.path.isfile(key):
        return cert, key, False
    extra_ips: tuple[str, ...] = ()
    bind = ipaddress.ip_address(serving.bind_address)
    if not bind.is_unspecified and str(bind) not in SELF_SIGNED_IPS:
        extra_ips = (str(bind),)
    chain, key_pem = generate_self_signed(ips=SELF_SIGNED_IPS + extra_ips)
    try:
        os.makedirs(serving.cert_dir, mode=0o755, exist_ok=True)
        _write_file(cert, chain, 0o644)
        _write_file(key, key_pem, 0o600)
    except OSError as e:
        raise TLSConfigError(
            f"cannot write the self-signed serving certificate to --cert-dir "
            f"{serving.cert_dir}: {e.strerror or e}"
        ) from e
    return cert, key, True


def ca_bundle(cert_file: str) -> str:
    """The last certificate of the chain in `cert_file` (the CA), base64 PEM, as an APIService's
    spec.caBundle takes it."""
    with open(cert_file, "rb") as f:
        chain = f.read()
    certs = x509.load_pem_x509_certificates(chain)
    ca = _pem_cert(certs[-1])
    return base64.b64encode(ca).decode()
