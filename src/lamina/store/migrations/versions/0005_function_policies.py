"""Resource-based policies of functions (AddPermission, GetPolicy, RemovePermission).

One row per function + qualifier: `$LATEST` for the function itself, a version number or an
alias name. Rows go with their function (foreign key, ON DELETE CASCADE). On SQLite two
triggers also remove the policy of a version or alias when that version or alias row is
deleted, so a later alias of the same name starts without one. (A future migration that
rebuilds `function_versions` or `function_aliases` in batch mode drops these triggers and must
create them again.)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TRIGGERS = {
    "function_policies_version_gone": (
        "CREATE TRIGGER function_policies_version_gone AFTER DELETE ON function_versions "
        "BEGIN DELETE FROM function_policies "
        "WHERE name = OLD.name AND qualifier = OLD.version; END"
    ),
    "function_policies_alias_gone": (
        "CREATE TRIGGER function_policies_alias_gone AFTER DELETE ON function_aliases "
        "BEGIN DELETE FROM function_policies "
        "WHERE name = OLD.name AND qualifier = OLD.alias; END"
    ),
}


def upgrade() -> None:
    op.create_table(
        "function_policies",
        sa.Column(
            "name",
            sa.String(64),
            sa.ForeignKey("functions.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("qualifier", sa.String(128), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("revision_id", sa.String(36), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        for sql in _TRIGGERS.values():
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("function_policies")
