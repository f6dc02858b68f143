"""Instances in the catalog: what a new VM is told, who owns it, and the change counter.

``InstanceSpec.build`` validates what a user asked for (the CLI and the compute API build one
from their options; ``imagewright run`` will too); ``create_instance`` stores it, with a fresh
``i-`` id, a reservation id and generated MACs where none were given. Every change (create,
delete) raises the ``instances`` change counter (``catalog_versions``) in the same transaction
and stamps the row's ``revision`` with the new value, so a metadata service that cached the
instance learns of the change with one primary-key read (``instances_version``).

Rules that keep one instance from being taken for another by the metadata service:

- a fixed address and a MAC belong to at most one interface in the catalog (unique columns;
  the repository answers 409 with a sentence before the database would);
- an address is a unicast host address, and not 127.0.0.1 or ::1 (every local process speaks
  from those), nor 169.254.169.254 (the metadata service's own); other loopback addresses are
  accepted for single-user machines and tests, where the operator knows who binds them;
- a static network's address is the first interface's fixed address.

Who may do what (the compute API; the CLI acts as the operator): a project's readers list and
show its instances, its members create and delete them; an admin sees and changes all. Another
project's instance is 404, as Glance hides images.

Source: EC2 ``RunInstances`` (ids, ``MetadataOptions`` HttpTokens/HttpEndpoint, tag rules for
instance metadata: keys without ``/``), Nova ``compute/api.py`` (user-data limit, key pairs).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imagewright.catalog.accounts import check_name, utcnow
from imagewright.catalog.models import CatalogVersion, Image, ImageMember, Instance, InstanceInterface
from imagewright.catalog.tokens import AuthContext
from imagewright.errors import ConflictError, ForbiddenError, InvalidArgumentError, NotFoundError
from imagewright.metadata.imds import ServedInstance, ServedInterface, ec2_image_id
from imagewright.metadata.instance import (
    MAX_KEYS,
    InstanceDescription,
    SshPublicKey,
    parse_mac,
    parse_ssh_public_keys,
    validate_hostname,
)
from imagewright.metadata.network import DhcpNetwork, NetworkConfig, StaticNetwork, parse_network_spec

VERSION_NAME = "instances"
MAX_USER_DATA_BYTES = 64 * 1024
MAX_VENDOR_DATA_BYTES = 64 * 1024
MAX_TAGS = 50
MAX_INTERFACES = 8
HTTP_TOKENS = ("optional", "required")
HTTP_ENDPOINTS = ("enabled", "disabled")
DEFAULT_INSTANCE_TYPE = "m1.small"
DEFAULT_AVAILABILITY_ZONE = "nova"
#: QEMU's OUI: generated MACs are 52:54:00:xx:xx:xx, as QEMU and libvirt make them.
GENERATED_MAC_PREFIX = "52:54:00"
#: Addresses no instance may have: shared by every local process, or the service's own.
FORBIDDEN_ADDRESSES = frozenset(
    {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), ipaddress.ip_address("169.254.169.254")}
)

_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_INSTANCE_ID_RE = re.compile(r"^i-[0-9a-f]{8,17}$")


def new_instance_id() -> str:
    return "i-" + secrets.token_hex(9)[:17]


def instance_not_found(instance_id: str) -> NotFoundError:
    return NotFoundError(f"No instance found with ID {instance_id[:64]}.")


# --- validation ---------------------------------------------------------------------------------


def parse_address(text: str, what: str = "address") -> str:
    """A fixed address in canonical text; refuses what cannot name exactly one instance."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        raise InvalidArgumentError(f"The {what} {text[:64]!r} is not an IPv4 or IPv6 address.") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in FORBIDDEN_ADDRESSES:
        raise InvalidArgumentError(
            f"The {what} {address} cannot be an instance's: every local process (or the metadata "
            "service itself) uses it."
        )
    if address.is_unspecified or address.is_multicast or address == ipaddress.ip_address("255.255.255.255"):
        raise InvalidArgumentError(f"The {what} {address} is not a unicast host address.")
    return str(address)


