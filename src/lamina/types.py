"""The words the rest of lamina speaks: names, ARNs, qualifiers, invocation types.

This module sits at the bottom of the import graph: it imports nothing of lamina.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from random import getrandbits

LATEST = "$LATEST"

FUNCTION_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_QUALIFIER_RE = re.compile(r"^(\$LATEST|[0-9]+|[a-zA-Z0-9_-]{1,128})$")
# arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
_FULL_ARN_RE = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:"
    r"(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>[^:]+))?$"
)
# ACCOUNT:function:NAME[:QUALIFIER]
_PARTIAL_ARN_RE = re.compile(
    r"^(?P<account>\d{12}):function:(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>[^:]+))?$"
)
# NAME:QUALIFIER
_NAME_QUALIFIER_RE = re.compile(r"^(?P<name>[a-zA-Z0-9_-]+):(?P<qualifier>[^:]+)$")


class InvocationType(enum.StrEnum):
    REQUEST_RESPONSE = "RequestResponse"
    EVENT = "Event"
    DRY_RUN = "DryRun"


class LogType(enum.StrEnum):
    NONE = "None"
    TAIL = "Tail"


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A `FunctionName` path parameter taken apart.

    `name` is the bare function name; `qualifier` is the version or alias named inside the
    ARN (None when absent); `account`/`region` are what an ARN named, if it named them.
    """

    name: str
    qualifier: str | None = None
    account: str | None = None
    region: str | None = None


@functools.lru_cache(maxsize=4096)
def parse_function_name(raw: str) -> FunctionRef | None:
    """Parse the three forms AWS accepts; None when `raw` matches none of them. (Cached: an
    invocation asks several times, and the same few names come again and again.)"""
    if FUNCTION_NAME_RE.match(raw):
        return FunctionRef(name=raw)
    m = _FULL_ARN_RE.match(raw)
    if m:
        return FunctionRef(m["name"], m["qualifier"], m["account"], m["region"])
    m = _PARTIAL_ARN_RE.match(raw)
    if m:
        return FunctionRef(m["name"], m["qualifier"], m["account"])
    m = _NAME_QUALIFIER_RE.match(raw)
    if m:
        return FunctionRef(m["name"], m["qualifier"])
    return None


def valid_qualifier(q: str) -> bool:
    return bool(_QUALIFIER_RE.match(q))


def function_arn(region: str, account: str, name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def request_id() -> str:
    """A fresh UUID (version 4 layout) for request ids and trace ids: unique, not secret, so
    from the process's PRNG rather than os.urandom (every invocation takes several)."""
    h = f"{getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab"
