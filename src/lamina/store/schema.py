"""The metadata schema as SQLAlchemy Core tables. Migrations under `migrations/` create it."""

import sqlalchemy as sa

metadata = sa.MetaData()

functions = sa.Table(
    "functions",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
)

function_versions = sa.Table(
    "function_versions",
    metadata,
    sa.Column(
        "name", sa.String(64), sa.ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("version", sa.String(16), primary_key=True),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("code_sha256_hex", sa.String(64), nullable=False),
    sa.Column("revision_id", sa.String(36), nullable=False),
)

# The highest version number ever published per function (numbers are never reused).
version_counters = sa.Table(
    "version_counters",
    metadata,
    sa.Column(
        "name", sa.String(64), sa.ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("last_version", sa.Integer, nullable=False),
)

function_aliases = sa.Table(
    "function_aliases",
    metadata,
    sa.Column(
        "name", sa.String(64), sa.ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("alias", sa.String(128), primary_key=True),
    sa.Column("function_version", sa.String(16), nullable=False),
    sa.Column("description", sa.String(256), nullable=False),
    sa.Column("routing", sa.JSON, nullable=False),
    sa.Column("revision_id", sa.String(36), nullable=False),
)