def _check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise InvalidArgumentError(f"{len(tags)} tags is more than the {MAX_TAGS} allowed.")
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgumentError("Tag keys and values must be strings.")
        if not 1 <= len(key) <= 128 or "/" in key or key in (".", "..") or not key.isprintable():
            raise InvalidArgumentError(
                f"The tag key {key[:64]!r} must be 1-128 printable characters without '/' "
                "(the metadata service serves it as a path)."
            )
        if len(value) > 256 or not value.isprintable():
            raise InvalidArgumentError(
                f"The value of the tag {key!r} must be at most 256 printable characters."
            )
    return dict(tags)


def parse_tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` → (key, value)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidArgumentError(f"The tag {text[:64]!r} must be written KEY=VALUE.")
    return key, value


def _check_vendor_data(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgumentError("Vendor data must be a JSON object.")
    if len(json.dumps(value)) > MAX_VENDOR_DATA_BYTES:
        raise InvalidArgumentError(f"Vendor data is larger than {MAX_VENDOR_DATA_BYTES // 1024} KiB.")
    return value


@dataclass(frozen=True)
class InterfaceSpec:
    mac: str | None = None
    address: str | None = None
    public_address: str | None = None


@dataclass(frozen=True)
class InstanceSpec:
    """A validated request for an instance (``build`` checks every field)."""

    name: str
    image_id: str
    hostname: str
    keys: tuple[tuple[str, SshPublicKey], ...] = ()
    user_data: bytes | None = None
    vendor_data: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    interfaces: tuple[InterfaceSpec, ...] = (InterfaceSpec(),)
    network: NetworkConfig = field(default_factory=DhcpNetwork)
    instance_type: str = DEFAULT_INSTANCE_TYPE
    availability_zone: str = DEFAULT_AVAILABILITY_ZONE
    http_tokens: str = "optional"
    http_endpoint: str = "enabled"

    @classmethod
    def build(
        cls,
        *,
        name: str,
        image_id: str,
        hostname: str | None = None,
        keys: Sequence[tuple[str, SshPublicKey]] = (),
        user_data: bytes | None = None,
        vendor_data: Any = None,
        tags: Mapping[str, str] | None = None,
        addresses: Sequence[str] = (),
        macs: Sequence[str] = (),
        public_address: str | None = None,
        network: str | NetworkConfig = "dhcp",
        instance_type: str = DEFAULT_INSTANCE_TYPE,
        availability_zone: str = DEFAULT_AVAILABILITY_ZONE,
        http_tokens: str = "optional",
        http_endpoint: str = "enabled",
    ) -> InstanceSpec:
        check_name("instance", name)
        if hostname is None:
            candidate = name.lower()
            try:
                hostname = validate_hostname(candidate)
            except InvalidArgumentError:
                raise InvalidArgumentError(
                    f"The name {name!r} is not a host name; give one with --hostname."
                ) from None
        validate_hostname(hostname)
        if len(keys) > MAX_KEYS:
            raise InvalidArgumentError(f"{len(keys)} SSH keys is more than the {MAX_KEYS} supported.")
        names = [key_name for key_name, _ in keys]
        for key_name in names:
            check_name("key", key_name)
            if "=" in key_name or "\n" in key_name:
                raise InvalidArgumentError(f"The key name {key_name!r} may not contain '='.")
        if len(set(names)) != len(names):
            raise InvalidArgumentError("Two SSH keys have the same name.")
        if user_data is not None and len(user_data) > MAX_USER_DATA_BYTES:
            raise InvalidArgumentError(
                f"The user-data is {len(user_data)} bytes, more than the "
                f"{MAX_USER_DATA_BYTES // 1024} KiB allowed."
            )
        config = parse_network_spec(network) if isinstance(network, str) else network
        if http_tokens not in HTTP_TOKENS:
            raise InvalidArgumentError(f"http_tokens must be optional or required, not {http_tokens!r}.")
        if http_endpoint not in HTTP_ENDPOINTS:
            raise InvalidArgumentError(f"http_endpoint must be enabled or disabled, not {http_endpoint!r}.")
        if not _TYPE_RE.match(instance_type):
            raise InvalidArgumentError(
                f"The instance type {instance_type[:64]!r} is not a type name such as m1.small."
            )
        if "/" in availability_zone:
            raise InvalidArgumentError("An availability zone name may not contain '/'.")
        check_name("availability zone", availability_zone)
        interfaces = _interfaces(addresses, macs, public_address, config)
        return cls(
            name=name,
            image_id=image_id,
            hostname=hostname,
            keys=tuple(keys),
            user_data=user_data,
            vendor_data=_check_vendor_data(vendor_data),
            tags=_check_tags(tags or {}),
            interfaces=interfaces,
            network=config,
            instance_type=instance_type,
            availability_zone=availability_zone,
            http_tokens=http_tokens,
            http_endpoint=http_endpoint,
        )


def _interfaces(
    addresses: Sequence[str], macs: Sequence[str], public_address: str | None, network: NetworkConfig
) -> tuple[InterfaceSpec, ...]:
    fixed = [parse_address(text) for text in addresses]
    hardware = [parse_mac(text) for text in macs]
    if isinstance(network, StaticNetwork):
        static = str(network.address)
        if not fixed:
            fixed = [static]
        elif fixed[0] != static:
            raise InvalidArgumentError(
                f"The first address {fixed[0]} is not the static network's address {static}."
            )
    count = max(len(fixed), len(hardware), 1)
    if count > MAX_INTERFACES:
        raise InvalidArgumentError(f"An instance has at most {MAX_INTERFACES} interfaces.")
    for values, what in ((fixed, "address"), (hardware, "MAC address")):
        if len(set(values)) != len(values):
            raise InvalidArgumentError(f"The same {what} is given twice.")
    public = parse_address(public_address, "public address") if public_address else None
    return tuple(
        InterfaceSpec(
            mac=hardware[index] if index < len(hardware) else None,
            address=fixed[index] if index < len(fixed) else None,
            public_address=public if index == 0 else None,
        )
        for index in range(count)
    )


# --- the change counter -------------------------------------------------------------------------


def instances_version(session: Session) -> int:
    """The ``instances`` change counter (one primary-key read)."""
    return int(session.scalar(select(CatalogVersion.version).where(CatalogVersion.name == VERSION_NAME)) or 0)


def _bump_version(session: Session) -> int:
    version = session.scalar(
        update(CatalogVersion)
        .where(CatalogVersion.name == VERSION_NAME)
        .values(version=CatalogVersion.version + 1)
        .returning(CatalogVersion.version)
    )
    if version is None:  # a catalog made before the counter row existed cannot happen (0002 seeds it)
        raise ConflictError("The catalog has no instances change counter; run 'imagewright db upgrade'.")
    return int(version)


# --- images -------------------------------------------------------------------------------------


def resolve_image(session: Session, ref: str, project_id: str | None, *, is_admin: bool) -> Image:
    """The active image ``ref`` (an id, or a name that only one visible image has) names for a project."""
    conditions = [Image.id == ref] if len(ref) <= 36 else []
    visible = or_(
        Image.visibility.in_(("public", "community")),
        Image.owner == project_id,
        Image.visibility.in_(("shared",))
        & exists().where(ImageMember.image_id == Image.id, ImageMember.member == (project_id or "")),
    )
    query = select(Image).where(or_(*conditions, Image.name == ref))
    if not is_admin:
        query = query.where(visible)
    found = list(session.scalars(query.limit(3)))
    by_id = [image for image in found if image.id == ref]
    if by_id:
        found = by_id
    if not found:
        raise NotFoundError(f"No image {ref[:64]!r} is visible to the project.")
    if len(found) > 1:
        raise ConflictError(f"More than one image is named {ref[:64]!r}; give its id.")
    image = found[0]
    if image.status != "active":
        raise ConflictError(f"The image {image.id} is {image.status}, not active: it has no data to boot.")
    return image


# --- instances ----------------------------------------------------------------------------------


def _generated_mac(session: Session, taken: set[str]) -> str:
    for _ in range(64):
        mac = GENERATED_MAC_PREFIX + "".join(f":{byte:02x}" for byte in secrets.token_bytes(3))
        if mac not in taken and not session.scalar(
            select(InstanceInterface.mac).where(InstanceInterface.mac == mac)
        ):
            return mac
    raise ConflictError("No free MAC address could be generated; give one with --mac.")


def create_instance(session: Session, spec: InstanceSpec, project_id: str) -> Instance:
    """Store a new instance of ``project_id``; ConflictError when an address or MAC is taken."""
    for interface in spec.interfaces:
        if interface.address and session.scalar(
            select(InstanceInterface.instance_id).where(InstanceInterface.address == interface.address)
        ):
            raise ConflictError(f"The address {interface.address} belongs to another instance.")
        if interface.mac and session.scalar(
            select(InstanceInterface.instance_id).where(InstanceInterface.mac == interface.mac)
        ):
            raise ConflictError(f"The MAC address {interface.mac} belongs to another instance.")
    taken = {interface.mac for interface in spec.interfaces if interface.mac}
    rows: list[InstanceInterface] = []
    for index, interface in enumerate(spec.interfaces):
        mac = interface.mac or _generated_mac(session, taken)
        taken.add(mac)
        rows.append(
            InstanceInterface(
                device_index=index,
                mac=mac,
                address=interface.address,
                public_address=interface.public_address,
            )
        )
    instance_id = new_instance_id()
    while session.get(Instance, instance_id) is not None:
        instance_id = new_instance_id()
    now = utcnow()
    instance = Instance(
        id=instance_id,
        name=spec.name,
        project_id=project_id,
        image_id=spec.image_id,
        hostname=spec.hostname,
        instance_type=spec.instance_type,
        availability_zone=spec.availability_zone,
        reservation_id="r-" + secrets.token_hex(9)[:17],
        launch_index=0,
        ssh_keys=json.dumps([[name, key.line] for name, key in spec.keys]),
        user_data=spec.user_data,
        vendor_data=json.dumps(spec.vendor_data) if spec.vendor_data is not None else None,
        tags=json.dumps(spec.tags),
        network=network_spec_text(spec.network),
        security_groups=json.dumps(["default"]),
        http_tokens=spec.http_tokens,
        http_endpoint=spec.http_endpoint,
        revision=_bump_version(session),
        created_at=now,
        updated_at=now,
    )
    instance.interfaces = rows
    session.add(instance)
    try:
        session.flush()
    except IntegrityError:
        raise ConflictError(
            "An address or MAC address of the instance was taken meanwhile; try again."
        ) from None
    return instance


def network_spec_text(network: NetworkConfig) -> str:
    """The ``dhcp`` / ``static:…`` text ``parse_network_spec`` reads back."""
    if isinstance(network, StaticNetwork):
        parts = [network.interface.with_prefixlen, str(network.gateway) if network.gateway else ""]
        parts += [str(server) for server in network.dns]
        return "static:" + ",".join(parts).rstrip(",")
    return "dhcp"


def get_instance(session: Session, instance_id: str) -> Instance:
    instance = session.get(Instance, instance_id) if len(instance_id) <= 32 else None
    if instance is None:
        raise instance_not_found(instance_id)
    return instance


def list_instances(session: Session, project_id: str | None) -> list[Instance]:
    """A project's instances (every project's when None), oldest first."""
    query = select(Instance)
    if project_id is not None:
        query = query.where(Instance.project_id == project_id)
    return list(session.scalars(query.order_by(Instance.created_at, Instance.id)))


def delete_instance(session: Session, instance: Instance) -> None:
    _bump_version(session)
    session.delete(instance)
    session.flush()


def find_instance_by_address(session: Session, address: str) -> Instance | None:
    instance_id = session.scalar(
        select(InstanceInterface.instance_id).where(InstanceInterface.address == address)
    )
    return session.get(Instance, instance_id) if instance_id else None


def validate_instance_id(instance_id: str) -> str:
    """``instance_id`` when it has the shape of one (``i-`` and 8-17 hex digits), else NotFoundError."""
    if not _INSTANCE_ID_RE.match(instance_id):
        raise instance_not_found(instance_id)
    return instance_id


def find_instance(session: Session, instance_id: str) -> Instance | None:
    if not _INSTANCE_ID_RE.match(instance_id):
        return None
    return session.get(Instance, instance_id)


def revisions(session: Session, instance_ids: Iterable[str]) -> dict[str, int]:
    """id -> revision of those of ``instance_ids`` that still exist."""
    wanted = list(instance_ids)
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(
            (row_id, int(revision))
            for row_id, revision in session.execute(
                select(Instance.id, Instance.revision).where(Instance.id.in_(chunk))
            )
        )
    return found


# --- who may ------------------------------------------------------------------------------------


def require_visible(caller: AuthContext, instance: Instance) -> None:
    if caller.is_admin:
        return
    if not caller.has_role("reader") or instance.project_id != caller.project_id:
        raise instance_not_found(instance.id)


def require_change(caller: AuthContext, instance: Instance | None, doing: str) -> None:
    """Admin, or the member role on the instance's (or, to create, the token's) project."""
    if instance is not None:
        require_visible(caller, instance)
    if caller.is_admin or caller.has_role("member"):
        return
    raise ForbiddenError(f"You need the member role to {doing} instances.")


# --- what the metadata service serves ------------------------------------------------------------


def stored_keys(instance: Instance) -> list[tuple[str, SshPublicKey]]:
    pairs = json.loads(instance.ssh_keys or "[]")
    return [(str(name), parse_ssh_public_keys(str(line), "a stored key")[0]) for name, line in pairs]


def served_instance(instance: Instance, region: str) -> ServedInstance:
    """The metadata service's view of a catalog row."""
    keys = stored_keys(instance)
    interfaces = tuple(
        ServedInterface(row.device_index, row.mac, row.address, row.public_address)
        for row in instance.interfaces
    )
    description = InstanceDescription(
        instance_id=instance.id,
        hostname=instance.hostname,
        ssh_keys=tuple(key for _, key in keys),
        user_data=instance.user_data,
        network=parse_network_spec(instance.network),
        mac=interfaces[0].mac,
        image_id=ec2_image_id(instance.image_id),
    )
    return ServedInstance(
        description=description,
        name=instance.name,
        project_id=instance.project_id,
        image_uuid=instance.image_id,
        key_names=tuple(name for name, _ in keys),
        interfaces=interfaces,
        instance_type=instance.instance_type,
        availability_zone=instance.availability_zone,
        region=region,
        reservation_id=instance.reservation_id,
        launch_index=instance.launch_index,
        security_groups=tuple(json.loads(instance.security_groups or "[]")),
        tags=tuple(sorted(json.loads(instance.tags or "{}").items())),
        vendor_data=json.loads(instance.vendor_data) if instance.vendor_data else None,
        created_at=instance.created_at,
    )


def instance_view(instance: Instance, *, with_user_data: bool = False) -> dict[str, Any]:
    """An instance as the compute API and ``imagewright instance show --json`` print it."""
    view: dict[str, Any] = {
        "id": instance.id,
        "name": instance.name,
        "project_id": instance.project_id,
        "image_id": instance.image_id,
        "hostname": instance.hostname,
        "instance_type": instance.instance_type,
        "availability_zone": instance.availability_zone,
        "reservation_id": instance.reservation_id,
        "interfaces": [
            {
                "device_index": row.device_index,
                "mac": row.mac,
                "address": row.address,
                "public_address": row.public_address,
            }
            for row in instance.interfaces
        ],
        "network": instance.network,
        "key_names": [name for name, _ in json.loads(instance.ssh_keys or "[]")],
        "tags": json.loads(instance.tags or "{}"),
        "metadata_options": {"http_tokens": instance.http_tokens, "http_endpoint": instance.http_endpoint},
        "has_user_data": instance.user_data is not None,
        "created_at": instance.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if with_user_data:
        view["public_keys"] = [line for _, line in json.loads(instance.ssh_keys or "[]")]
        view["user_data"] = (
            base64.b64encode(instance.user_data).decode("ascii") if instance.user_data is not None else None
        )
        view["vendor_data"] = json.loads(instance.vendor_data) if instance.vendor_data else None
    return view
