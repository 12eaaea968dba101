"""the audit keeps who acted by name, a step's outcome and the parties' own words apart

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("actor_name", sa.String(length=200), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("party_text", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(sa.Column("detail", sa.JSON(none_as_null=True), nullable=True))
    # The earlier steps keep the name their actor has now: the best that is known of then.
    op.execute(
        "UPDATE audit_events SET actor_name = COALESCE("
        "(SELECT people.name FROM people WHERE people.id = audit_events.actor_id), '') "
        "WHERE actor_id IS NOT NULL"
    )
    # A mentor's or mentee's reason was kept as the comment, which the staff see.
    op.execute(
        "UPDATE audit_events SET party_text = comment, comment = '' "
        "WHERE actor_role IN ('mentor', 'mentee') AND comment <> ''"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE audit_events SET comment = party_text "
        "WHERE actor_role IN ('mentor', 'mentee') AND party_text <> ''"
    )
    # Dropped in place (SQLite 3.35+): a copy of the table would replace the original, whose
    # dropping the foreign keys of the timers and outbox rows that point at its rows refuse.
    with op.batch_alter_table("audit_events", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("detail")
        batch_op.drop_column("party_text")
        batch_op.drop_column("actor_name")
