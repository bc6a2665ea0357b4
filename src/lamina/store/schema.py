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

# -- IAM and STS (store/iam.py; migration 0004). Names are unique case-insensitively, as in
# IAM: `name_key` is the lower-cased name. Secrets are sealed (auth/secrets.py), never plain.

iam_users = sa.Table(
    "iam_users",
    metadata,
    sa.Column("name_key", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False, unique=True),
    sa.Column("path", sa.String(512), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
)

iam_access_keys = sa.Table(
    "iam_access_keys",
    metadata,
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

iam_roles = sa.Table(
    "iam_roles",
    metadata,
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

iam_policies = sa.Table(
    "iam_policies",
    metadata,
    sa.Column("name_key", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("policy_id", sa.String(32), nullable=False, unique=True),
    sa.Column("path", sa.String(512), nullable=False),
    sa.Column("description", sa.String(1000), nullable=True),
    sa.Column("default_version", sa.String(16), nullable=False),
    sa.Column("last_version", sa.Integer, nullable=False),  # version numbers are not reused
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)

iam_policy_versions = sa.Table(
    "iam_policy_versions",
    metadata,
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

# Managed policies attached to users and roles: kind is "user" or "role".
iam_attachments = sa.Table(
    "iam_attachments",
    metadata,
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("owner_key", sa.String(64), primary_key=True),
    sa.Column(
        "policy_key",
        sa.String(128),
        sa.ForeignKey("iam_policies.name_key", ondelete="CASCADE"),
        primary_key=True,
    ),
)

# Inline policies of users and roles: kind is "user" or "role".
iam_inline_policies = sa.Table(
    "iam_inline_policies",
    metadata,
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("owner_key", sa.String(64), primary_key=True),
    sa.Column("policy_name", sa.String(128), primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
)

# Temporary credentials (AssumeRole, and the sessions lamina gives function instances).
sts_sessions = sa.Table(
    "sts_sessions",
    metadata,
    sa.Column("access_key_id", sa.String(32), primary_key=True),
    sa.Column("secret_sealed", sa.LargeBinary, nullable=False),
    sa.Column("token_sealed", sa.LargeBinary, nullable=False),
    sa.Column("role_arn", sa.String(2048), nullable=False),
    sa.Column("role_id", sa.String(32), nullable=False),
    sa.Column("session_name", sa.String(64), nullable=False),
    sa.Column("expires", sa.Float, nullable=False, index=True),
)

# Resource-based policies of functions (AddPermission; store/policies.py, migration 0005): one
# document per function + qualifier ("$LATEST" for the function itself, a version or an alias).
function_policies = sa.Table(
    "function_policies",
    metadata,
    sa.Column(
        "name", sa.String(64), sa.ForeignKey("functions.name", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("qualifier", sa.String(128), primary_key=True),
    sa.Column("document", sa.Text, nullable=False),  # the policy JSON, as GetPolicy returns it
    sa.Column("revision_id", sa.String(36), nullable=False),
)
