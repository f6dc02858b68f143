"""What a new instance is told about itself: the data model every context medium carries.

An ``InstanceDescription`` is validated when it is made, so every builder can rely on it:
- ``instance_id`` and ``image_id``: 1-128 characters from ``A-Z a-z 0-9 . _ -``, starting with a
  letter or digit. That covers EC2 ids (``i-0abc…``, ``ami-…``), OpenStack UUIDs and cloud-init's
  ``iid-local01``, and keeps the value a plain word in YAML, JSON, a shell assignment and a
  file name alike.
- ``hostname``: an RFC 1123 host name or fully qualified domain name (labels of 1-63 letters,
  digits and hyphens, not starting or ending with a hyphen; at most 253 characters; no
  trailing dot).
- SSH keys: OpenSSH public key lines (``TYPE BASE64 [COMMENT]``) whose base64 blob really is a
  key of that type (RFC 4253 §6.6: the blob starts with the type name as an SSH string).
- ``mac``: a unicast Ethernet address, stored lower case with colons; QEMU's default NIC
  address ``52:54:00:12:34:56`` unless told otherwise.
- ``extra_hosts``: name → IPv4 address pairs (written by the Wakame-vdc medium); names are
  host names, unique ignoring case (FAT file names are case-insensitive).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from imagewright.errors import InvalidArgumentError
from imagewright.metadata.network import DhcpNetwork, NetworkConfig

#: The address QEMU gives the first NIC when none is set (``-nic user`` without ``mac=``).
QEMU_DEFAULT_MAC = "52:54:00:12:34:56"
DEFAULT_IMAGE_ID = "ami-00000000"

#: Bounds on what we read from files a user names; the media themselves are small.
MAX_USER_DATA_BYTES = 16 * 1024 * 1024
MAX_KEY_FILE_BYTES = 256 * 1024
MAX_KEYS = 100
#: An RSA-16384 key is about 2.1 KiB of blob; anything far larger is not a public key.
MAX_KEY_BLOB_BYTES = 16 * 1024

#: Public key types OpenSSH accepts in authorized_keys (ssh-keygen -L lists certificates apart).
SSH_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$")


def validate_identifier(value: str, what: str) -> str:
    """An instance or image id: a plain word every format can carry unquoted."""
    if not _ID_RE.match(value):
        raise InvalidArgumentError(
            f"The {what} '{_shown(value)}' must be 1-128 letters, digits, dots, underscores or hyphens, "
            "starting with a letter or digit."
        )
    return value


def validate_hostname(value: str, what: str = "hostname") -> str:
    """An RFC 1123 host name or FQDN (RFC 1123 §2.1, RFC 952 labels)."""
    if not value or len(value) > 253:
        raise InvalidArgumentError(f"The {what} '{_shown(value)}' must be 1-253 characters long.")
    if value.endswith("."):
        raise InvalidArgumentError(f"The {what} '{_shown(value)}' must not end with a dot.")
    for label in value.split("."):
        if not _LABEL_RE.match(label):
            raise InvalidArgumentError(
                f"The {what} '{_shown(value)}' is not a valid host name: each dot-separated part must be "
                "1-63 letters, digits or hyphens and may not start or end with a hyphen."
            )
    return value


def parse_mac(text: str) -> str:
    """``52-54-00-AB-CD-EF`` or ``52:54:00:ab:cd:ef`` → ``52:54:00:ab:cd:ef`` (unicast only)."""
    value = text.strip()
    if not _MAC_RE.match(value):
        raise InvalidArgumentError(
            f"The MAC address '{_shown(text)}' is not six hexadecimal pairs such as 52:54:00:12:34:56."
        )
    octets = [int(part, 16) for part in re.split("[:-]", value)]
    if octets[0] & 1:
        raise InvalidArgumentError(
            f"The MAC address '{value}' is a multicast address; a NIC needs a unicast one."
        )
    return ":".join(f"{o:02x}" for o in octets)


@dataclass(frozen=True)
class SshPublicKey:
    """One OpenSSH public key: ``key_type`` ``blob`` (base64) and an optional ``comment``."""

    key_type: str
    blob: str
    comment: str = ""

    def __post_init__(self) -> None:
        _check_key_parts(self.key_type, self.blob, self.comment, "The SSH public key")

    @property
    def line(self) -> str:
        """The key as one authorized_keys line (no newline)."""
        return (
            f"{self.key_type} {self.blob} {self.comment}" if self.comment else f"{self.key_type} {self.blob}"
        )


@dataclass(frozen=True)
class ExtraHost:
    """A line for the guest's /etc/hosts: ``address name``."""

    name: str
    address: IPv4Address

    def __post_init__(self) -> None:
        validate_hostname(self.name, "extra host name")


