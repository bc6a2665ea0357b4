"""IAM and STS: users, access keys, roles, managed policies and their versions, attachments,
inline policies, and STS sessions (temporary credentials). Secrets are stored sealed.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "iam_users",
        sa.Column("name_key", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False, unique=True),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
    )
    op.create_table(
        "iam_access_keys",
        sa.Column("access_key_id", sa.String(32), primary_key=True),
        sa.Column(
            "user_key",
            sa.String(64),
            sa.ForeignKey("iam_users.name_key", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("secret_sealed", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "iam_roles",
        sa.Column("name_key", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role_id", sa.String(32), nullable=False, unique=True),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("trust_policy", sa.Text, nullable=False),
        sa.Column("description", sa.String(1000), nullable=True),
        sa.Column("max_session", sa.Integer, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
    )
    op.create_table(
        "iam_policies",
        sa.Column("name_key", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("policy_id", sa.String(32), nullable=False, unique=True),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("description", sa.String(1000), nullable=True),
        sa.Column("default_version", sa.String(16), nullable=False),
        sa.Column("last_version", sa.Integer, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "iam_policy_versions",
        sa.Column(
            "policy_key",
            sa.String(128),
            sa.ForeignKey("iam_policies.name_key", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("version_id", sa.String(16), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "iam_attachments",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("owner_key", sa.String(64), primary_key=True),
        sa.Column(
            "policy_key",
            sa.String(128),
            sa.ForeignKey("iam_policies.name_key", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    op.create_table(
        "iam_inline_policies",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("owner_key", sa.String(64), primary_key=True),
        sa.Column("policy_name", sa.String(128), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_table(
        "sts_sessions",
        sa.Column("access_key_id", sa.String(32), primary_key=True),
        sa.Column("secret_sealed", sa.LargeBinary, nullable=False),
        sa.Column("token_sealed", sa.LargeBinary, nullable=False),
        sa.Column("role_arn", sa.String(2048), nullable=False),
        sa.Column("role_id", sa.String(32), nullable=False),
        sa.Column("session_name", sa.String(64), nullable=False),
        sa.Column("expires", sa.Float, nullable=False, index=True),
    )


def downgrade() -> None:
    for table in (
        "sts_sessions",
        "iam_inline_policies",
        "iam_attachments",
        "iam_policy_versions",
        "iam_policies",
        "iam_roles",
        "iam_access_keys",
        "iam_users",
    ):
        op.drop_table(table)
