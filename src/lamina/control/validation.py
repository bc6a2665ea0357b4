"""Checks on function configuration, with AWS's words for what is wrong.

Each check raises InvalidParameterValueException; nothing is stored until every check passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from lamina.errors import InvalidParameterValueException
from lamina.types import FUNCTION_NAME_RE

MIN_MEMORY, MAX_MEMORY = 128, 10240
MIN_TIMEOUT, MAX_TIMEOUT = 1, 900
MIN_EPHEMERAL, MAX_EPHEMERAL = 512, 10240
MAX_ENV_BYTES = 4096
MAX_DESCRIPTION = 256
MAX_HANDLER = 128

ROLE_RE = re.compile(r"^arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-/]+$")
HANDLER_RE = re.compile(r"^[^\s]+$")
ENV_KEY_RE = re.compile(r"^[a-zA-Z]([a-zA-Z0-9_])+$")
RESERVED_ENV = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
ARCHITECTURES = ("x86_64", "arm64")


def _constraint(value: Any, field: str, rule: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(
        f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy "
        f"constraint: {rule}"
    )


def function_name(name: Any) -> str:
    if not isinstance(name, str) or not FUNCTION_NAME_RE.match(name):
        raise _constraint(
            name,
            "functionName",
            "Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+ and have length "
            "between 1 and 64",
        )
    return name


def _int_range(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterValueException(f"'{field}' must be an integer, got {value!r}")
    if value < low:
        raise _constraint(value, field, f"Member must have value greater than or equal to {low}")
    if value > high:
        raise _constraint(value, field, f"Member must have value less than or equal to {high}")
    return value


def memory_size(value: Any) -> int:
    return _int_range(value, "memorySize", MIN_MEMORY, MAX_MEMORY)


def timeout(value: Any) -> int:
    return _int_range(value, "timeout", MIN_TIMEOUT, MAX_TIMEOUT)


def ephemeral_storage(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or "Size" not in value:
        raise InvalidParameterValueException("EphemeralStorage must be an object with a Size")
    return {
        "Size": _int_range(value["Size"], "ephemeralStorage.size", MIN_EPHEMERAL, MAX_EPHEMERAL)
    }


def role(value: Any) -> str:
    """The form of a role ARN (AWS answers a malformed one with this constraint message)."""
    if not isinstance(value, str) or not ROLE_RE.match(value):
        raise _constraint(
            value,
            "role",
            r"Member must satisfy regular expression pattern: "
            r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+",
        )
    return value


ROLE_NOT_ASSUMABLE = "The role defined for the function cannot be assumed by Lambda."


def assumable_role(value: str, lambda_may_assume: Callable[[str], bool] | None) -> str:
    """A well-formed role ARN must also name an existing role whose trust policy lets
    `lambda.amazonaws.com` assume it; AWS says the same words whether it is missing or does
    not trust Lambda. `lambda_may_assume` is None when no IAM is wired in (nothing to ask)."""
    if lambda_may_assume is not None and not lambda_may_assume(value):
        raise InvalidParameterValueException(ROLE_NOT_ASSUMABLE)
    return value


def handler(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_HANDLER:
        raise _constraint(
            value, "handler", f"Member must have length less than or equal to {MAX_HANDLER}"
        )
    if not HANDLER_RE.match(value):
        raise _constraint(
            value, "handler", r"Member must satisfy regular expression pattern: [^\s]+"
        )
    return value


def description(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidParameterValueException("Description must be a string")
    if len(value) > MAX_DESCRIPTION:
        raise _constraint(
            "...", "description", f"Member must have length less than or equal to {MAX_DESCRIPTION}"
        )
    return value


def environment(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidParameterValueException("Environment must be an object with Variables")
    variables = value.get("Variables") or {}
    if not isinstance(variables, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in variables.items()
    ):
        raise InvalidParameterValueException("Environment.Variables must map strings to strings")
    bad = [k for k in variables if not ENV_KEY_RE.match(k)]
    if bad:
        raise _constraint(
            bad[0],
            "environment.variables",
            "Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+",
        )
    reserved = sorted(k for k in variables if k in RESERVED_ENV)
    if reserved:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment "
            "variables you have provided contains reserved keys that are currently not supported "
            f"for modification. Reserved keys used in this request: {', '.join(reserved)}"
        )
    measured = json.dumps(variables, separators=(",", ":"))
    if len(measured.encode()) > MAX_ENV_BYTES:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment "
            "variables you have provided exceeded the 4KB limit. String measured: "
            f"{len(measured.encode())} bytes"
        )
    return dict(variables)


def architectures(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) != 1 or value[0] not in ARCHITECTURES:
        raise _constraint(
            value,
            "architectures",
            "Member must have length less than or equal to 1, Member must satisfy enum value "
            "set: [x86_64, arm64]",
        )
    return list(value)


def tags(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidParameterValueException("Tags must map strings to strings")
    for key, val in value.items():
        if not 1 <= len(key) <= 128 or len(val) > 256:
            raise InvalidParameterValueException(
                f"Tag key '{key}' must be 1-128 characters and its value at most 256"
            )
        if key.lower().startswith("aws:"):
            raise InvalidParameterValueException(f"Tag key '{key}' uses the reserved prefix aws:")
    return dict(value)


def logging_config(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidParameterValueException("LoggingConfig must be an object")
    fmt = value.get("LogFormat", "Text")
    if fmt not in ("Text", "JSON"):
        raise _constraint(
            fmt, "loggingConfig.logFormat", "Member must satisfy enum value set: [JSON, Text]"
        )
    out = {"LogFormat": fmt, "LogGroup": value.get("LogGroup") or f"/aws/lambda/{name}"}
    levels = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
    for key in ("ApplicationLogLevel", "SystemLogLevel"):
        if key in value:
            if value[key] not in levels:
                raise _constraint(
                    value[key], key, f"Member must satisfy enum value set: {list(levels)}"
                )
            out[key] = value[key]
    return out


LAMBDA_ARN_RE = re.compile(
    r"^arn:(aws[a-zA-Z-]*)?:lambda:[a-z]{2}(-gov)?-[a-z]+-\d:\d{12}:function:"
    r"[a-zA-Z0-9-_]{1,64}(:(\$LATEST|[a-zA-Z0-9-_]{1,128}))?$"
)


def destination_arn(value: Any, what: str) -> str:
    """A destination (DestinationConfig, DeadLetterConfig.TargetArn): a Lambda function ARN.
    SQS, SNS and EventBridge targets arrive with those services."""
    if not isinstance(value, str) or not value.startswith("arn:"):
        raise InvalidParameterValueException(f"{what} must be an ARN, got {value!r}")
    if LAMBDA_ARN_RE.match(value):
        return value
    service = value.split(":")[2] if value.count(":") >= 2 else "?"
    raise InvalidParameterValueException(
        f"{what} {value} is not supported: lamina delivers to Lambda function ARNs only "
        f"for now ({service} destinations such as SQS and SNS arrive with those services)."
    )


def dead_letter_config(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidParameterValueException("DeadLetterConfig must be an object")
    target = value.get("TargetArn")
    if not target:  # an empty TargetArn removes the dead-letter target
        return {}
    return {"TargetArn": destination_arn(target, "DeadLetterConfig.TargetArn")}
