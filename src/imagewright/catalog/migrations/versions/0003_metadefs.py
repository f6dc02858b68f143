"""The metadata definitions catalog: namespaces, objects, properties, tags, resource types.

Also seeds the system resource types Glance seeds (``OS::Glance::Image``, ``OS::Cinder::Volume``,
``OS::Nova::Flavor``, ``OS::Nova::Aggregate``, ``OS::Nova::Server``; protected: they cannot be
deleted). The default namespaces are loaded by ``catalog.metadefs.load_defaults`` when these
tables are created, not here, so the shipped set can grow without a migration.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SYSTEM_RESOURCE_TYPES = (
    "OS::Glance::Image",
    "OS::Cinder::Volume",
    "OS::Nova::Flavor",
    "OS::Nova::Aggregate",
    "OS::Nova::Server",
)


def _stamps() -> list[sa.Column[datetime]]:
    return [
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    ]


def _namespace_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["namespace_id"],
        ["metadef_namespaces.id"],
        name=op.f(f"fk_{table}_namespace_id_metadef_namespaces"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "metadef_namespaces",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String(length=80), nullable=False),
        sa.Column("display_name", sa.String(length=80), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("visibility", sa.String(length=32), nullable=False),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metadef_namespaces")),
        sa.UniqueConstraint("namespace", name=op.f("uq_metadef_namespaces_namespace")),
    )
    op.create_table(
        "metadef_resource_types",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("protected", sa.Boolean(), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metadef_resource_types")),
        sa.UniqueConstraint("name", name=op.f("uq_metadef_resource_types_name")),
    )
    for table, extra in (
        (
            "metadef_objects",
            [
                sa.Column("description", sa.Text(), nullable=True),
                sa.Column("required", sa.Text(), nullable=True),
                sa.Column("json_schema", sa.Text(), nullable=False),
            ],
        ),
        ("metadef_properties", [sa.Column("json_schema", sa.Text(), nullable=False)]),
        ("metadef_tags", []),
    ):
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("namespace_id", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=80), nullable=False),
            *extra,
            *_stamps(),
            _namespace_fk(table),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
            sa.UniqueConstraint("namespace_id", "name", name=f"uq_{table}_namespace_id_name"),
        )
    op.create_table(
        "metadef_namespace_resource_types",
        sa.Column("resource_type_id", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=80), nullable=True),
        sa.Column("properties_target", sa.String(length=80), nullable=True),
        *_stamps(),
        _namespace_fk("metadef_namespace_resource_types"),
        sa.ForeignKeyConstraint(
            ["resource_type_id"],
            ["metadef_resource_types.id"],
            name=op.f("fk_metadef_namespace_resource_types_resource_type_id_metadef_resource_types"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "resource_type_id", "namespace_id", name=op.f("pk_metadef_namespace_resource_types")
        ),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    resource_types = sa.table(
        "metadef_resource_types",
        sa.column("name"),
        sa.column("protected"),
        sa.column("created_at"),
        sa.column("updated_at"),
    )
    op.bulk_insert(
        resource_types,
        [
            {"name": name, "protected": True, "created_at": now, "updated_at": now}
            for name in SYSTEM_RESOURCE_TYPES
        ],
    )


def downgrade() -> None:
    op.drop_table("metadef_namespace_resource_types")
    op.drop_table("metadef_tags")
    op.drop_table("metadef_properties")
    op.drop_table("metadef_objects")
    op.drop_table("metadef_resource_types")
    op.drop_table("metadef_namespaces")
