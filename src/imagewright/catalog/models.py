"""The catalog's tables, as SQLAlchemy 2 declarative models (one schema for SQLite and PostgreSQL).

Two groups:

- **accounts** (Keystone v3's identity and assignment model, cut down): ``domains``, ``projects``,
  ``users``, ``roles``, ``role_assignments`` (a user's role on a project), ``tokens`` (only the
  SHA-256 of each token is stored, never the token) and ``application_credentials`` with their
  ``application_credential_roles``. Ids are 32 hex digits as Keystone's; the ``Default`` domain
  has the id ``default`` as in Keystone.
- **images** (Glance's ``images``, ``image_properties``, ``image_tags``, ``image_members``):
  columns named as Glance names the attributes, so the API renders rows without translation.
  Rows are deleted, not marked deleted: a deleted image is gone (its blob is removed after the
  row; the sweep removes a blob whose row went without it).

An image being uploaded carries its **upload lease**: ``upload_holder`` (which process writes,
``host/pid/start-time``) and ``upload_expires_at`` (renewed while bytes flow). A ``saving`` row
whose lease expired, or whose holder is a dead process of this host, is reset by the sweep.

- **instances** (migration 0002): ``instances`` and their ``instance_interfaces`` (MACs and fixed
  addresses, each unique), and ``catalog_versions``, the change counter the metadata service polls.
- **metadata definitions** (migration 0003; Glance's ``metadef_*`` tables):
  ``metadef_namespaces`` and what each holds — ``metadef_objects``, ``metadef_properties`` (each
  a JSON schema fragment, stored as text), ``metadef_tags`` — and ``metadef_resource_types`` with their
  ``metadef_namespace_resource_types`` associations (a prefix and properties target per pair).
  Children go with their namespace (``ON DELETE CASCADE``).
- **image locations and background work** (migration 0004): ``image_locations`` holds an
  image's other blobs (copies in other stores, staged import data); the tables of background
  work (``tasks``, ``exports``, ``registry_secrets``) are in ``task_models``.
- **instance runs** (migration 0005): ``instance_runs``, one row per instance started under QEMU on
  this catalog's machines (``imagewright run``): its state, processes, accelerator and files;
  its firmware (SeaBIOS or OVMF, Secure Boot, and why) since migration 0006.

Later tables come with their own migrations; nothing here assumes they do not exist.

Source: Glance ``glance/db/sqlalchemy/models.py`` (image columns and sizes),
``glance/db/sqlalchemy/models_metadef.py`` (metadef columns and sizes), Keystone's
``identity/backends/sql_model.py`` and ``assignment/backends/sql.py`` (names and id shapes).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Constraint names fixed by convention, so Alembic migrations name them the same on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Keystone's id of the Default domain.
DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --- accounts -----------------------------------------------------------------------------------


class Domain(Base):
    __tablename__ = "domains"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("domain_id", "name", name="uq_projects_domain_id_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id"))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    domain: Mapped[Domain] = relationship(lazy="joined")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("domain_id", "name", name="uq_users_domain_id_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(ForeignKey("domains.id"))
    #: argon2id hash (PHC string); None = the user cannot log in with a password.
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    default_project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), nullable=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    domain: Mapped[Domain] = relationship(lazy="joined")


class Role(Base):
    __tablename__ = "roles"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)


class RoleAssignment(Base):
    __tablename__ = "role_assignments"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)


class Token(Base):
    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_expires_at", "expires_at"),)

    #: SHA-256 (hex) of the token: a stolen catalog yields no usable token.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), nullable=True
    )
    application_credential_id: Mapped[str | None] = mapped_column(
        ForeignKey("application_credentials.id", ondelete="CASCADE"), nullable=True
    )
    #: Comma-separated auth methods ("password", "token", "application_credential").
    methods: Mapped[str] = mapped_column(String(255))
    audit_id: Mapped[str] = mapped_column(String(32))
    #: The audit id of the token this one was made from (Keystone's audit chain), if any.
    parent_audit_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class ApplicationCredential(Base):
    __tablename__ = "application_credentials"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_application_credentials_user_id_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    #: argon2id hash of the secret (shown to its creator once).
    secret_hash: Mapped[str] = mapped_column(String(255))
    unrestricted: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    roles: Mapped[list[ApplicationCredentialRole]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True
    )


class ApplicationCredentialRole(Base):
    __tablename__ = "application_credential_roles"

    application_credential_id: Mapped[str] = mapped_column(
        ForeignKey("application_credentials.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)


# --- images -------------------------------------------------------------------------------------


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_owner", "owner"),
        Index("ix_images_status", "status"),
        Index("ix_images_visibility", "visibility"),
        Index("ix_images_created_at_id", "created_at", "id"),
        Index("ix_images_upload_expires_at", "upload_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: The project that owns the image (Glance allows any string, an admin may set it).
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(30))
    visibility: Mapped[str] = mapped_column(String(20))
    disk_format: Mapped[str | None] = mapped_column(String(20), nullable=True)
    container_format: Mapped[str | None] = mapped_column(String(20), nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    virtual_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(32), nullable=True)
    os_hash_algo: Mapped[str | None] = mapped_column(String(64), nullable=True)
    os_hash_value: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    min_disk: Mapped[int] = mapped_column(Integer, default=0)
    min_ram: Mapped[int] = mapped_column(Integer, default=0)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    os_hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    #: Where the bytes are: the store's id and the blob's location (set when an upload starts).
    store_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    location: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    upload_holder: Mapped[str | None] = mapped_column(String(255), nullable=True)
    upload_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    properties: Mapped[list[ImageProperty]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True, order_by="ImageProperty.name"
    )
    tags: Mapped[list[ImageTag]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True, order_by="ImageTag.value"
    )
    #: Blobs besides ``location``: copies in other stores, staged and pending import data.
    extra_locations: Mapped[list[ImageLocation]] = relationship(
        lazy="selectin", viewonly=True, order_by="ImageLocation.created_at"
    )


class ImageProperty(Base):
    __tablename__ = "image_properties"
    __table_args__ = (Index("ix_image_properties_name", "name"),)

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ImageTag(Base):
    __tablename__ = "image_tags"
    __table_args__ = (Index("ix_image_tags_value", "value"),)

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)


class ImageMember(Base):
    __tablename__ = "image_members"
    __table_args__ = (Index("ix_image_members_member_status", "member", "status"),)

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    #: The project the image is shared with.
    member: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class ImageLocation(Base):
    """A blob of an image besides ``images.location`` (its primary copy); see ``task_models``."""

    __tablename__ = "image_locations"
    __table_args__ = (Index("ix_image_locations_image_id", "image_id"),)

    #: The blob's location (``file:///…``, ``s3://…``): one row per blob.
    location: Mapped[str] = mapped_column(String(1024), primary_key=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    store_id: Mapped[str] = mapped_column(String(64))
    #: ``active`` (a copy), ``staging`` (glance-direct data), ``pending`` (being written by a task).
    status: Mapped[str] = mapped_column(String(20))
    task_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


# --- instances ----------------------------------------------------------------------------------


class Instance(Base):
    """A virtual machine's record: what the metadata service tells it and who owns it.

    ``revision`` is the value of the ``instances`` change counter (``CatalogVersion``) written by
    the transaction that last changed the row: a metadata service compares it with the revision it
    cached. Owned data (keys, user-data, tags, vendor-data) lives in the row; interfaces, which are
    looked up by address and MAC, in ``instance_interfaces``.
    """

    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_project_id_created_at", "project_id", "created_at"),
        Index("ix_instances_revision", "revision"),
    )

    #: ``i-`` and 17 hex digits, as EC2's.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    #: The registry image it was made from (a Glance UUID; not a foreign key: images may go first).
    image_id: Mapped[str] = mapped_column(String(36))
    hostname: Mapped[str] = mapped_column(String(253))
    instance_type: Mapped[str] = mapped_column(String(64))
    availability_zone: Mapped[str] = mapped_column(String(255))
    reservation_id: Mapped[str] = mapped_column(String(32))
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    #: JSON: [[key name, OpenSSH public key line], ...] in the order given.
    ssh_keys: Mapped[str] = mapped_column(Text, default="[]")
    user_data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: JSON object served as OpenStack's vendor_data.json; None: none given.
    vendor_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: JSON object of tag key -> value.
    tags: Mapped[str] = mapped_column(Text, default="{}")
    #: ``dhcp`` or ``static:IP/MASK,GATEWAY,DNS…`` (``metadata.network.parse_network_spec``).
    network: Mapped[str] = mapped_column(String(255), default="dhcp")
    security_groups: Mapped[str] = mapped_column(Text, default='["default"]')
    #: IMDS options, as EC2's ``MetadataOptions``: optional|required, enabled|disabled.
    http_tokens: Mapped[str] = mapped_column(String(16), default="optional")
    http_endpoint: Mapped[str] = mapped_column(String(16), default="enabled")
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    interfaces: Mapped[list[InstanceInterface]] = relationship(
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="InstanceInterface.device_index",
    )


class InstanceInterface(Base):
    """A NIC of an instance: its MAC and fixed address, each unique in the catalog.

    A fixed address names one instance to the metadata service (a request from it is that
    instance's), so no two interfaces may share one; no two may share a MAC either.
    """

    __tablename__ = "instance_interfaces"

    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    device_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    #: The fixed address (IPv4 or IPv6, canonical text); None: the instance has none known.
    address: Mapped[str | None] = mapped_column(String(45), nullable=True, unique=True)
    public_address: Mapped[str | None] = mapped_column(String(45), nullable=True)


class InstanceRun(Base):
    """An instance started under QEMU by ``imagewright run``: where, how, and in what state.

    ``state``: ``starting`` (the supervisor is starting QEMU), ``running``, ``stopped`` (QEMU
    exited; ``exit_status`` says how), ``failed`` (QEMU never ran; ``message`` says why).
    ``ps`` checks a ``running`` row against the live process (``qemu_pid`` on ``host``), so a
    crash that left no trace in the catalog is still seen.
    """

    __tablename__ = "instance_runs"

    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    #: The machine the QEMU process runs on (its host name): pids mean something only there.
    host: Mapped[str] = mapped_column(String(255))
    supervisor_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    qemu_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    accelerator: Mapped[str] = mapped_column(String(8))
    accelerator_reason: Mapped[str] = mapped_column(Text, default="")
    #: The instance's own directory (overlay, console log, QMP socket, context medium).
    directory: Mapped[str] = mapped_column(Text)
    #: The cached base image the overlay sits on, and its QEMU format.
    base_path: Mapped[str] = mapped_column(Text)
    base_format: Mapped[str] = mapped_column(String(16))
    #: How the instance learns who it is: ``metadata`` or a context medium's kind.
    context: Mapped[str] = mapped_column(String(16))
    #: JSON: [[host port, guest port], ...] forwarded from 127.0.0.1.
    port_forwards: Mapped[str] = mapped_column(Text, default="[]")
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    memory_mib: Mapped[int] = mapped_column(Integer, default=512)
    #: ``bios`` (SeaBIOS) or ``uefi`` (OVMF), Secure Boot on or not, and why (migration 0006).
    firmware: Mapped[str] = mapped_column(String(8), default="bios")
    secure_boot: Mapped[bool] = mapped_column(Boolean, default=False)
    firmware_reason: Mapped[str] = mapped_column(Text, default="")
    exit_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class CatalogVersion(Base):
    """Change counters: ``instances`` goes up by one in every transaction that changes an instance.

    Every metadata service process polls this one row (a primary-key read) to learn that its
    cache is stale, whichever process or machine made the change.
    """

    __tablename__ = "catalog_versions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


# --- metadata definitions -----------------------------------------------------------------------


class MetadefNamespace(Base):
    __tablename__ = "metadef_namespaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(80), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(80), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: ``public`` or ``private`` (visible to its owner's project and admins only).
    visibility: Mapped[str] = mapped_column(String(32))
    #: A protected namespace, and everything in it, cannot be deleted.
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class MetadefObject(Base):
    __tablename__ = "metadef_objects"
    __table_args__ = (UniqueConstraint("namespace_id", "name", name="uq_metadef_objects_namespace_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("metadef_namespaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: JSON list of required property names.
    required: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: JSON object: property name -> property definition.
    json_schema: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class MetadefProperty(Base):
    __tablename__ = "metadef_properties"
    __table_args__ = (
        UniqueConstraint("namespace_id", "name", name="uq_metadef_properties_namespace_id_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("metadef_namespaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    #: JSON object: the property definition (title, type, enum, ...), without its name.
    json_schema: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class MetadefTag(Base):
    __tablename__ = "metadef_tags"
    __table_args__ = (UniqueConstraint("namespace_id", "name", name="uq_metadef_tags_namespace_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace_id: Mapped[int] = mapped_column(ForeignKey("metadef_namespaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class MetadefResourceType(Base):
    __tablename__ = "metadef_resource_types"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    #: The seeded system types (OS::Glance::Image ...) cannot be deleted.
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class MetadefNamespaceResourceType(Base):
    __tablename__ = "metadef_namespace_resource_types"

    resource_type_id: Mapped[int] = mapped_column(
        ForeignKey("metadef_resource_types.id", ondelete="CASCADE"), primary_key=True
    )
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("metadef_namespaces.id", ondelete="CASCADE"), primary_key=True
    )
    prefix: Mapped[str | None] = mapped_column(String(80), nullable=True)
    properties_target: Mapped[str | None] = mapped_column(String(80), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    resource_type: Mapped[MetadefResourceType] = relationship(lazy="joined")
