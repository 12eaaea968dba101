"""public submissions held until the address's owner confirms them

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from lifecycle.store import models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_submissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("language", sa.String(length=2), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", models.UTCDateTime(), nullable=False),
        sa.Column("token_id", sa.String(length=40), nullable=False),
        sa.Column("confirmed_at", models.UTCDateTime(), nullable=True),
        sa.Column("waiting", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(["token_id"], ["action_tokens.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email", "kind", "waiting"),
        sa.UniqueConstraint("token_id"),
    )
    with op.batch_alter_table("pending_submissions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pending_submissions_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "public_mail",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("at", models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("public_mail", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_public_mail_key"), ["key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("public_mail", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_public_mail_key"))
    op.drop_table("public_mail")
    with op.batch_alter_table("pending_submissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_submissions_expires_at"))
    op.drop_table("pending_submissions")
