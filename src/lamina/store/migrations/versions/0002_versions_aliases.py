"""Published versions (their numbering) and aliases.

Published versions live in `function_versions` next to `$LATEST`; this adds the counter that
keeps version numbers from being reused, and the aliases table.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_counters",
        sa.Column(
            "name",
            sa.String(64),
            sa.ForeignKey("functions.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("last_version", sa.Integer, nullable=False),
    )
    op.create_table(
        "function_aliases",
        sa.Column(
            "name",
            sa.String(64),
            sa.ForeignKey("functions.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("alias", sa.String(128), primary_key=True),
        sa.Column("function_version", sa.String(16), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("routing", sa.JSON, nullable=False),
        sa.Column("revision_id", sa.String(36), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("function_aliases")
    op.drop_table("version_counters")
