"""Functions and their versions ($LATEST only until versions land).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "functions",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
    )
    op.create_table(
        "function_versions",
        sa.Column(
            "name",
            sa.String(64),
            sa.ForeignKey("functions.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version", sa.String(16), primary_key=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("code_sha256_hex", sa.String(64), nullable=False),
        sa.Column("revision_id", sa.String(36), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("function_versions")
    op.drop_table("functions")
