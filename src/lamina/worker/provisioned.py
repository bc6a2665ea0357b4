"""Provisioned concurrency: instances of a version started ahead of time and kept warm.

A config names a function and a version or alias (never `$LATEST`) and how many instances to
keep (`ProvisionedConcurrentExecutions`). One background task reconciles every config about
ten times a second: it resolves the qualifier to a version (an alias may move), stops
instances of any other version and dead ones, and starts what is missing through
`Pool.start_pinned` (`AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency`). The pool leases
them before on-demand instances and never reaps or retires them. Status is IN_PROGRESS until
all are up, then READY; FAILED (with a reason) if one fails its init, until the next Put.

Configs are kept in `provisioned.json` in the data directory, so they survive a restart and
their instances are started again at startup.

An instance whose execution-role credentials are nearly half used (`RENEW_AHEAD` before the
pool stops giving it work, see `worker/pool.py`) is replaced make-before-break: a new one is
started, and the old one is stopped once the new one is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.control.functions import RESERVED, Functions
from lamina.errors import (
    InvalidParameterValueException,
    LambdaError,
    ProvisionedConcurrencyConfigNotFoundException,
    ResourceNotFoundException,
)
from lamina.types import LATEST
from lamina.worker.instance import Instance
from lamina.worker.pool import Pool

log = logging.getLogger("lamina.provisioned")

RECONCILE_S = 0.1
# Replace a provisioned instance this long before the pool would stop giving it work (its
# credentials half used), at most this fraction of the time it had: its successor is up first.
RENEW_AHEAD_S = 60.0
RENEW_AHEAD = 0.5  # of half the credentials' lifetime
REQUESTED = "ProvisionedConcurrentExecutions"
UNPUBLISHED = "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
NOT_FOUND = "No Provisioned Concurrency Config found for this function"


@dataclass(slots=True)
class _Config:
    name: str
    qualifier: str
    requested: int
    modified: str
    status: str = "IN_PROGRESS"
    reason: str | None = None
    key: str | None = None  # the blueprint key its instances run
    instances: list[Instance] = field(default_factory=list)
    starting: int = 0

    def allocated(self) -> int:
        # while one is being replaced (credentials), its successor may briefly be one more
        return min(self.requested, sum(1 for i in self.instances if i.alive and i.key == self.key))


class Provisioned:
    def __init__(self, functions: Functions, pool: Pool, path: Path) -> None:
        self.functions = functions
        self.pool = pool
        self.path = path
        self._configs: dict[tuple[str, str], _Config] = {}
        self._task: asyncio.Task[None] | None = None
        self._starts: set[asyncio.Task[None]] = set()
        self._closed = False
        if path.exists():
            for row in json.loads(path.read_text()):
                cfg = _Config(row["name"], row["qualifier"], row["requested"], row["modified"])
                self._configs[(cfg.name, cfg.qualifier)] = cfg
        functions.on_delete.append(self.forget)

    # -- the API -------------------------------------------------------------------------------

    def _target(self, raw: str, qualifier: str | None) -> tuple[str, str]:
        rec, q = self.functions.resolve(raw, qualifier)
        if q is None or q == LATEST or rec.version == LATEST:
            raise InvalidParameterValueException(UNPUBLISHED)
        return rec.name, q

    def _shape(self, cfg: _Config, arn: bool = False) -> dict[str, Any]:
        allocated = cfg.allocated()
        out: dict[str, Any] = {}
        if arn:
            out["FunctionArn"] = self.functions.arn(cfg.name, cfg.qualifier)
        out.update(
            {
                "RequestedProvisionedConcurrentExecutions": cfg.requested,
                "AvailableProvisionedConcurrentExecutions": allocated,
                "AllocatedProvisionedConcurrentExecutions": allocated,
                "Status": cfg.status,
                "LastModified": cfg.modified,
            }
        )
        if cfg.reason:
            out["StatusReason"] = cfg.reason
        return out

    def put(self, raw: str, qualifier: str | None, body: dict[str, Any]) -> dict[str, Any]:
        value = body.get(REQUESTED)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{value}' at "
                "'provisionedConcurrentExecutions' failed to satisfy constraint: Member must "
                "have value greater than or equal to 1"
            )
        name, q = self._target(raw, qualifier)
        reserved = self.functions.reserved.get(name)
        if reserved is not None:
            others = sum(
                c.requested for (n, cq), c in self._configs.items() if n == name and cq != q
            )
            if others + value > reserved:
                raise InvalidParameterValueException(
                    "Requested Provisioned Concurrency should not be greater than the "
                    f"reservedConcurrentExecution for function ({RESERVED}: {reserved})."
                )
        cfg = self._configs.get((name, q))
        if cfg is None:
            cfg = self._configs[(name, q)] = _Config(name, q, value, self.functions.now_iso())
        else:
            cfg.requested = value
            cfg.modified = self.functions.now_iso()
            cfg.status, cfg.reason = "IN_PROGRESS", None
        self._save()
        self._reconcile()
        return self._shape(cfg)

    def get(self, raw: str, qualifier: str | None) -> dict[str, Any]:
        cfg = self._configs.get(self._target(raw, qualifier))
        if cfg is None:
            raise ProvisionedConcurrencyConfigNotFoundException(NOT_FOUND)
        return self._shape(cfg)

    def delete(self, raw: str, qualifier: str | None) -> None:
        cfg = self._configs.pop(self._target(raw, qualifier), None)
        if cfg is None:
            raise ProvisionedConcurrencyConfigNotFoundException(NOT_FOUND)
        self._drop(cfg)
        self._save()

    def list(self, raw: str) -> dict[str, Any]:
        rec = self.functions.latest_of(raw)
        cfgs = [c for (n, _q), c in sorted(self._configs.items()) if n == rec.name]
        return {"ProvisionedConcurrencyConfigs": [self._shape(c, arn=True) for c in cfgs]}

    def forget(self, name: str) -> None:
        """The function `name` was deleted: drop its configs and stop their instances."""
        for key in [k for k in self._configs if k[0] == name]:
            self._drop(self._configs.pop(key))
        self._save()

    def _drop(self, cfg: _Config) -> None:
        for inst in cfg.instances:
            self.pool.stop_pinned(inst)
        cfg.instances.clear()
        cfg.requested = 0  # an instance still starting is stopped when it is up

    def _save(self) -> None:
        rows = [
            {
                "name": c.name,
                "qualifier": c.qualifier,
                "requested": c.requested,
                "modified": c.modified,
            }
            for c in self._configs.values()
        ]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, self.path)

    # -- keeping the instances -------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._starts:
            await asyncio.gather(*self._starts, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._closed:
            try:
                self._reconcile()
            except Exception:
                log.exception("provisioned concurrency: reconcile failed")
            await asyncio.sleep(RECONCILE_S)

    def _reconcile(self) -> None:
        if self._closed:
            return
        gone = False
        now = time.monotonic()
        ahead = min(RENEW_AHEAD_S, RENEW_AHEAD * self.functions.settings.credentials_ttl / 2)
        for key, cfg in list(self._configs.items()):
            try:
                rec, _q = self.functions.resolve(cfg.name, cfg.qualifier)
            except (ResourceNotFoundException, InvalidParameterValueException):
                self._drop(self._configs.pop(key))  # its version or alias was deleted
                gone = True
                continue
            bp = self.functions.blueprint(rec)
            cfg.key = bp.key
            for inst in list(cfg.instances):
                if not inst.alive or inst.key != bp.key:
                    cfg.instances.remove(inst)
                    self.pool.stop_pinned(inst)
            # Instances whose credentials are nearly half used are replaced: they do not count
            # as provisioned, and are stopped once enough fresh ones are up.
            due = [i for i in cfg.instances if self.pool.renew_at(i) - ahead <= now]
            fresh = len(cfg.instances) - len(due)
            while len(cfg.instances) > cfg.requested:
                victim = due.pop() if due else cfg.instances[-1]
                cfg.instances.remove(victim)
                self.pool.stop_pinned(victim)
            if cfg.status == "FAILED":
                continue
            missing = cfg.requested - min(fresh, cfg.requested) - cfg.starting
            for _ in range(max(0, missing)):
                cfg.starting += 1
                task = asyncio.get_running_loop().create_task(self._start_one(cfg, bp))
                self._starts.add(task)
                task.add_done_callback(self._starts.discard)
            if cfg.status == "IN_PROGRESS" and cfg.allocated() >= cfg.requested:
                cfg.status = "READY"
        if gone:
            self._save()

    async def _start_one(self, cfg: _Config, bp: Any) -> None:
        try:
            inst = await self.pool.start_pinned(bp)
        except (LambdaError, RuntimeError, OSError) as exc:
            cfg.starting -= 1
            cfg.status, cfg.reason = "FAILED", f"Instance could not be started: {exc}"
            return
        cfg.starting -= 1
        if inst.init_failure is not None:
            self.pool.stop_pinned(inst)
            cfg.status = "FAILED"
            cfg.reason = "FUNCTION_ERROR_INIT_FAILURE: the function failed to initialize"
            return
        if self._configs.get((cfg.name, cfg.qualifier)) is not cfg or self._closed:
            self.pool.stop_pinned(inst)
            return
        cfg.instances.append(inst)
        if cfg.status == "IN_PROGRESS" and cfg.allocated() >= cfg.requested:
            cfg.status = "READY"