@dataclass(frozen=True)
class InstanceDescription:
    """Everything a context medium tells a new instance; validated on construction."""

    instance_id: str
    hostname: str
    ssh_keys: tuple[SshPublicKey, ...] = ()
    #: Raw user-data bytes as the user gave them; None when none was given.
    user_data: bytes | None = None
    network: NetworkConfig = field(default_factory=DhcpNetwork)
    mac: str = QEMU_DEFAULT_MAC
    extra_hosts: tuple[ExtraHost, ...] = ()
    image_id: str = DEFAULT_IMAGE_ID
    #: An OpenNebula init script shipped as ``init.sh`` on the medium.
    init_script: bytes | None = None

    def __post_init__(self) -> None:
        validate_identifier(self.instance_id, "instance id")
        validate_identifier(self.image_id, "image id")
        validate_hostname(self.hostname)
        object.__setattr__(self, "mac", parse_mac(self.mac))
        if len(self.ssh_keys) > MAX_KEYS:
            raise InvalidArgumentError(
                f"{len(self.ssh_keys)} SSH keys is more than the {MAX_KEYS} supported."
            )
        for blob, what in ((self.user_data, "user-data"), (self.init_script, "init script")):
            if blob is not None and len(blob) > MAX_USER_DATA_BYTES:
                raise InvalidArgumentError(f"The {what} is larger than {MAX_USER_DATA_BYTES // 2**20} MiB.")
        seen: dict[str, str] = {}
        for host in self.extra_hosts:
            folded = host.name.lower()
            if folded in seen:
                raise InvalidArgumentError(
                    f"The extra host '{host.name}' is given twice (host names ignore case)."
                )
            seen[folded] = host.name

    @property
    def short_hostname(self) -> str:
        return self.hostname.split(".", 1)[0]


# --- reading what the user points at -------------------------------------------------------


