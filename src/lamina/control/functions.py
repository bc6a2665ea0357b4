"""Functions: create, read, update, delete, tag — the control plane's source of truth.

Metadata is committed to the store before an operation answers; an in-memory copy of each
function's `$LATEST` serves reads and the invoke path without touching the database. Every
change gets a new `RevisionId`, and with it a new blueprint: instances of the old one retire.

Code packages are collected by reference (store/code.py): an upload is held from before it is
stored until the metadata naming it is committed or refused, and every blueprint holds its
package for as long as it lives (instances keep their blueprint), so code is never removed
under an instance still running it. A package that loses its last reference or hold is
collected then; `lamina serve` sweeps what a crash left unreferenced when it starts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from lamina.auth.sessions import SessionCredentials
from lamina.config import Settings
from lamina.control import validation as check
from lamina.control.versions import Versions
from lamina.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from lamina.packages import PackageInfo
from lamina.runtimes.registry import RuntimeRegistry
from lamina.store.code import CodeStore
from lamina.store.metadata import FunctionRecord, MetadataStore
from lamina.types import LATEST, FunctionRef, function_arn, parse_function_name, valid_qualifier
from lamina.worker.blueprint import Blueprint

log = logging.getLogger("lamina.functions")

# A function tagged `lamina:network=none` gets no network at all (loopback only).
NETWORK_TAG = "lamina:network"
# Reserved concurrency lives in $LATEST's config dict and applies to the whole function.
RESERVED = "ReservedConcurrentExecutions"
MIN_UNRESERVED = 100


def _now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}+0000"


class _HeldBlueprint(Blueprint):
    """A blueprint that can be weakly referenced: its package is held until it is gone."""

    __slots__ = ("__weakref__",)


def decode_zip(value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidParameterValueException("Code.ZipFile must be base64-encoded zip bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterValueException(
            "Could not unzip uploaded file. Please check your file, then try to upload again."
        ) from None


class Functions:
    def __init__(
        self,
        settings: Settings,
        metadata: MetadataStore,
        code: CodeStore,
        runtimes: RuntimeRegistry,
        on_change: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.metadata = metadata
        self.code = code
        self.runtimes = runtimes
        self._on_change = on_change
        code.referenced = metadata.referenced_code
        self._collecting: set[str] = set()  # packages whose last hold went, to collect
        self._collector: asyncio.Task[None] | None = None
        try:  # what a crash or an older lamina left behind; nothing is running yet
            swept, work_dirs = code.sweep(), code.clear_tmp()
        except OSError as exc:
            log.warning("code store: the sweep at start failed (nothing was lost): %s", exc)
        else:
            if swept or work_dirs:
                log.info(
                    "code store: removed %d unreferenced packages and %d work dirs",
                    len(swept),
                    work_dirs,
                )
        self._latest: dict[str, FunctionRecord] = {
            rec.name: rec for rec in metadata.all_versions() if rec.version == LATEST
        }
        # function name -> ReservedConcurrentExecutions (the invoke path reads it live)
        self.reserved: dict[str, int] = {
            n: int(r.config[RESERVED]) for n, r in self._latest.items() if RESERVED in r.config
        }
        self._blueprints: dict[tuple[str, str], Blueprint] = {}
        self._lock = asyncio.Lock()
        self.versions = Versions(self, metadata)
        # The lamina API as instances reach it (AWS_ENDPOINT_URL); set once the server listens.
        self.endpoint_url: str | None = None
        # Called with a function's name once it is deleted (not for one of its versions).
        self.on_delete: list[Callable[[str], None]] = []
        # Wired by the platform to IAM (None: not checked / no credentials). `role_check(arn)`:
        # whether Lambda may assume the role (CreateFunction, and a Role change).
        # `credentials_for(role_arn, function_name)`: a minter of execution-role credentials,
        # called once per new instance.
        self.role_check: Callable[[str], bool] | None = None
        self.credentials_for: Callable[[str, str], Callable[[], SessionCredentials]] | None = None

    # -- naming ------------------------------------------------------------------------------

    def arn(self, name: str, qualifier: str | None = None) -> str:
        return function_arn(self.settings.region, self.settings.account_id, name, qualifier)

    @property
    def lock(self) -> asyncio.Lock:
        """Held while function, version or alias metadata changes."""
        return self._lock

    @staticmethod
    def now_iso() -> str:
        return _now_iso()

    def latest(self, name: str) -> FunctionRecord | None:
        return self._latest.get(name)

    def latest_of(self, raw: str) -> FunctionRecord:
        """`$LATEST` of the function `raw` names; a version or alias qualifier is refused."""
        rec, q = self.resolve(raw)
        if q not in (None, LATEST):
            raise InvalidParameterValueException(
                f"Only $LATEST can be changed or published from; {q} is not $LATEST."
            )
        return rec

    def resolve(
        self, raw: str, qualifier: str | None = None, route: bool = False
    ) -> tuple[FunctionRecord, str | None]:
        """The record a `FunctionName` (+ `Qualifier`) names, and the qualifier in force.

        The qualifier may be `$LATEST`, a version number or an alias (its version). With
        `route` (Invoke), an alias with weighted routing picks the version per call.
        """
        ref = parse_function_name(raw)
        if ref is None:
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: "
                r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?"
                r"(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
            )
        if ref.qualifier and qualifier and ref.qualifier != qualifier:
            raise InvalidParameterValueException(
                "The derived qualifier from the function name does not match the specified "
                "qualifier."
            )
        q = qualifier or ref.qualifier
        if q is not None and not valid_qualifier(q):
            raise InvalidParameterValueException(f"Invalid qualifier: {q}")
        rec = self._latest.get(ref.name) if self._ours(ref) else None
        if rec is not None and q not in (None, LATEST):
            rec = self.versions.lookup(ref.name, q, route)
        if rec is None:
            raise ResourceNotFoundException(
                f"Function not found: {self.arn(ref.name, q if q != LATEST else None)}"
            )
        return rec, q

    def _ours(self, ref: FunctionRef) -> bool:
        return ref.account in (None, self.settings.account_id) and ref.region in (
            None,
            self.settings.region,
        )

    # -- the FunctionConfiguration shape -----------------------------------------------------

    def configuration(self, rec: FunctionRecord, qualifier: str | None = None) -> dict[str, Any]:
        """FunctionConfiguration; its ARN carries `qualifier` (as asked) or a version number."""
        c = rec.config
        if qualifier is None and rec.version != LATEST:
            qualifier = rec.version
        out: dict[str, Any] = {
            "FunctionName": rec.name,
            "FunctionArn": self.arn(rec.name, qualifier),
            "Runtime": c["Runtime"],
            "Role": c["Role"],
            "Handler": c["Handler"],
            "CodeSize": c["CodeSize"],
            "Description": c.get("Description", ""),
            "Timeout": c["Timeout"],
            "MemorySize": c["MemorySize"],
            "LastModified": c["LastModified"],
            "CodeSha256": c["CodeSha256"],
            "Version": rec.version,
            "TracingConfig": c.get("TracingConfig") or {"Mode": "PassThrough"},
            "RevisionId": rec.revision_id,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": c.get("Architectures") or ["x86_64"],
            "EphemeralStorage": c.get("EphemeralStorage") or {"Size": 512},
            "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
            "LoggingConfig": c.get("LoggingConfig")
            or {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{rec.name}"},
        }
        if c.get("Environment"):
            out["Environment"] = {"Variables": dict(c["Environment"])}
        for key in ("DeadLetterConfig", "KMSKeyArn", "Layers", "VpcConfig"):
            if c.get(key):
                out[key] = c[key]
        return out

    # -- create / update ---------------------------------------------------------------------

    def _checked_config(
        self, body: dict[str, Any], base: dict[str, Any], name: str
    ) -> dict[str, Any]:
        """Apply the configuration fields of `body` over `base`, checking each."""
        cfg = dict(base)
        if "Runtime" in body:
            self.runtimes.resolve(str(body["Runtime"]))  # raises when unavailable
            cfg["Runtime"] = body["Runtime"]
        if "Handler" in body:
            cfg["Handler"] = check.handler(body["Handler"])
        if "Role" in body:
            cfg["Role"] = check.role(body["Role"])
        if "Description" in body:
            cfg["Description"] = check.description(body["Description"])
        if "Timeout" in body:
            cfg["Timeout"] = check.timeout(body["Timeout"])
        if "MemorySize" in body:
            cfg["MemorySize"] = check.memory_size(body["MemorySize"])
        if "Environment" in body:
            cfg["Environment"] = check.environment(body["Environment"])
        if "EphemeralStorage" in body:
            cfg["EphemeralStorage"] = check.ephemeral_storage(body["EphemeralStorage"])
        if "Architectures" in body:
            cfg["Architectures"] = check.architectures(body["Architectures"])
        if "LoggingConfig" in body:
            cfg["LoggingConfig"] = check.logging_config(body["LoggingConfig"], name)
        if "TracingConfig" in body:
            mode = (body["TracingConfig"] or {}).get("Mode", "PassThrough")
            if mode not in ("Active", "PassThrough"):
                raise InvalidParameterValueException(f"Invalid TracingConfig mode: {mode}")
            cfg["TracingConfig"] = {"Mode": mode}
        if body.get("Layers"):
            raise InvalidParameterValueException(
                f"Layer version {body['Layers'][0]} does not exist."
            )
        if "DeadLetterConfig" in body:
            cfg["DeadLetterConfig"] = check.dead_letter_config(body["DeadLetterConfig"])
        for key in ("KMSKeyArn", "VpcConfig"):
            if key in body:
                cfg[key] = body[key]
        if body.get("PackageType", "Zip") != "Zip":
            raise InvalidParameterValueException(
                "PackageType Image is not supported by lamina; deploy a .zip package."
            )
        if "Runtime" not in cfg:
            raise InvalidParameterValueException(
                "Runtime is required for .zip deployment packages."
            )
        if "Handler" not in cfg:
            raise InvalidParameterValueException(
                "Handler is required for .zip deployment packages."
            )
        return cfg

    async def _store_code(self, code: Any) -> tuple[str, dict[str, Any]]:
        """Store the package of `Code` (or of an UpdateFunctionCode body) and hold it: the
        caller must `_settle` it once the metadata naming it is committed or refused."""
        put = asyncio.ensure_future(asyncio.to_thread(self.code.put, self._zip_of(code), hold=True))
        try:
            info = await asyncio.shield(put)
        except asyncio.CancelledError:  # the put goes on in its thread: settle it when it ends
            put.add_done_callback(self._abandoned)
            raise
        return info.sha256_hex, {"CodeSha256": info.code_sha256, "CodeSize": info.size}

    def _abandoned(self, put: asyncio.Future[PackageInfo]) -> None:
        if not put.cancelled() and put.exception() is None:
            self._unhold(put.result().sha256_hex)

    @staticmethod
    def _zip_of(code: Any) -> bytes:
        if not isinstance(code, dict):
            raise InvalidParameterValueException("Code must be an object with ZipFile")
        if "ZipFile" not in code:
            if "S3Bucket" in code or "ImageUri" in code:
                raise InvalidParameterValueException(
                    "lamina accepts code as Code.ZipFile only; S3 and image code locations are "
                    "not available on this server yet."
                )
            raise InvalidParameterValueException("Code.ZipFile is required")
        return decode_zip(code["ZipFile"])

    async def _settle(self, held: str | None, dropped: Iterable[str] = ()) -> None:
        """Release the hold on `held` and collect it and `dropped` if nothing refers to them
        now. The metadata is committed by then, so a failure here leaves garbage for the next
        collection or sweep, never a missing package: it is logged, not raised."""
        if held is not None:
            self.code.release(held)
        candidates = set(dropped) | ({held} if held is not None else set())
        try:
            await asyncio.to_thread(self.code.collect, candidates)
        except Exception:
            log.exception("collecting code packages %s failed", sorted(candidates))

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = check.function_name(body.get("FunctionName"))
        if "Role" not in body:
            raise InvalidParameterValueException("Role is required")
        tags = check.tags(body.get("Tags") or {})
        cfg = self._checked_config(
            body,
            {"Timeout": 3, "MemorySize": 128, "Description": "", "Architectures": ["x86_64"]},
            name,
        )
        if name in self._latest:
            raise ResourceConflictException(f"Function already exist: {name}")
        check.assumable_role(cfg["Role"], self.role_check)
        sha_hex, code_fields = await self._store_code(body.get("Code"))
        try:
            cfg.update(code_fields, LastModified=_now_iso())
            rec = FunctionRecord(name, LATEST, cfg, sha_hex, str(uuid.uuid4()), tags, time.time())
            async with self._lock:
                if name in self._latest or not self.metadata.create_function(rec):
                    raise ResourceConflictException(f"Function already exist: {name}")
                self._latest[name] = rec
        finally:  # a lost race on the name keeps nothing of what it stored
            await self._settle(sha_hex)
        if body.get("Publish"):
            return await self.versions.publish(name, {})
        return self.configuration(rec)

    async def update_code(self, raw: str, body: dict[str, Any]) -> dict[str, Any]:
        rec = self.latest_of(raw)
        revision = body.get("RevisionId")
        check_revision(rec, revision)  # answered early; checked again as the change commits
        fields: dict[str, Any] = {}
        if "Architectures" in body:
            fields["Architectures"] = check.architectures(body["Architectures"])
        if body.get("DryRun"):  # checked as an update would be; nothing is stored
            info = await asyncio.to_thread(self.code.check, self._zip_of(body))
            preview = dict(rec.config, CodeSha256=info.code_sha256, CodeSize=info.size)
            return self.configuration(
                FunctionRecord(rec.name, rec.version, preview, info.sha256_hex, rec.revision_id)
            )
        sha_hex, code_fields = await self._store_code(body)
        fields.update(code_fields)
        replaced: list[str] = []
        try:
            out, old = await self._commit(
                rec.name, revision, lambda cur: (dict(cur.config, **fields), sha_hex)
            )
            replaced.append(old.code_sha256_hex)
        finally:
            await self._settle(sha_hex, replaced)
        if body.get("Publish"):
            return await self.versions.publish(rec.name, {})
        return out

    async def update_configuration(self, raw: str, body: dict[str, Any]) -> dict[str, Any]:
        rec = self.latest_of(raw)
        revision = body.get("RevisionId")
        check_revision(rec, revision)

        def change(cur: FunctionRecord) -> tuple[dict[str, Any], str]:
            cfg = self._checked_config(body, cur.config, cur.name)
            if cfg["Role"] != cur.config["Role"]:
                check.assumable_role(cfg["Role"], self.role_check)
            return cfg, cur.code_sha256_hex

        out, _old = await self._commit(rec.name, revision, change)
        return out

    async def _commit(
        self,
        name: str,
        revision_id: Any,
        change: Callable[[FunctionRecord], tuple[dict[str, Any], str]],
    ) -> tuple[dict[str, Any], FunctionRecord]:
        """Apply `change` (current `$LATEST` -> its new configuration and code) under the lock,
        where `RevisionId` is checked against what it changes; returns the new configuration
        and the record it replaced."""
        async with self._lock:
            current = self._latest.get(name)
            if current is None:
                raise ResourceNotFoundException(f"Function not found: {self.arn(name)}")
            check_revision(current, revision_id)
            cfg, sha_hex = change(current)
            cfg["LastModified"] = _now_iso()
            new = FunctionRecord(
                name, LATEST, cfg, sha_hex, str(uuid.uuid4()), current.tags, current.created
            )
            self.metadata.update_version(new)
            self._latest[name] = new
            self._forget_blueprints(name)
        self._on_change(name)
        return self.configuration(new), current

    # -- read / delete -----------------------------------------------------------------------

    def page(
        self, marker: str | None, max_items: int | None, function_version: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """ListFunctions: `$LATEST` of every function, or with FunctionVersion=ALL every
        version too ($LATEST first, then by number), at most 50 per page."""
        if function_version not in (None, "ALL"):
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{function_version}' at 'functionVersion' "
                "failed to satisfy constraint: Member must satisfy enum value set: [ALL]"
            )
        limit = 50 if max_items is None else check._int_range(max_items, "maxItems", 1, 10000)
        limit = min(limit, 50)
        entries: list[tuple[str, int, FunctionRecord]] = []
        for name in sorted(self._latest):
            entries.append((name, -1, self._latest[name]))
            if function_version == "ALL":
                published = self.versions.published.get(name, {})
                entries += [(name, int(v), published[v]) for v in sorted(published, key=int)]
        start = 0
        if marker:
            try:
                name, _, number = base64.urlsafe_b64decode(marker.encode()).decode().partition("\0")
                after = (name, int(number or -1))
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise InvalidParameterValueException(f"Invalid Marker: {marker}") from None
            start = next((i for i, e in enumerate(entries) if e[:2] > after), len(entries))
        page = entries[start : start + limit]
        next_marker = None
        if start + limit < len(entries) and page:
            last_name, last_number, _ = page[-1]
            next_marker = base64.urlsafe_b64encode(f"{last_name}\0{last_number}".encode()).decode()
        latest = LATEST if function_version == "ALL" else None  # plain lists: unqualified ARNs
        out = [
            self.configuration(rec, latest if number < 0 else str(number))
            for _name, number, rec in page
        ]
        return out, next_marker

    async def delete(self, raw: str, qualifier: str | None) -> None:
        """Delete the function (its versions and aliases too), or with a version qualifier
        that one version."""
        rec, q = self.resolve(raw, qualifier)
        if q == LATEST:
            raise InvalidParameterValueException(
                "$LATEST version cannot be deleted without deleting the function."
            )
        if q is not None:
            gone = [await self.versions.delete_version(rec.name, q)]
        else:
            async with self._lock:
                self.metadata.delete_function(rec.name)
                self._latest.pop(rec.name, None)
                self.reserved.pop(rec.name, None)
                gone = [rec, *self.versions.forget(rec.name)]
            for hook in self.on_delete:
                hook(rec.name)
        self._forget_blueprints(rec.name)
        self._on_change(rec.name)
        await self._settle(None, {r.code_sha256_hex for r in gone})

    def _forget_blueprints(self, name: str) -> None:
        for key in [k for k in self._blueprints if k[0] == name]:
            del self._blueprints[key]

    # -- packages held by blueprints -------------------------------------------------------------

    def _hold_for(self, bp: Blueprint, sha_hex: str) -> None:
        """Hold `sha_hex` until `bp` (and so every instance started from it) is gone."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        weakref.finalize(bp, self._blueprint_gone, loop, sha_hex).atexit = False

    def _blueprint_gone(self, loop: asyncio.AbstractEventLoop | None, sha_hex: str) -> None:
        # A finalizer: it may run in any thread, in the middle of anything. Hand it to the loop.
        try:
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._unhold, sha_hex)
                return
        except RuntimeError:  # the loop closed meanwhile
            pass
        self.code.release(sha_hex)  # no loop: the next collection or sweep takes it

    def _unhold(self, sha_hex: str) -> None:
        self.code.release(sha_hex)
        self._collecting.add(sha_hex)
        if self._collector is None or self._collector.done():
            self._collector = asyncio.get_running_loop().create_task(self._collect_released())

    async def _collect_released(self) -> None:
        while self._collecting:
            batch, self._collecting = self._collecting, set()
            await self._settle(None, batch)

    def names(self) -> list[str]:
        return sorted(self._latest)

    def usage(self) -> dict[str, int]:
        total = sum(int(r.config["CodeSize"]) for r in self._latest.values())
        total += sum(
            int(r.config["CodeSize"])
            for vs in self.versions.published.values()
            for r in vs.values()
        )
        return {"TotalCodeSize": total, "FunctionCount": len(self._latest)}

    # -- reserved concurrency --------------------------------------------------------------------

    def get_concurrency(self, raw: str) -> dict[str, int]:
        rec = self.latest_of(raw)
        if rec.name in self.reserved:
            return {RESERVED: self.reserved[rec.name]}
        return {}

    async def put_concurrency(self, raw: str, body: dict[str, Any]) -> dict[str, int]:
        rec = self.latest_of(raw)
        value = body.get(RESERVED)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{value}' at 'reservedConcurrentExecutions' "
                "failed to satisfy constraint: Member must have value greater than or equal to 0"
            )
        async with self._lock:
            others = sum(v for n, v in self.reserved.items() if n != rec.name)
            if self.settings.concurrency_limit - others - value < MIN_UNRESERVED:
                raise InvalidParameterValueException(
                    "Specified ReservedConcurrentExecutions for function decreases account's "
                    "UnreservedConcurrentExecution below its minimum value of "
                    f"[{MIN_UNRESERVED}]."
                )
            self._set_config(rec.name, {**self._current(rec.name).config, RESERVED: value})
            self.reserved[rec.name] = value
        return {RESERVED: value}

    async def delete_concurrency(self, raw: str) -> None:
        rec = self.latest_of(raw)
        async with self._lock:
            cfg = {k: v for k, v in self._current(rec.name).config.items() if k != RESERVED}
            self._set_config(rec.name, cfg)
            self.reserved.pop(rec.name, None)

    def _current(self, name: str) -> FunctionRecord:
        current = self._latest.get(name)
        if current is None:
            raise ResourceNotFoundException(f"Function not found: {self.arn(name)}")
        return current

    def _set_config(self, name: str, cfg: dict[str, Any]) -> None:
        """Store a function-level setting in $LATEST's config: same revision, same blueprint,
        so running and warm instances are kept."""
        cur = self._current(name)
        new = FunctionRecord(
            name, LATEST, cfg, cur.code_sha256_hex, cur.revision_id, cur.tags, cur.created
        )
        self.metadata.update_version(new)
        self._latest[name] = new

    # -- tags ----------------------------------------------------------------------------------

    def _by_arn(self, arn: str) -> FunctionRecord:
        ref = parse_function_name(arn)
        if ref is None or not arn.startswith("arn:") or ref.qualifier:
            raise InvalidParameterValueException(f"Invalid resource ARN: {arn}")
        rec, _ = self.resolve(arn)
        return rec

    def list_tags(self, arn: str) -> dict[str, str]:
        return dict(self._by_arn(arn).tags)

    def tag(self, arn: str, tags: Any) -> None:
        rec = self._by_arn(arn)
        merged = check.tags({**rec.tags, **check.tags(tags)})
        if len(merged) > 50:
            raise InvalidParameterValueException("A function can have at most 50 tags")
        self._set_tags(rec, merged)

    def untag(self, arn: str, keys: list[str]) -> None:
        rec = self._by_arn(arn)
        remaining = {k: v for k, v in rec.tags.items() if k not in keys}
        self._set_tags(rec, remaining)

    def _set_tags(self, rec: FunctionRecord, tags: dict[str, str]) -> None:
        network = tags.get(NETWORK_TAG, "egress")
        if network not in ("egress", "none"):
            raise InvalidParameterValueException(
                f"Tag {NETWORK_TAG} must be 'none' (no network) or 'egress', not '{network}'"
            )
        changed = network != rec.tags.get(NETWORK_TAG, "egress")
        self.metadata.set_tags(rec.name, tags)
        rec.tags = tags
        for published in self.versions.published.get(rec.name, {}).values():
            published.tags = tags
        if changed:  # running instances keep the network they started with: retire them
            self._forget_blueprints(rec.name)
            self._on_change(rec.name)

    # -- what the worker needs -----------------------------------------------------------------

    def blueprint(self, rec: FunctionRecord) -> Blueprint:
        bp = self._blueprints.get((rec.name, rec.version))
        if bp is not None and bp.revision_id == rec.revision_id:
            return bp
        c = rec.config
        logging_config = c.get("LoggingConfig") or {}
        runtime = self.runtimes.resolve(c["Runtime"])
        credentials = (
            self.credentials_for(c["Role"], rec.name) if self.credentials_for is not None else None
        )
        sha_hex = rec.code_sha256_hex
        self.code.hold(sha_hex)  # before the tree is looked up: it stays while bp lives
        try:
            task_root = self.code.task_root(sha_hex)
        except BaseException:
            self.code.release(sha_hex)
            raise
        bp = _HeldBlueprint(
            name=rec.name,
            version=rec.version,
            revision_id=rec.revision_id,
            arn=self.arn(rec.name, None if rec.version == LATEST else rec.version),
            runtime=runtime,
            handler=c["Handler"],
            memory_mb=c["MemorySize"],
            timeout_s=c["Timeout"],
            task_root=task_root,
            region=self.settings.region,
            environment=dict(c.get("Environment") or {}),
            ephemeral_mb=(c.get("EphemeralStorage") or {}).get("Size", 512),
            log_format=logging_config.get("LogFormat", "Text"),
            log_level=logging_config.get("ApplicationLogLevel"),
            endpoint_url=self.endpoint_url,
            network=rec.tags.get(NETWORK_TAG, "egress"),
            credentials=credentials,
        )
        self._hold_for(bp, sha_hex)
        self._blueprints[(rec.name, rec.version)] = bp
        return bp


def check_revision(rec: FunctionRecord, revision_id: Any) -> None:
    if revision_id is not None and revision_id != rec.revision_id:
        raise PreconditionFailedException(
            "The Revision Id provided does not match the latest Revision Id. Call the "
            "GetFunction/GetAlias API to retrieve the latest Revision Id"
        )
