"""The metadata service's files in the data dir: its own channel, secrets and forwarder signatures.

``DATA_DIR/metadata/`` (0700)::

    socket/guest.sock        the unix socket forwarders connect to (the service binds it); its
                             directory holds nothing else, so a sandbox can show it whole
    proxy.secret             the HMAC secret of X-Instance-ID-Signature (0600), as Nova's
                             ``metadata_proxy_shared_secret``; trusted proxies are given it too
    token.key                the key IMDSv2 session tokens are authenticated with (0600)
    identity-key.pem         the RSA key the instance identity documents are signed with (0600)
    identity-cert.pem        its self-signed certificate: what an instance verifies them with
    forwarders/<id>.signature  one instance's signature for its forwarder (0600)
    access.log               the access log (default)

Secrets are created on first use, atomically (``files.write_file_atomically``) and never
replaced; several service processes sharing a data dir share them. The launch code (``imagewright
run``) calls ``forwarder`` to get the ``guestfwd … cmd:`` program of an instance and the files
it needs inside QEMU's sandbox.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from imagewright.errors import ImageIOError, OutputExistsError
from imagewright.files import write_file_atomically
from imagewright.metadata import forwarder as forwarder_module
from imagewright.metadata.forwarder import instance_signature
from imagewright.metadata.instance import validate_identifier

DIRECTORY_NAME = "metadata"
SOCKET_DIRECTORY_NAME = "socket"
SOCKET_NAME = "guest.sock"
PROXY_SECRET_NAME = "proxy.secret"  # noqa: S105 - a file name
TOKEN_KEY_NAME = "token.key"  # noqa: S105 - a file name
IDENTITY_KEY_NAME = "identity-key.pem"
IDENTITY_CERT_NAME = "identity-cert.pem"
ACCESS_LOG_NAME = "access.log"
FORWARDERS_NAME = "forwarders"


@dataclass(frozen=True)
class ForwarderSpec:
    """A forwarder's command line and the host files it reads and writes (for QEMU's sandbox)."""

    command: tuple[str, ...]
    reads: tuple[Path, ...]
    writes: tuple[Path, ...]


def forwarder_interpreter() -> tuple[str, tuple[Path, ...]]:
    """A Python for the forwarder and what of it lies outside /usr (which every sandbox shows).

    Debian's ``/usr/bin/python3`` when there is one (nothing more to show); else this
    interpreter, with its installation prefix.
    """
    system = Path("/usr/bin/python3")
    if system.exists():
        return str(system), ()
    return sys.executable, (Path(sys.base_prefix), Path(sys.executable))


@dataclass(frozen=True)
class MetadataChannel:
    """The metadata files of one data dir."""

    directory: Path

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> MetadataChannel:
        return cls(data_dir / DIRECTORY_NAME)

    @property
    def socket_directory(self) -> Path:
        return self.directory / SOCKET_DIRECTORY_NAME

    @property
    def socket_path(self) -> Path:
        return self.socket_directory / SOCKET_NAME

    @property
    def access_log_path(self) -> Path:
        return self.directory / ACCESS_LOG_NAME

    @property
    def identity_key_path(self) -> Path:
        return self.directory / IDENTITY_KEY_NAME

    @property
    def identity_cert_path(self) -> Path:
        return self.directory / IDENTITY_CERT_NAME

    def ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.directory / FORWARDERS_NAME).mkdir(mode=0o700, exist_ok=True)
            self.socket_directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as err:
            raise ImageIOError(f"The directory {self.directory} cannot be created: {err.strerror}.") from None

    def _secret(self, name: str) -> bytes:
        path = self.directory / name
        if not path.exists():
            self.ensure_directory()
            # another process may make it first: then use theirs
            with contextlib.suppress(OutputExistsError):
                write_file_atomically(path, secrets.token_hex(32) + "\n", mode=0o600)
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ImageIOError(f"The secret {path} cannot be read ({err}).") from None
        if len(text) < 32:
            raise ImageIOError(
                f"The secret {path} is shorter than 32 characters; remove it to make a new one."
            )
        return text.encode("ascii")

    def proxy_secret(self) -> bytes:
        return self._secret(PROXY_SECRET_NAME)

    def token_key(self) -> bytes:
        return self._secret(TOKEN_KEY_NAME)

    def signature_path(self, instance_id: str) -> Path:
        validate_identifier(instance_id, "instance id")
        return self.directory / FORWARDERS_NAME / f"{instance_id}.signature"

    def forwarder(self, instance_id: str) -> ForwarderSpec:
        """The program QEMU runs per guest connection for ``instance_id``, and what it touches.

        Writes the instance's signature file (0600) first; ``remove_forwarder`` deletes it. The
        forwarder is stdlib-only and runs as a plain script (``python3 -I -S forwarder.py``), so
        inside QEMU's sandbox it needs only the interpreter, its own file, the signature file
        and the socket's directory (``reads``: connecting to a socket needs no writable mount, and
        binding the directory rather than the socket keeps a restarted service reachable).
        """
        self.ensure_directory()
        path = self.signature_path(instance_id)
        signature = instance_signature(self.proxy_secret(), instance_id)
        write_file_atomically(path, signature + "\n", mode=0o600, force=True)
        python, python_reads = forwarder_interpreter()
        script = Path(forwarder_module.__file__).resolve()
        command = (
            python,
            "-I",
            "-S",
            str(script),
            "--socket",
            str(self.socket_path),
            "--instance-id",
            instance_id,
            "--signature-file",
            str(path),
        )
        return ForwarderSpec(command, (script, path, self.socket_directory, *python_reads), ())

    def forwarder_command(self, instance_id: str) -> tuple[str, ...]:
        return self.forwarder(instance_id).command

    def remove_forwarder(self, instance_id: str) -> None:
        try:
            os.unlink(self.signature_path(instance_id))
        except FileNotFoundError:
            pass
        except OSError as err:
            raise ImageIOError(
                f"The forwarder signature of {instance_id} cannot be removed: {err.strerror}."
            ) from None
