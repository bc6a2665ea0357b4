"""Published versions and aliases of a function.

A version is an immutable snapshot of `$LATEST` (code and configuration) numbered 1, 2, ...;
numbers are never reused, even after a version is deleted. An alias names a version, and may
send a share of its invocations to one other version (`RoutingConfig`). Both are committed to
the store before an operation answers and kept in memory for the invoke path.
"""

from __future__ import annotations

import random
import re
import uuid
from typing import TYPE_CHECKING, Any

from lamina.control import validation as check
from lamina.control.paging import page_of
from lamina.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from lamina.store.metadata import AliasRecord, FunctionRecord, MetadataStore
from lamina.types import LATEST

if TYPE_CHECKING:
    from lamina.control.functions import Functions

ALIAS_NAME_RE = re.compile(r"^(?!^[0-9]+$)[a-zA-Z0-9_-]{1,128}$")
VERSION_RE = re.compile(r"^[0-9]+$")


def _same_snapshot(a: FunctionRecord, b: FunctionRecord) -> bool:
    """Whether two records hold the same code and configuration (publishing would add nothing)."""
    skip = ("LastModified", "Description", "ReservedConcurrentExecutions")
    ca = {k: v for k, v in a.config.items() if k not in skip}
    cb = {k: v for k, v in b.config.items() if k not in skip}
    return a.code_sha256_hex == b.code_sha256_hex and ca == cb


def _check_revision(current: str, given: Any) -> None:
    if given is not None and given != current:
        raise PreconditionFailedException(
            "The Revision Id provided does not match the latest Revision Id. Call the "
            "GetFunction/GetAlias API to retrieve the latest Revision Id"
        )


