"""Function metadata in SQLite (WAL), behind SQLAlchemy Core so PostgreSQL can follow.

The schema is created and upgraded by alembic migrations at open time. Every write is one
transaction, committed before the caller answers the client.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from lamina.store.schema import (
    event_invoke_configs,
    function_aliases,
    function_versions,
    functions,
    version_counters,
)

_MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(slots=True)
class FunctionRecord:
    name: str
    version: str
    config: dict[str, Any]
    code_sha256_hex: str
    revision_id: str
    tags: dict[str, str] = field(default_factory=dict)
    created: float = 0.0


@dataclass(slots=True)
class AliasRecord:
    function: str
    name: str
    function_version: str
    description: str
    routing: dict[str, float]  # AdditionalVersionWeights: {"2": 0.1}
    revision_id: str


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class MetadataStore:
    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._migrate()

    @classmethod
    def open(cls, data_dir: Path) -> MetadataStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{data_dir / 'lamina.db'}")

    def _migrate(self) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()

    # -- functions -------------------------------------------------------------------------

    def create_function(self, rec: FunctionRecord) -> bool:
        """Insert a new function with its $LATEST; False if the name is taken."""
        with self.engine.begin() as conn:
            taken = conn.execute(
                sa.select(functions.c.name).where(functions.c.name == rec.name)
            ).first()
            if taken:
                return False
            conn.execute(
                functions.insert().values(name=rec.name, created=time.time(), tags=rec.tags)
            )
            conn.execute(function_versions.insert().values(**self._version_row(rec)))
        return True

    def update_version(self, rec: FunctionRecord) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                function_versions.update()
                .where(function_versions.c.name == rec.name)
                .where(function_versions.c.version == rec.version)
                .values(**self._version_row(rec))
            )

    def set_tags(self, name: str, tags: dict[str, str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(functions.update().where(functions.c.name == name).values(tags=tags))

    def delete_function(self, name: str) -> bool:
        with self.engine.begin() as conn:
            conn.execute(function_aliases.delete().where(function_aliases.c.name == name))
            conn.execute(event_invoke_configs.delete().where(event_invoke_configs.c.name == name))
            conn.execute(version_counters.delete().where(version_counters.c.name == name))
            conn.execute(function_versions.delete().where(function_versions.c.name == name))
            return conn.execute(functions.delete().where(functions.c.name == name)).rowcount > 0

    def all_versions(self) -> Iterator[FunctionRecord]:
        """Every stored function version, with its function's tags (used to warm caches)."""
        query = sa.select(function_versions, functions.c.tags, functions.c.created).join(
            functions, functions.c.name == function_versions.c.name
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                yield FunctionRecord(
                    name=row["name"],
                    version=row["version"],
                    config=dict(row["config"]),
                    code_sha256_hex=row["code_sha256_hex"],
                    revision_id=row["revision_id"],
                    tags=dict(row["tags"]),
                    created=row["created"],
                )

    # -- published versions ----------------------------------------------------------------

    def publish_version(self, rec: FunctionRecord) -> None:
        """Insert a published version and advance the function's version counter with it."""
        number = int(rec.version)
        with self.engine.begin() as conn:
            conn.execute(function_versions.insert().values(**self._version_row(rec)))
            moved = conn.execute(
                version_counters.update()
                .where(version_counters.c.name == rec.name)
                .values(last_version=number)
            ).rowcount
            if not moved:
                conn.execute(version_counters.insert().values(name=rec.name, last_version=number))

    def delete_version(self, name: str, version: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                function_versions.delete()
                .where(function_versions.c.name == name)
                .where(function_versions.c.version == version)
            )

    def last_versions(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(version_counters.c.name, version_counters.c.last_version))
            return {r[0]: int(r[1]) for r in rows}

    # -- aliases -----------------------------------------------------------------------------

    def put_alias(self, alias: AliasRecord, *, create: bool) -> None:
        values = {
            "function_version": alias.function_version,
            "description": alias.description,
            "routing": alias.routing,
            "revision_id": alias.revision_id,
        }
        with self.engine.begin() as conn:
            if create:
                conn.execute(
                    function_aliases.insert().values(
                        name=alias.function, alias=alias.name, **values
                    )
                )
            else:
                conn.execute(
                    function_aliases.update()
                    .where(function_aliases.c.name == alias.function)
                    .where(function_aliases.c.alias == alias.name)
                    .values(**values)
                )

    def delete_alias(self, function: str, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                function_aliases.delete()
                .where(function_aliases.c.name == function)
                .where(function_aliases.c.alias == name)
            )

    def all_aliases(self) -> Iterator[AliasRecord]:
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(function_aliases)).mappings():
                yield AliasRecord(
                    function=row["name"],
                    name=row["alias"],
                    function_version=row["function_version"],
                    description=row["description"],
                    routing={str(k): float(v) for k, v in dict(row["routing"]).items()},
                    revision_id=row["revision_id"],
                )

    # -- event invoke configs (async retries and destinations) ---------------------------------

    def put_event_invoke_config(
        self, name: str, qualifier: str, config: dict[str, Any], last_modified: float
    ) -> None:
        with self.engine.begin() as conn:
            where = (event_invoke_configs.c.name == name) & (
                event_invoke_configs.c.qualifier == qualifier
            )
            conn.execute(event_invoke_configs.delete().where(where))
            conn.execute(
                event_invoke_configs.insert().values(
                    name=name, qualifier=qualifier, config=config, last_modified=last_modified
                )
            )

    def delete_event_invoke_config(self, name: str, qualifier: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                event_invoke_configs.delete()
                .where(event_invoke_configs.c.name == name)
                .where(event_invoke_configs.c.qualifier == qualifier)
            )

    def all_event_invoke_configs(self) -> Iterator[tuple[str, str, dict[str, Any], float]]:
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(event_invoke_configs)).mappings():
                yield row["name"], row["qualifier"], dict(row["config"]), row["last_modified"]

    def referenced_code(self) -> set[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(function_versions.c.code_sha256_hex).distinct())
            return {r[0] for r in rows}

    @staticmethod
    def _version_row(rec: FunctionRecord) -> dict[str, Any]:
        return {
            "name": rec.name,
            "version": rec.version,
            "config": rec.config,
            "code_sha256_hex": rec.code_sha256_hex,
            "revision_id": rec.revision_id,
        }
