"""Function resource-based policies in the metadata database (table `function_policies`).

A policy is stored as the JSON text GetPolicy returns, with its own RevisionId, per function
and qualifier (`$LATEST` for the function itself). Every write is one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa

from lamina.store.schema import function_policies


class PolicyStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def put(self, name: str, qualifier: str, document: str, revision_id: str) -> None:
        """Insert or replace the policy of `name` + `qualifier`."""
        with self.engine.begin() as conn:
            conn.execute(function_policies.delete().where(self._where(name, qualifier)))
            conn.execute(
                function_policies.insert().values(
                    name=name, qualifier=qualifier, document=document, revision_id=revision_id
                )
            )

    def get(self, name: str, qualifier: str) -> tuple[str, str] | None:
        """(document, revision_id) of one policy, or None."""
        query = sa.select(function_policies.c.document, function_policies.c.revision_id).where(
            self._where(name, qualifier)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row[0], row[1])

    def delete(self, name: str, qualifier: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(function_policies.delete().where(self._where(name, qualifier)))

    def delete_function(self, name: str) -> None:
        """Every policy of a function (its rows usually went with it already)."""
        with self.engine.begin() as conn:
            conn.execute(function_policies.delete().where(function_policies.c.name == name))

    def all(self) -> Iterator[tuple[str, str, str, str]]:
        """(name, qualifier, document, revision_id) of every stored policy."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(function_policies)).mappings().all()
        for row in rows:
            yield row["name"], row["qualifier"], row["document"], row["revision_id"]

    @staticmethod
    def _where(name: str, qualifier: str) -> sa.ColumnElement[bool]:
        return (function_policies.c.name == name) & (function_policies.c.qualifier == qualifier)
