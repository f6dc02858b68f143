"""The service's own identity key: signing instance identity documents as EC2 does.

EC2 signs each instance identity document three ways (AWS "Verify the instance identity
document"): ``signature`` (base64 of an RSA SHA-256 signature over the document's bytes),
``pkcs7`` (a detached PKCS #7 signature, base64 DER without PEM armour) and ``rsa2048`` (PKCS #7
signed data that carries the document, same encoding). AWS publishes one certificate per
region; here the key and a self-signed certificate are made on first start in the data dir
(``identity-key.pem`` 0600, ``identity-cert.pem``), and ``imagewright metadata certificate``
prints the certificate for instances to verify with, e.g.::

    openssl dgst -sha256 -verify <(openssl x509 -pubkey -noout -in cert.pem) \
        -signature <(base64 -d signature) document
    openssl smime -verify -inform PEM -in <(printf -- '-----BEGIN PKCS7-----\\n%s\\n-----END PKCS7-----\\n' \
        "$(cat pkcs7)") -content document -certfile cert.pem -noverify

A document is signed when its instance is loaded into the cache (about a millisecond per
signature), never per request.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from imagewright.errors import ImageIOError, OutputExistsError
from imagewright.files import write_file_atomically
from imagewright.metadata.channel import MetadataChannel
from imagewright.metadata.imds import IdentityDocuments

CERTIFICATE_YEARS = 10
COMMON_NAME = "imagewright instance metadata service"


@dataclass(frozen=True)
class IdentitySigner:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, document: bytes) -> IdentityDocuments:
        signature = self.key.sign(document, padding.PKCS1v15(), hashes.SHA256())
        builder = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(document)
            .add_signer(self.certificate, self.key, hashes.SHA256())
        )
        # Binary: sign the document's bytes as they are (without it, S/MIME text rules would
        # sign a copy with CRLF line ends, which no verifier of the served document reproduces).
        binary = pkcs7.PKCS7Options.Binary
        detached = builder.sign(serialization.Encoding.DER, [binary, pkcs7.PKCS7Options.DetachedSignature])
        attached = builder.sign(serialization.Encoding.DER, [binary])
        return IdentityDocuments(
            document=document,
            signature=base64.b64encode(signature),
            pkcs7=base64.b64encode(detached),
            rsa2048=base64.b64encode(attached),
        )


def _new_key_and_certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365 * CERTIFICATE_YEARS))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def load_signer(channel: MetadataChannel) -> IdentitySigner:
    """The data dir's identity key and certificate, made on first use."""
    key_path, cert_path = channel.identity_key_path, channel.identity_cert_path
    if not key_path.exists():
        channel.ensure_directory()
        key, certificate = _new_key_and_certificate()
        try:
            write_file_atomically(
                key_path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                mode=0o600,
            )
            write_file_atomically(
                cert_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644, force=True
            )
        except OutputExistsError:
            pass  # another process made them first: use theirs
    try:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as err:
        raise ImageIOError(
            f"The identity key or certificate in {channel.directory} cannot be read ({err}); "
            "remove both to make new ones."
        ) from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ImageIOError(f"{key_path} is not an RSA key.")
    return IdentitySigner(loaded, certificate)
