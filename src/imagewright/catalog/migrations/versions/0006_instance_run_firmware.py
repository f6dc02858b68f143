"""Instance runs record their firmware: SeaBIOS or OVMF, Secure Boot, and why it was chosen.

Revision ID: 0006
Revises: 0005 (instance_runs)
Create Date: 2026-12-07

Rows from before this revision ran under SeaBIOS (``run`` had no other firmware): the server
defaults say so.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance_runs") as batch:
        batch.add_column(sa.Column("firmware", sa.String(length=8), nullable=False, server_default="bios"))
        batch.add_column(sa.Column("secure_boot", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("firmware_reason", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("instance_runs") as batch:
        batch.drop_column("firmware_reason")
        batch.drop_column("secure_boot")
        batch.drop_column("firmware")
