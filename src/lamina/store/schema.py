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

# Accepted `Event` invocations not yet finished (the durable async queue, invoke/queue.py).
async_events = sa.Table(
    "async_events",
    metadata,
    sa.Column("request_id", sa.String(36), primary_key=True),
    sa.Column("function", sa.String(64), nullable=False),
    sa.Column("qualifier", sa.String(128), nullable=True),  # as invoked (for the invoked ARN)
    sa.Column("version", sa.String(16), nullable=False),  # the version routing picked
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("trace_id", sa.String(256), nullable=True),
    sa.Column("client_context", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),  # function attempts made (not throttles)
    sa.Column("throttles", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("enqueued_at", sa.Float, nullable=False),
)

# PutFunctionEventInvokeConfig: retries, event age and destinations per function + qualifier.
event_invoke_configs = sa.Table(
    "event_invoke_configs",
    metadata,
    sa.Column(
        "name", sa.String(64), sa.ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("qualifier", sa.String(128), primary_key=True),  # "$LATEST", a version or alias
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("last_modified", sa.Float, nullable=False),
)
