"""Instances: the records the metadata service serves, their interfaces, and change counters.

``instances`` (owned by a project), ``instance_interfaces`` (MAC and fixed address of each NIC,
each unique in the catalog, because a fixed address names one instance to the metadata
service), and ``catalog_versions`` with its one row ``instances`` = 0, the counter every change
to an instance raises and every metadata service process polls.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_versions",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_catalog_versions")),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("image_id", sa.String(length=36), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("instance_type", sa.String(length=64), nullable=False),
        sa.Column("availability_zone", sa.String(length=255), nullable=False),
        sa.Column("reservation_id", sa.String(length=32), nullable=False),
        sa.Column("launch_index", sa.Integer(), nullable=False),
        sa.Column("ssh_keys", sa.Text(), nullable=False),
        sa.Column("user_data", sa.LargeBinary(), nullable=True),
        sa.Column("vendor_data", sa.Text(), nullable=True),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("network", sa.String(length=255), nullable=False),
        sa.Column("security_groups", sa.Text(), nullable=False),
        sa.Column("http_tokens", sa.String(length=16), nullable=False),
        sa.Column("http_endpoint", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_instances_project_id_projects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
    )
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(
            "ix_instances_project_id_created_at", ["project_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_instances_revision", ["revision"], unique=False)

    op.create_table(
        "instance_interfaces",
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("device_index", sa.Integer(), nullable=False),
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("address", sa.String(length=45), nullable=True),
        sa.Column("public_address", sa.String(length=45), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_instance_interfaces_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "device_index", name=op.f("pk_instance_interfaces")),
        sa.UniqueConstraint("address", name=op.f("uq_instance_interfaces_address")),
        sa.UniqueConstraint("mac", name=op.f("uq_instance_interfaces_mac")),
    )
    versions = sa.table("catalog_versions", sa.column("name"), sa.column("version"))
    op.bulk_insert(versions, [{"name": "instances", "version": 0}])


def downgrade() -> None:
    op.drop_table("instance_interfaces")
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index("ix_instances_revision")
        batch_op.drop_index("ix_instances_project_id_created_at")
    op.drop_table("instances")
    op.drop_table("catalog_versions")
