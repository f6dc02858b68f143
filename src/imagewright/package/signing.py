"""RSA signatures and X.509 certificates for packages (``cryptography``).

- OVA ``.cert`` (spec digest section 2.2): ``ALG(name.mf)= <hex RSA PKCS#1 v1.5 signature of
  the .mf bytes>`` then the PEM signing certificate — ``openssl dgst -sha256 -sign key.pem``
  followed by ``cat cert.pem``, which is what ``openssl dgst -verify`` checks.
- EC2 bundle manifests (section 3.4): a PKCS#1 v1.5 SHA-1 signature, hex, of the serialized
  ``machine_configuration`` and ``image`` elements; the AES key and IV are RSA-encrypted
  (PKCS#1 v1.5) for the cloud's and the user's certificates.

Chains are checked link by link (issuer name, the issuer's signature over the certificate,
validity dates, the issuer being a CA) up to a certificate of the trust store given; a
certificate that signed itself is reported as self-signed — a warning, as VirtualBox and
ovftool treat it — not as a failure.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from imagewright.errors import ImagewrightError, InvalidArgumentError

#: Manifest algorithm names → hashes.
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1,
    "SHA256": hashes.SHA256,
    "SHA512": hashes.SHA512,
}
#: Largest key or certificate file read (a chain of a few certificates).
MAX_PEM_BYTES = 1 << 20
#: Longest chain followed.
MAX_CHAIN = 10


class SignatureError(ImagewrightError):
    """A signature or certificate does not check out."""


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as err:
        raise InvalidArgumentError(f"Cannot read the {what} {path}: {err.strerror}.") from None
    if len(data) > MAX_PEM_BYTES:
        raise InvalidArgumentError(f"The {what} {path} is larger than 1 MiB.")
    return data


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """An unencrypted RSA private key from a PEM (or DER) file."""
    data = _read(path, "private key")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise InvalidArgumentError(
            f"The private key {path} is encrypted; give an unencrypted key (openssl rsa -in KEY -out PLAIN)."
        ) from None
    except ValueError:
        raise InvalidArgumentError(f"{path} does not hold a private key in PEM or DER form.") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidArgumentError(f"The private key {path} is not an RSA key; packages are signed with RSA.")
    return key


def load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Every PEM certificate in ``data`` (one DER certificate is accepted too)."""
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise InvalidArgumentError(f"The {what} holds no readable X.509 certificate.") from None


def load_certificate_file(path: Path) -> list[x509.Certificate]:
    return load_certificates(_read(path, "certificate"), f"file {path}")


def rsa_public_key(cert: x509.Certificate, what: str) -> rsa.RSAPublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidArgumentError(f"The {what} does not hold an RSA public key.")
    return key


@dataclass(frozen=True)
class Signer:
    """A private key and the certificate that vouches for it."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def signature_length(self) -> int:
        return (self.key.key_size + 7) // 8

    def sign(self, data: bytes, algorithm: str) -> bytes:
        return sign_with(self.key, data, algorithm)

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def load_signer(key_path: Path, cert_path: Path) -> Signer:
    """The signing key and certificate; refused when the certificate is not the key's."""
    key = load_private_key(key_path)
    certificate = load_certificate_file(cert_path)[0]
    public = rsa_public_key(certificate, f"certificate {cert_path}")
    if public.public_numbers() != key.public_key().public_numbers():
        raise InvalidArgumentError(
            f"The certificate {cert_path} is not the certificate of the key {key_path}."
        )
    return Signer(key, certificate)


def sign_with(key: rsa.RSAPrivateKey, data: bytes, algorithm: str) -> bytes:
    """RSA PKCS#1 v1.5 signature of ``data`` with the ``algorithm`` digest (SHA1/SHA256/SHA512)."""
    return key.sign(data, padding.PKCS1v15(), DIGESTS[algorithm]())


def verify_with(key: rsa.RSAPublicKey, signature: bytes, data: bytes, algorithm: str) -> bool:
    """True when ``signature`` is ``key``'s PKCS#1 v1.5 signature of ``data``."""
    try:
        key.verify(signature, data, padding.PKCS1v15(), DIGESTS[algorithm]())
    except InvalidSignature:
        return False
    return True


def verify_signature(certificate: x509.Certificate, signature: bytes, data: bytes, algorithm: str) -> bool:
    """True when ``signature`` is the certificate's key's PKCS#1 v1.5 signature of ``data``."""
    key = certificate.public_key()
    return isinstance(key, rsa.RSAPublicKey) and verify_with(key, signature, data, algorithm)


def encrypt_for(certificate: x509.Certificate, data: bytes) -> bytes:
    """RSA PKCS#1 v1.5 encryption to the certificate's key (``openssl rsautl -encrypt -pkcs``)."""
    return rsa_public_key(certificate, "certificate").encrypt(data, padding.PKCS1v15())


def decrypt_with(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    try:
        return key.decrypt(data, padding.PKCS1v15())
    except ValueError:
        raise SignatureError("The private key does not decrypt the bundle's key.") from None


def is_self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class ChainCheck:
    """How the signing certificate relates to the trust store."""

    #: "trusted", "self-signed" or "untrusted".
    status: str
    subject: str
    detail: str


def _valid_now(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        # A v1 certificate (no extensions) that signed itself is how old CAs look.
        return certificate.version == x509.Version.v1
    return constraints.ca


def check_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    trusted: list[x509.Certificate],
    now: datetime.datetime | None = None,
) -> ChainCheck:
    """Follow ``leaf`` through ``intermediates`` to one of ``trusted``."""
    now = now or datetime.datetime.now(datetime.UTC)
    subject = leaf.subject.rfc4514_string()
    if not _valid_now(leaf, now):
        return ChainCheck("untrusted", subject, "the signing certificate is not valid at this time")
    current = leaf
    pool = intermediates + trusted
    for _ in range(MAX_CHAIN):
        if any(current == anchor for anchor in trusted):
            return ChainCheck("trusted", subject, f"issued by {current.subject.rfc4514_string()}")
        issuer = _find_issuer(current, pool)
        if issuer is None:
            if is_self_signed(current) and current is leaf:
                return ChainCheck("self-signed", subject, "the signing certificate is self-signed")
            return ChainCheck(
                "untrusted",
                subject,
                f"no trusted certificate issued {current.subject.rfc4514_string()}",
            )
        if not _valid_now(issuer, now):
            return ChainCheck(
                "untrusted",
                subject,
                f"the issuer {issuer.subject.rfc4514_string()} is not valid at this time",
            )
        if not _is_ca(issuer):
            return ChainCheck(
                "untrusted", subject, f"the issuer {issuer.subject.rfc4514_string()} is not a CA"
            )
        if issuer == current:
            return ChainCheck(
                "untrusted",
                subject,
                f"the chain ends at {current.subject.rfc4514_string()}, which is not trusted",
            )
        current = issuer
    return ChainCheck("untrusted", subject, f"the chain is longer than {MAX_CHAIN} certificates")


def _find_issuer(certificate: x509.Certificate, pool: list[x509.Certificate]) -> x509.Certificate | None:
    for candidate in pool:
        if candidate.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None
