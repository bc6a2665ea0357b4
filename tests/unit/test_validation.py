"""The configuration checks of `control/validation.py` in process: what each accepts (and
returns), and AWS's words for what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.control import validation as check
from lamina.errors import InvalidParameterValueException


def refused(fn: Any, *args: Any) -> str:
    with pytest.raises(InvalidParameterValueException) as info:
        fn(*args)
    assert info.value.status == 400
    message: str = info.value.message
    return message


def constraint(value: Any, field: str, rule: str) -> str:
    return (
        f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy "
        f"constraint: {rule}"
    )


# -- names, numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["f", "my-function_1", "a" * 64, "UPPER-lower-09"])
def test_function_name_accepts(name: str) -> None:
    assert check.function_name(name) == name


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "dots.not.ok", "ü", None, 7])
def test_function_name_refuses(name: Any) -> None:
    assert refused(check.function_name, name) == constraint(
        name,
        "functionName",
        "Member must satisfy regular expression pattern: [a-zA-Z0-9-_]+ and have length "
        "between 1 and 64",
    )


def test_memory_size_bounds() -> None:
    assert check.memory_size(128) == 128
    assert check.memory_size(10240) == 10240
    assert refused(check.memory_size, 127) == constraint(
        127, "memorySize", "Member must have value greater than or equal to 128"
    )
    assert refused(check.memory_size, 10241) == constraint(
        10241, "memorySize", "Member must have value less than or equal to 10240"
    )
    assert refused(check.memory_size, "256") == "'memorySize' must be an integer, got '256'"
    assert refused(check.memory_size, True) == "'memorySize' must be an integer, got True"
    assert refused(check.memory_size, 256.0) == "'memorySize' must be an integer, got 256.0"


def test_timeout_bounds() -> None:
    assert (check.timeout(1), check.timeout(900)) == (1, 900)
    assert refused(check.timeout, 0) == constraint(
        0, "timeout", "Member must have value greater than or equal to 1"
    )
    assert refused(check.timeout, 901) == constraint(
        901, "timeout", "Member must have value less than or equal to 900"
    )


def test_ephemeral_storage() -> None:
    assert check.ephemeral_storage({"Size": 512}) == {"Size": 512}
    assert check.ephemeral_storage({"Size": 10240}) == {"Size": 10240}
    assert refused(check.ephemeral_storage, {"Size": 511}) == constraint(
        511, "ephemeralStorage.size", "Member must have value greater than or equal to 512"
    )
    for bad in ({}, [], None):
        assert refused(check.ephemeral_storage, bad) == (
            "EphemeralStorage must be an object with a Size"
        )


# -- role, handler, description ------------------------------------------------------------------


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::123456789012:role/lambda-role",
        "arn:aws:iam::123456789012:role/service-role/path/x+=,.@-_",
        "arn:aws-cn:iam::123456789012:role/r",
        "arn:aws-us-gov:iam::123456789012:role/r",
    ],
)
def test_role_accepts(arn: str) -> None:
    assert check.role(arn) == arn


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::12345678901:role/short-account",
        "arn:aws:iam::123456789012:user/not-a-role",
        "role/x",
        None,
    ],
)
def test_role_refuses(arn: Any) -> None:
    assert refused(check.role, arn) == constraint(
        arn,
        "role",
        r"Member must satisfy regular expression pattern: "
        r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+",
    )


def test_assumable_role() -> None:
    arn = "arn:aws:iam::123456789012:role/r"
    assert check.assumable_role(arn, None) == arn  # no IAM wired in: nothing to ask
    assert check.assumable_role(arn, lambda a: a == arn) == arn
    assert refused(check.assumable_role, arn, lambda _a: False) == (
        "The role defined for the function cannot be assumed by Lambda."
    )


def test_handler() -> None:
    for good in ("app.handler", "pkg/mod.fn", "x" * 128, "no-dot-is-still-a-string"):
        assert check.handler(good) == good
    for bad in ("", "x" * 129, None, 5):
        assert refused(check.handler, bad) == constraint(
            bad, "handler", "Member must have length less than or equal to 128"
        )
    assert refused(check.handler, "app. handler") == constraint(
        "app. handler", "handler", r"Member must satisfy regular expression pattern: [^\s]+"
    )


def test_description() -> None:
    assert check.description("") == ""
    assert check.description("d" * 256) == "d" * 256
    assert refused(check.description, "d" * 257) == constraint(
        "...", "description", "Member must have length less than or equal to 256"
    )
    assert refused(check.description, 1) == "Description must be a string"


# -- environment ---------------------------------------------------------------------------------


def test_environment_accepts_and_returns_the_variables() -> None:
    assert check.environment({"Variables": {"COLOR": "teal", "a_1": ""}}) == {
        "COLOR": "teal",
        "a_1": "",
    }
    assert check.environment({}) == {}
    assert check.environment({"Variables": None}) == {}


def test_environment_refuses() -> None:
    assert refused(check.environment, ["x"]) == "Environment must be an object with Variables"
    message = "Environment.Variables must map strings to strings"
    assert refused(check.environment, {"Variables": {"N": 1}}) == message
    assert refused(check.environment, {"Variables": ["N=1"]}) == message
    for key in ("1ABC", "A", "HAS-DASH", "_X"):
        assert refused(check.environment, {"Variables": {key: "v"}}) == constraint(
            key,
            "environment.variables",
            "Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+",
        )


def test_environment_refuses_reserved_keys_listing_them_sorted() -> None:
    variables = {"OK": "1", "AWS_REGION": "x", "AWS_ACCESS_KEY_ID": "y", "LAMBDA_TASK_ROOT": "z"}
    assert refused(check.environment, {"Variables": variables}) == (
        "Lambda was unable to configure your environment variables because the environment "
        "variables you have provided contains reserved keys that are currently not supported "
        "for modification. Reserved keys used in this request: AWS_ACCESS_KEY_ID, AWS_REGION, "
        "LAMBDA_TASK_ROOT"
    )
    # the variables AWS documents as not reserved, though the runtime sets them too
    assert check.environment(
        {"Variables": {"TZ": "UTC", "PATH": "/x", "AWS_LAMBDA_LOG_LEVEL": "D"}}
    )


def test_environment_4kb_limit_measured_as_aws_does() -> None:
    def sized(n: int) -> dict[str, str]:  # {"VAR":"xxx…"} is n bytes, compact JSON
        return {"VAR": "x" * (n - len('{"VAR":""}'))}

    assert len(json.dumps(sized(4096), separators=(",", ":"))) == 4096
    assert check.environment({"Variables": sized(4096)}) == sized(4096)
    assert refused(check.environment, {"Variables": sized(4097)}) == (
        "Lambda was unable to configure your environment variables because the environment "
        "variables you have provided exceeded the 4KB limit. String measured: 4097 bytes"
    )


# -- architectures, tags, logging ----------------------------------------------------------------


def test_architectures() -> None:
    assert check.architectures(["x86_64"]) == ["x86_64"]
    assert check.architectures(["arm64"]) == ["arm64"]
    for bad in (["x86_64", "arm64"], [], ["riscv"], "x86_64"):
        assert refused(check.architectures, bad) == constraint(
            bad,
            "architectures",
            "Member must have length less than or equal to 1, Member must satisfy enum value "
            "set: [x86_64, arm64]",
        )


def test_tags() -> None:
    assert check.tags({"team": "core", "k" * 128: "v" * 256}) == {
        "team": "core",
        "k" * 128: "v" * 256,
    }
    assert refused(check.tags, {"n": 1}) == "Tags must map strings to strings"
    assert refused(check.tags, {"": "v"}) == (
        "Tag key '' must be 1-128 characters and its value at most 256"
    )
    assert refused(check.tags, {"k": "v" * 257}).startswith("Tag key 'k' must be 1-128")
    assert refused(check.tags, {"k" * 129: "v"}).endswith(
        "must be 1-128 characters and its value at most 256"
    )
    assert refused(check.tags, {"AWS:owner": "x"}) == (
        "Tag key 'AWS:owner' uses the reserved prefix aws:"
    )


def test_logging_config() -> None:
    assert check.logging_config({}, "fn") == {"LogFormat": "Text", "LogGroup": "/aws/lambda/fn"}
    assert check.logging_config(
        {"LogFormat": "JSON", "LogGroup": "/custom", "ApplicationLogLevel": "DEBUG"}, "fn"
    ) == {"LogFormat": "JSON", "LogGroup": "/custom", "ApplicationLogLevel": "DEBUG"}
    assert refused(check.logging_config, {"LogFormat": "XML"}, "fn") == constraint(
        "XML", "loggingConfig.logFormat", "Member must satisfy enum value set: [JSON, Text]"
    )
    assert refused(check.logging_config, {"SystemLogLevel": "LOUD"}, "fn") == constraint(
        "LOUD",
        "SystemLogLevel",
        "Member must satisfy enum value set: ['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR', 'FATAL']",
    )
    assert refused(check.logging_config, "Text", "fn") == "LoggingConfig must be an object"


# -- destinations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:lambda:us-east-1:123456789012:function:dest",
        "arn:aws:lambda:eu-west-2:123456789012:function:dest:$LATEST",
        "arn:aws:lambda:us-gov-west-1:123456789012:function:dest:prod",
        "arn:aws:lambda:us-east-1:123456789012:function:dest:7",
    ],
)
def test_destination_accepts_lambda_function_arns(arn: str) -> None:
    assert check.destination_arn(arn, "OnSuccess.Destination") == arn


def test_destination_refuses_other_services_saying_which() -> None:
    sqs = "arn:aws:sqs:us-east-1:123456789012:queue"
    assert refused(check.destination_arn, sqs, "OnFailure.Destination") == (
        f"OnFailure.Destination {sqs} is not supported: lamina delivers to Lambda function ARNs "
        "only for now (sqs destinations such as SQS and SNS arrive with those services)."
    )
    assert refused(check.destination_arn, "my-function", "OnSuccess.Destination") == (
        "OnSuccess.Destination must be an ARN, got 'my-function'"
    )


def test_dead_letter_config() -> None:
    target = "arn:aws:lambda:us-east-1:123456789012:function:dlq"
    assert check.dead_letter_config({"TargetArn": target}) == {"TargetArn": target}
    assert check.dead_letter_config({"TargetArn": ""}) == {}  # removes the target
    assert check.dead_letter_config({}) == {}
    assert refused(check.dead_letter_config, "x") == "DeadLetterConfig must be an object"
    sns = "arn:aws:sns:us-east-1:123456789012:topic"
    assert refused(check.dead_letter_config, {"TargetArn": sns}).startswith(
        f"DeadLetterConfig.TargetArn {sns} is not supported"
    )