def parse_ssh_public_keys(text: str, source: str) -> tuple[SshPublicKey, ...]:
    """Every key in an OpenSSH public key file (or an authorized_keys file without options).

    Blank lines and ``#`` comments are skipped. Anything else that is not a bare public key
    line is refused with a sentence naming ``source`` and the line number.
    """
    if "PRIVATE KEY-----" in text:
        raise InvalidArgumentError(f"{source} is a private key; give the public key (the .pub file).")
    if text.lstrip().startswith("---- BEGIN SSH2 PUBLIC KEY"):
        raise InvalidArgumentError(
            f"{source} is an RFC 4716 (SSH2) public key; convert it with 'ssh-keygen -i -f {source}'."
        )
    keys: list[SshPublicKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keys.append(_parse_key_line(line, f"{source} line {number}"))
        if len(keys) > MAX_KEYS:
            raise InvalidArgumentError(f"{source} holds more than {MAX_KEYS} keys.")
    if not keys:
        raise InvalidArgumentError(f"{source} holds no SSH public key.")
    return tuple(keys)


def read_ssh_key_file(path: Path) -> tuple[SshPublicKey, ...]:
    data = _read_bounded(path, MAX_KEY_FILE_BYTES, "SSH key file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError(
            f"The SSH key file '{path}' is not text, so it is not an OpenSSH public key."
        ) from None
    return parse_ssh_public_keys(text, f"The SSH key file '{path}'")


def read_user_data(path: Path, limit: int = MAX_USER_DATA_BYTES, what: str = "user-data file") -> bytes:
    return _read_bounded(path, limit, what)


def parse_extra_host(text: str) -> ExtraHost:
    """``NAME=IP`` → ExtraHost."""
    name, sep, address_text = text.partition("=")
    name, address_text = name.strip(), address_text.strip()
    if not sep or not name or not address_text:
        raise InvalidArgumentError(
            f"The extra host '{_shown(text)}' must be written NAME=IP, such as db.internal=192.0.2.20."
        )
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise InvalidArgumentError(
            f"The extra host address '{_shown(address_text)}' is not an IPv4 address."
        ) from None
    if not isinstance(address, IPv4Address):
        raise InvalidArgumentError(
            f"The extra host address '{address_text}' is IPv6; only IPv4 is supported."
        )
    return ExtraHost(validate_hostname(name, "extra host name"), address)


def collect_keys(groups: Iterable[tuple[SshPublicKey, ...]]) -> tuple[SshPublicKey, ...]:
    """Keys from several files in order, each key once."""
    seen: set[tuple[str, str]] = set()
    out: list[SshPublicKey] = []
    for group in groups:
        for key in group:
            ident = (key.key_type, key.blob)
            if ident not in seen:
                seen.add(ident)
                out.append(key)
    return tuple(out)


# --- helpers ----------------------------------------------------------------------------------


def _parse_key_line(line: str, where: str) -> SshPublicKey:
    fields = line.split(None, 2)
    if fields[0] not in SSH_KEY_TYPES:
        if fields[0].endswith("-cert-v01@openssh.com"):
            raise InvalidArgumentError(f"{where} is an SSH certificate, not a public key.")
        if any(f in SSH_KEY_TYPES for f in line.split()):
            raise InvalidArgumentError(
                f"{where} starts with authorized_keys options; give the bare public key line."
            )
        raise InvalidArgumentError(
            f"{where} is not an OpenSSH public key (it should start with a type such as ssh-ed25519)."
        )
    if len(fields) < 2:
        raise InvalidArgumentError(f"{where} has a key type but no key data.")
    comment = fields[2].strip() if len(fields) == 3 else ""
    _check_key_parts(fields[0], fields[1], comment, where)
    return SshPublicKey(fields[0], fields[1], comment)


def _check_key_parts(key_type: str, blob: str, comment: str, where: str) -> None:
    if key_type not in SSH_KEY_TYPES:
        raise InvalidArgumentError(f"{where} has the unknown key type '{_shown(key_type)}'.")
    if len(blob) > MAX_KEY_BLOB_BYTES * 4 // 3 + 4:
        raise InvalidArgumentError(f"{where} is far too long to be a public key.")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError(f"{where} has key data that is not valid base64.") from None
    # RFC 4253 §6.6: the blob begins with the key type as an SSH string (uint32 length + bytes).
    if len(raw) < 4:
        raise InvalidArgumentError(f"{where} has key data too short to be a {key_type} key.")
    (name_length,) = struct.unpack(">I", raw[:4])
    if name_length > len(raw) - 4 or raw[4 : 4 + name_length] != key_type.encode("ascii"):
        raise InvalidArgumentError(f"{where} has key data that is not a {key_type} key.")
    if len(raw) == 4 + name_length:
        raise InvalidArgumentError(f"{where} has key data with no key material after the type.")
    if comment and not comment.isprintable():
        raise InvalidArgumentError(f"{where} has a comment with control characters.")


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except IsADirectoryError:
        raise InvalidArgumentError(f"The {what} '{path}' is a directory.") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InvalidArgumentError(f"The {what} '{path}' cannot be read: {reason}.") from None
    if len(data) > limit:
        raise InvalidArgumentError(f"The {what} '{path}' is larger than the {_size_text(limit)} allowed.")
    return data


def _size_text(n: int) -> str:
    if n % 2**20 == 0:
        return f"{n // 2**20} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def _shown(value: str) -> str:
    """A user's value quoted in a message: printable and short."""
    shown = value.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 80 else shown[:77] + "..."
