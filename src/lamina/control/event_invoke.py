"""Event invoke configs: how async invocations of a function are retried and where their
results go (Put/Update/Get/Delete/ListFunctionEventInvokeConfigs).

A config belongs to a function and a qualifier (`$LATEST` when none is given, a version or an
alias). It is kept in `event_invoke_configs` and cached here; the async queue reads
`effective()` for every attempt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from lamina.control import validation as check
from lamina.control.functions import Functions
from lamina.control.paging import page_of
from lamina.errors import InvalidParameterValueException, ResourceNotFoundException
from lamina.store.metadata import MetadataStore
from lamina.types import LATEST

DEFAULT_RETRIES = 2
DEFAULT_MAX_AGE_S = 21600
MIN_MAX_AGE_S = 60


@dataclass(frozen=True, slots=True)
class Effective:
    max_retries: int = DEFAULT_RETRIES
    max_age_s: int = DEFAULT_MAX_AGE_S
    on_success: str | None = None
    on_failure: str | None = None


class EventInvokeConfigs:
    def __init__(self, functions: Functions, metadata: MetadataStore) -> None:
        self.functions = functions
        self.metadata = metadata
        self._configs: dict[tuple[str, str], tuple[dict[str, Any], float]] = {
            (name, q): (cfg, modified)
            for name, q, cfg, modified in metadata.all_event_invoke_configs()
        }

    def effective(self, name: str, qualifier: str | None) -> Effective:
        found = self._configs.get((name, qualifier or LATEST))
        if found is None:
            return Effective()
        cfg = found[0]
        dest = cfg.get("DestinationConfig") or {}
        return Effective(
            max_retries=cfg.get("MaximumRetryAttempts", DEFAULT_RETRIES),
            max_age_s=cfg.get("MaximumEventAgeInSeconds", DEFAULT_MAX_AGE_S),
            on_success=(dest.get("OnSuccess") or {}).get("Destination"),
            on_failure=(dest.get("OnFailure") or {}).get("Destination"),
        )

    # -- the API ---------------------------------------------------------------------------------

    def _key(self, raw: str, qualifier: str | None) -> tuple[str, str]:
        rec, q = self.functions.resolve(raw, qualifier)
        if self.functions.latest(rec.name) is None:  # pragma: no cover (resolve raised)
            raise ResourceNotFoundException(f"Function not found: {self.functions.arn(rec.name)}")
        return rec.name, q or LATEST

    def _shape(self, key: tuple[str, str]) -> dict[str, Any]:
        cfg, modified = self._configs[key]
        dest = cfg.get("DestinationConfig") or {}
        out: dict[str, Any] = {
            "LastModified": modified,
            "FunctionArn": self.functions.arn(key[0], key[1]),
        }
        for name in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
            if name in cfg:
                out[name] = cfg[name]
        out["DestinationConfig"] = {
            "OnSuccess": dict(dest.get("OnSuccess") or {}),
            "OnFailure": dict(dest.get("OnFailure") or {}),
        }
        return out

    def put(self, raw: str, qualifier: str | None, body: dict[str, Any]) -> dict[str, Any]:
        key = self._key(raw, qualifier)
        return self._store(key, _checked(body, {}))

    def update(self, raw: str, qualifier: str | None, body: dict[str, Any]) -> dict[str, Any]:
        key = self._key(raw, qualifier)
        base = self._configs.get(key, ({}, 0.0))[0]
        return self._store(key, _checked(body, base))

    def get(self, raw: str, qualifier: str | None) -> dict[str, Any]:
        key = self._key(raw, qualifier)
        if key not in self._configs:
            raise ResourceNotFoundException(_missing(self.functions.arn(*key)))
        return self._shape(key)

    def delete(self, raw: str, qualifier: str | None) -> None:
        key = self._key(raw, qualifier)
        if key not in self._configs:
            raise ResourceNotFoundException(_missing(self.functions.arn(*key)))
        self.metadata.delete_event_invoke_config(*key)
        del self._configs[key]

    def list(
        self, raw: str, marker: str | None = None, max_items: int | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        rec, _q = self.functions.resolve(raw)
        mine = {k[1]: k for k in sorted(self._configs) if k[0] == rec.name}
        page, next_marker = page_of(list(mine), marker, max_items)
        return [self._shape(mine[q]) for q in page], next_marker

    def forget(self, name: str) -> None:
        """The function was deleted (its rows went with it)."""
        for key in [k for k in self._configs if k[0] == name]:
            del self._configs[key]

    def _store(self, key: tuple[str, str], cfg: dict[str, Any]) -> dict[str, Any]:
        modified = time.time()
        self.metadata.put_event_invoke_config(key[0], key[1], cfg, modified)
        self._configs[key] = (cfg, modified)
        return self._shape(key)


def _missing(arn: str) -> str:
    return f"The function {arn} doesn't have an EventInvokeConfig"


def _checked(body: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """`body` checked and applied over `base` (Put passes an empty base: it replaces)."""
    cfg = dict(base)
    if "MaximumRetryAttempts" in body:
        value = body["MaximumRetryAttempts"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2:
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{value}' at 'maximumRetryAttempts' failed "
                "to satisfy constraint: Member must have value less than or equal to 2"
                if isinstance(value, int) and value > 2
                else f"1 validation error detected: Value '{value}' at 'maximumRetryAttempts' "
                "failed to satisfy constraint: Member must have value greater than or equal to 0"
            )
        cfg["MaximumRetryAttempts"] = value
    if "MaximumEventAgeInSeconds" in body:
        value = body["MaximumEventAgeInSeconds"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not MIN_MAX_AGE_S <= value <= DEFAULT_MAX_AGE_S
        ):
            raise InvalidParameterValueException(
                f"1 validation error detected: Value '{value}' at 'maximumEventAgeInSeconds' "
                f"failed to satisfy constraint: Member must be between {MIN_MAX_AGE_S} and "
                f"{DEFAULT_MAX_AGE_S}"
            )
        cfg["MaximumEventAgeInSeconds"] = value
    if "DestinationConfig" in body:
        raw = body["DestinationConfig"]
        if not isinstance(raw, dict):
            raise InvalidParameterValueException("DestinationConfig must be an object")
        dest = dict(cfg.get("DestinationConfig") or {})
        for when in ("OnSuccess", "OnFailure"):
            if when not in raw:
                continue
            target = (raw[when] or {}).get("Destination") if isinstance(raw[when], dict) else None
            if target:
                dest[when] = {"Destination": check.destination_arn(target, f"{when}.Destination")}
            else:
                dest.pop(when, None)
        cfg["DestinationConfig"] = dest
    return cfg