class Versions:
    def __init__(self, functions: Functions, metadata: MetadataStore) -> None:
        self.functions = functions
        self.metadata = metadata
        self.published: dict[str, dict[str, FunctionRecord]] = {}
        for rec in metadata.all_versions():
            if rec.version != LATEST:
                self.published.setdefault(rec.name, {})[rec.version] = rec
        self.aliases: dict[str, dict[str, AliasRecord]] = {}
        for alias in metadata.all_aliases():
            self.aliases.setdefault(alias.function, {})[alias.name] = alias
        self.last: dict[str, int] = metadata.last_versions()

    # -- lookups -----------------------------------------------------------------------------

    def lookup(self, name: str, qualifier: str, route: bool = False) -> FunctionRecord | None:
        """The record a version number or alias names; with `route`, an alias with weighted
        routing picks its additional version with that version's weight."""
        if VERSION_RE.match(qualifier):
            return self.published.get(name, {}).get(qualifier)
        alias = self.aliases.get(name, {}).get(qualifier)
        if alias is None:
            return None
        version = alias.function_version
        if route and alias.routing:
            extra, weight = next(iter(alias.routing.items()))
            if random.random() < weight:
                version = extra
        if version == LATEST:
            return self.functions.latest(name)
        return self.published.get(name, {}).get(version)

    def _numbers(self, name: str) -> list[str]:
        return sorted(self.published.get(name, {}), key=int)

    def forget(self, name: str) -> list[FunctionRecord]:
        """Drop a deleted function's versions and aliases; returns the versions dropped."""
        self.aliases.pop(name, None)
        self.last.pop(name, None)
        return list(self.published.pop(name, {}).values())

    # -- versions ----------------------------------------------------------------------------

    async def publish(self, raw: str, body: dict[str, Any]) -> dict[str, Any]:
        fns = self.functions
        name = fns.latest_of(raw).name
        async with fns.lock:
            current = fns.latest(name)
            if current is None:
                raise ResourceNotFoundException(f"Function not found: {fns.arn(name)}")
            _check_revision(current.revision_id, body.get("RevisionId"))
            sha = body.get("CodeSha256")
            if sha is not None and sha != current.config["CodeSha256"]:
                raise InvalidParameterValueException(
                    f"CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST "
                    f"({current.config['CodeSha256']}). Please try again with the CodeSHA256 "
                    "in $LATEST."
                )
            description = (
                check.description(body["Description"])
                if "Description" in body
                else current.config.get("Description", "")
            )
            numbers = self._numbers(name)
            if numbers:
                last = self.published[name][numbers[-1]]
                if _same_snapshot(last, current):
                    return fns.configuration(last)
            number = str(self.last.get(name, 0) + 1)
            cfg = dict(current.config, Description=description, LastModified=fns.now_iso())
            rec = FunctionRecord(
                name,
                number,
                cfg,
                current.code_sha256_hex,
                str(uuid.uuid4()),
                current.tags,
                current.created,
            )
            self.metadata.publish_version(rec)
            self.published.setdefault(name, {})[number] = rec
            self.last[name] = int(number)
        return fns.configuration(rec)

    def page(
        self, raw: str, marker: str | None, max_items: int | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        fns = self.functions
        latest = fns.latest_of(raw)
        keys = [LATEST, *self._numbers(latest.name)]
        page, next_marker = page_of(keys, marker, max_items)
        out = []
        for key in page:
            rec = latest if key == LATEST else self.published[latest.name][key]
            out.append(fns.configuration(rec, key))
        return out, next_marker

    async def delete_version(self, name: str, version: str) -> FunctionRecord:
        """Delete published version `version` (no alias may reference it)."""
        if not VERSION_RE.match(version):
            raise InvalidParameterValueException(
                f"Deleting an alias ({version}) through DeleteFunction is not supported; "
                "call DeleteAlias."
            )
        async with self.functions.lock:
            rec = self.published.get(name, {}).get(version)
            if rec is None:
                raise ResourceNotFoundException(
                    f"Function not found: {self.functions.arn(name, version)}"
                )
            users = sorted(
                a.name
                for a in self.aliases.get(name, {}).values()
                if a.function_version == version or version in a.routing
            )
            if users:
                raise ResourceConflictException(
                    "Unable to delete version because the following aliases reference it: "
                    f"[{', '.join(users)}]"
                )
            self.metadata.delete_version(name, version)
            del self.published[name][version]
        return rec

    # -- aliases -----------------------------------------------------------------------------

    def alias_configuration(self, alias: AliasRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AliasArn": self.functions.arn(alias.function, alias.name),
            "Name": alias.name,
            "FunctionVersion": alias.function_version,
            "Description": alias.description,
            "RevisionId": alias.revision_id,
        }
        if alias.routing:
            out["RoutingConfig"] = {"AdditionalVersionWeights": dict(alias.routing)}
        return out

    def _get_alias(self, name: str, alias: str) -> AliasRecord:
        found = self.aliases.get(name, {}).get(alias)
        if found is None:
            raise ResourceNotFoundException(f"Alias not found: {self.functions.arn(name, alias)}")
        return found

    def _check_version(self, name: str, version: Any) -> str:
        if not isinstance(version, str) or not (version == LATEST or VERSION_RE.match(version)):
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{version}' at 'functionVersion' failed to "
                r"satisfy constraint: Member must satisfy regular expression pattern: "
                r"(\$LATEST|[0-9]+)"
            )
        if version != LATEST and version not in self.published.get(name, {}):
            raise ResourceNotFoundException(
                f"Function not found: {self.functions.arn(name, version)}"
            )
        return version

    def _check_routing(self, name: str, primary: str, routing: Any) -> dict[str, float]:
        if routing is None:
            return {}
        if not isinstance(routing, dict):
            raise InvalidParameterValueException("RoutingConfig must be an object")
        weights = routing.get("AdditionalVersionWeights") or {}
        if not isinstance(weights, dict):
            raise InvalidParameterValueException("AdditionalVersionWeights must be an object")
        if not weights:
            return {}
        if len(weights) > 1:
            raise InvalidParameterValueException(
                "Number of items in AdditionalVersionWeights cannot be greater than 1"
            )
        if primary == LATEST:
            raise InvalidParameterValueException(
                "$LATEST is not supported for an alias pointing to more than 1 version"
            )
        version, weight = next(iter(weights.items()))
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise InvalidParameterValueException(
                f"Invalid function version {version} in AdditionalVersionWeights; only "
                "published versions can receive routed traffic."
            )
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidParameterValueException(f"Invalid weight {weight!r} for version {version}")
        if not 0.0 <= float(weight) <= 1.0:
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{weight}' at "
                "'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map "
                "value must satisfy constraint: [Member must have value less than or equal to "
                "1.0, Member must have value greater than or equal to 0.0]"
            )
        if version == primary:
            raise InvalidParameterValueException(
                f"Invalid function version {version}. Function version {version} is already "
                "included in routing configuration."
            )
        self._check_version(name, version)
        return {version: float(weight)}

    async def create_alias(self, raw: str, body: dict[str, Any]) -> dict[str, Any]:
        latest = self.functions.latest_of(raw)
        alias_name = body.get("Name")
        if not isinstance(alias_name, str) or not ALIAS_NAME_RE.match(alias_name):
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{alias_name}' at 'name' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: "
                "(?!^[0-9]+$)([a-zA-Z0-9-_]+)"
            )
        if "FunctionVersion" not in body:
            raise InvalidParameterValueException("FunctionVersion is required")
        version = self._check_version(latest.name, body["FunctionVersion"])
        routing = self._check_routing(latest.name, version, body.get("RoutingConfig"))
        description = check.description(body.get("Description", ""))
        alias = AliasRecord(
            latest.name, alias_name, version, description, routing, str(uuid.uuid4())
        )
        async with self.functions.lock:
            if self.functions.latest(latest.name) is None:
                raise ResourceNotFoundException(
                    f"Function not found: {self.functions.arn(latest.name)}"
                )
            if alias_name in self.aliases.get(latest.name, {}):
                raise ResourceConflictException(
                    f"Alias already exists: {self.functions.arn(latest.name, alias_name)}"
                )
            self.metadata.put_alias(alias, create=True)
            self.aliases.setdefault(latest.name, {})[alias_name] = alias
        return self.alias_configuration(alias)

    def get_alias(self, raw: str, alias_name: str) -> dict[str, Any]:
        latest = self.functions.latest_of(raw)
        return self.alias_configuration(self._get_alias(latest.name, alias_name))

    async def update_alias(self, raw: str, alias_name: str, body: dict[str, Any]) -> dict[str, Any]:
        latest = self.functions.latest_of(raw)
        async with self.functions.lock:
            alias = self._get_alias(latest.name, alias_name)
            _check_revision(alias.revision_id, body.get("RevisionId"))
            version = alias.function_version
            if "FunctionVersion" in body:
                version = self._check_version(latest.name, body["FunctionVersion"])
            kept = {"AdditionalVersionWeights": alias.routing}
            routing_in = body.get("RoutingConfig", kept)
            routing = self._check_routing(latest.name, version, routing_in)
            description = alias.description
            if "Description" in body:
                description = check.description(body["Description"])
            new = AliasRecord(
                latest.name, alias_name, version, description, routing, str(uuid.uuid4())
            )
            self.metadata.put_alias(new, create=False)
            self.aliases[latest.name][alias_name] = new
        return self.alias_configuration(new)

    async def delete_alias(self, raw: str, alias_name: str) -> None:
        latest = self.functions.latest_of(raw)
        async with self.functions.lock:
            self._get_alias(latest.name, alias_name)
            self.metadata.delete_alias(latest.name, alias_name)
            del self.aliases[latest.name][alias_name]

    def list_aliases(
        self, raw: str, function_version: str | None, marker: str | None, max_items: int | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        latest = self.functions.latest_of(raw)
        aliases = self.aliases.get(latest.name, {})
        keys = sorted(
            a.name
            for a in aliases.values()
            if function_version is None
            or a.function_version == function_version
            or function_version in a.routing
        )
        page, next_marker = page_of(keys, marker, max_items)
        return [self.alias_configuration(aliases[k]) for k in page], next_marker
