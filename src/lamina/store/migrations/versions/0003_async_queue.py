"""The durable async queue and event invoke configs.

`async_events` holds every accepted `Event` invocation until it has run (or gone to its
failure destination); `event_invoke_configs` holds PutFunctionEventInvokeConfig's settings.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "async_events",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("function", sa.String(64), nullable=False),
        sa.Column("qualifier", sa.String(128), nullable=True),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("trace_id", sa.String(256), nullable=True),
        sa.Column("client_context", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("throttles", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("enqueued_at", sa.Float, nullable=False),
    )
    op.create_table(
        "event_invoke_configs",
        sa.Column(
            "name",
            sa.String(64),
            sa.ForeignKey("functions.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("qualifier", sa.String(128), primary_key=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("last_modified", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("event_invoke_configs")
    op.drop_table("async_events")
