"""IAM policy `Condition` blocks, wildcards and policy variables (pure; no I/O).

This is the half of `lamina.auth.policy` that deals with strings: glob patterns (`*`, `?`),
policy variables (`${aws:username}`, `${key, 'default'}`, `${*}`, `${?}`, `${$}`) and the
condition operators. `policy.py` owns documents, statements, principals and the decision.

Condition semantics, as AWS documents them:

* Operators in one block AND together; keys under one operator AND together; the values
  listed for one key OR together (a negated operator therefore NORs them:
  `StringNotEquals: {k: [a, b]}` holds when the request value is neither a nor b).
* Condition key *names* are case-insensitive; values compare as the operator says.
* A key absent from the request makes a positive operator false and a negated one
  (`StringNotEquals`, `StringNotLike`, `NumericNotEquals`, `DateNotEquals`, `NotIpAddress`,
  `ArnNotEquals`, `ArnNotLike`, `StringNotEqualsIgnoreCase`) true. `...IfExists` makes any
  operator true when the key is absent; `Null` tests presence itself.
* `ForAllValues:` holds when every request value matches (vacuously true for an absent or
  empty key); `ForAnyValue:` holds when at least one does (false for absent/empty).
* A policy variable that cannot be resolved (key absent, or multi-valued) makes the test of
  that key false whatever the operator: AWS says such a statement "may be invalid"; we
  treat it as not matching rather than guessing a value.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

__all__ = [
    "Condition",
    "Lookup",
    "MalformedPolicy",
    "arn_match",
    "compile_glob",
    "evaluate_conditions",
    "expand",
    "glob_match",
    "parse_conditions",
    "tokens_to_items",
]

Lookup = Callable[[str], "str | list[str] | None"]
Qualifier = Literal["", "ForAnyValue", "ForAllValues"]


class MalformedPolicy(ValueError):
    """The document is not a valid policy; the IAM API reports it as MalformedPolicyDocument."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- wildcards and variables -------------------------------------------------------------------

_VAR = re.compile(r"\$\{([^}]*)\}")
_DEFAULT = re.compile(r"^\s*([^,\s]+)\s*,\s*'((?:[^']|'')*)'\s*$")
_SPECIAL = {"*": "*", "?": "?", "$": "$"}

Token = tuple[str, bool]  # (text, wild): wild text gives * and ? their wildcard meaning


def expand(value: str, lookup: Lookup | None) -> list[Token] | None:
    """Split a policy string into tokens, substituting policy variables.

    `lookup=None` means no variables (Version 2008-10-17): the text is taken as written.
    Substituted values and `${*}`/`${?}`/`${$}` are literal (never wildcards). Returns None
    when a variable has no single value in the request and no default.
    """
    if lookup is None or "${" not in value:
        return [(value, True)]
    out: list[Token] = []
    pos = 0
    for m in _VAR.finditer(value):
        if m.start() > pos:
            out.append((value[pos : m.start()], True))
        pos = m.end()
        inner = m.group(1)
        if inner in _SPECIAL:
            out.append((_SPECIAL[inner], False))
            continue
        default: str | None = None
        d = _DEFAULT.match(inner)
        name = inner.strip()
        if d is not None:
            name, default = d.group(1), d.group(2).replace("''", "'")
        got = lookup(name) if name else None
        if isinstance(got, list):
            got = got[0] if len(got) == 1 else None
        if got is None:
            if default is None:
                return None
            got = default
        out.append((got, False))
    if pos < len(value):
        out.append((value[pos:], True))
    return out


STAR, ONE = "**", "??"  # pattern items: single characters (literal) or these two wildcards
Items = tuple[str, ...]


def tokens_to_items(tokens: Sequence[Token], *, fold: bool = False) -> Items:
    """Pattern items for `glob_match`; `fold=True` lower-cases literals (case-insensitive)."""
    out: list[str] = []
    for text, wild in tokens:
        for ch in text.lower() if fold else text:
            if wild and ch == "*":
                if not out or out[-1] != STAR:  # runs of * are one *
                    out.append(STAR)
            elif wild and ch == "?":
                out.append(ONE)
            else:
                out.append(ch)
    return tuple(out)


def glob_match(items: Items, text: str) -> bool:
    """Whole-string wildcard match in O(len(items) * len(text)) worst case (no regex, so no
    catastrophic backtracking on hostile patterns such as `*a*a*a*a*b`)."""
    p = t = 0
    star_p, star_t = -1, 0
    n = len(items)
    while t < len(text):
        if p < n and items[p] == STAR:
            star_p, star_t = p, t
            p += 1
        elif p < n and (items[p] == ONE or items[p] == text[t]):
            p += 1
            t += 1
        elif star_p >= 0:
            p = star_p + 1
            star_t += 1
            t = star_t
        else:
            return False
    while p < n and items[p] == STAR:
        p += 1
    return p == n


def arn_match(items: Items, arn: str) -> bool:
    """ARN operators: the six colon-separated parts are matched one by one, so a wildcard in
    the first five stays within its part; the last (resource) part may contain colons."""
    parts = arn.split(":", 5)
    if len(parts) != 6:
        return False
    if items == (STAR,):
        return True
    segments: list[list[str]] = [[]]
    for item in items:
        if item == ":" and len(segments) < 6:
            segments.append([])
        else:
            segments[-1].append(item)
    return len(segments) == 6 and all(
        glob_match(tuple(seg), part) for seg, part in zip(segments, parts, strict=True)
    )


@lru_cache(maxsize=4096)
def compile_glob(pattern: str, ignore_case: bool = False) -> Items:
    """`*` = any run of characters (including `:` and `/`), `?` = any one character."""
    return tokens_to_items([(pattern, True)], fold=ignore_case)


# -- operators ---------------------------------------------------------------------------------

# base operator -> (family, negated)
_OPERATORS: dict[str, tuple[str, bool]] = {
    "StringEquals": ("str", False),
    "StringNotEquals": ("str", True),
    "StringEqualsIgnoreCase": ("stri", False),
    "StringNotEqualsIgnoreCase": ("stri", True),
    "StringLike": ("like", False),
    "StringNotLike": ("like", True),
    "NumericEquals": ("num=", False),
    "NumericNotEquals": ("num=", True),
    "NumericLessThan": ("num<", False),
    "NumericLessThanEquals": ("num<=", False),
    "NumericGreaterThan": ("num>", False),
    "NumericGreaterThanEquals": ("num>=", False),
    "DateEquals": ("date=", False),
    "DateNotEquals": ("date=", True),
    "DateLessThan": ("date<", False),
    "DateLessThanEquals": ("date<=", False),
    "DateGreaterThan": ("date>", False),
    "DateGreaterThanEquals": ("date>=", False),
    "Bool": ("bool", False),
    "BinaryEquals": ("bin", False),
    "IpAddress": ("ip", False),
    "NotIpAddress": ("ip", True),
    "ArnEquals": ("arn", False),
    "ArnLike": ("arn", False),
    "ArnNotEquals": ("arn", True),
    "ArnNotLike": ("arn", True),
    "Null": ("null", False),
}
_BY_LOWER = {k.lower(): k for k in _OPERATORS}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_EPOCH = re.compile(r"[+-]?\d+(?:\.\d+)?")


def _number(s: str) -> float | None:
    return float(s) if _NUMBER.fullmatch(s.strip()) else None


def _date(s: str) -> float | None:
    """ISO 8601 (date, date-time, `Z` or offset; naive means UTC) or epoch seconds."""
    s = s.strip()
    if _EPOCH.fullmatch(s):
        return float(s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def _ip_net(s: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(s.strip(), strict=False)
    except ValueError:
        return None


def _b64(s: str) -> bytes | None:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None


_CMP: dict[str, Callable[[float, float], bool]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _matcher(family: str, tokens: list[Token]) -> Callable[[str], bool]:
    """A predicate `request value -> matches this one policy value` (positive sense)."""
    plain = "".join(t for t, _ in tokens)
    if family == "str":
        return lambda v: v == plain
    if family == "stri":
        folded = plain.casefold()
        return lambda v: v.casefold() == folded
    if family in ("like", "arn"):
        items = tokens_to_items(tokens)
        if family == "arn":
            return lambda v: arn_match(items, v)
        return lambda v: glob_match(items, v)
    if family.startswith(("num", "date")):
        is_num = family.startswith("num")
        conv = _number if is_num else _date
        cmp = _CMP[family[3:] if is_num else family[4:]]
        want = conv(plain)
        if want is None:
            return lambda v: False

        def numeric(v: str) -> bool:
            got = conv(v)
            return got is not None and cmp(got, want)

        return numeric
    if family == "bool":
        return lambda v: v.strip().lower() == plain.strip().lower()
    if family == "bin":
        raw = _b64(plain)
        return lambda v: v == plain or (raw is not None and _b64(v) == raw)
    if family == "ip":
        net = _ip_net(plain)
        if net is None:
            return lambda v: False

        def in_net(v: str) -> bool:
            try:
                addr = ipaddress.ip_address(v.strip())
            except ValueError:
                return False
            return addr.version == net.version and addr in net

        return in_net
    raise AssertionError(family)  # pragma: no cover - families are closed


# -- parsed conditions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One `operator: {key: values}` test. `operator` is canonical, e.g.
    `ForAnyValue:StringEqualsIfExists`; `key` keeps the policy's spelling."""

    operator: str
    base: str
    qualifier: Qualifier
    if_exists: bool
    key: str
    values: tuple[str, ...]

    @property
    def negated(self) -> bool:
        return _OPERATORS[self.base][1]

    def test(self, present: list[str] | None, lookup: Lookup | None) -> bool:
        """Evaluate against the request's values for `key` (None/empty: key absent)."""
        family, negated = _OPERATORS[self.base]
        if family == "null":
            absent = not present
            return any((v.lower() == "true") == absent for v in self.values)
        if not present:
            if self.if_exists or self.qualifier == "ForAllValues":
                return True
            return negated and self.qualifier == ""
        matchers: list[Callable[[str], bool]] = []
        for value in self.values:
            tokens = expand(value, lookup)
            if tokens is None:
                return False  # unresolvable variable: the statement does not match
            matchers.append(_matcher(family, tokens))

        def passes(v: str) -> bool:
            return any(m(v) for m in matchers) != negated

        if self.qualifier == "ForAllValues":
            return all(passes(v) for v in present)
        if self.qualifier == "ForAnyValue":
            return any(passes(v) for v in present)
        return any(any(m(v) for m in matchers) for v in present) != negated


def _scalar(value: object, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value == value and value not in (float("inf"), -float("inf")):
        return repr(value)
    raise MalformedPolicy(f"{where}: condition values must be strings, numbers or booleans")


def _check_value(base: str, value: str, where: str) -> None:
    """Reject literal values an operator can never accept (variables are checked later)."""
    if "${" in value:
        return
    family = _OPERATORS[base][0]
    bad = (
        (family.startswith("num") and _number(value) is None)
        or (family.startswith("date") and _date(value) is None)
        or (family == "ip" and _ip_net(value) is None)
        or (family in ("bool", "null") and value.lower() not in ("true", "false"))
    )
    if bad:
        raise MalformedPolicy(f"{where}: {value!r} is not a valid value for {base}")


def parse_operator(name: str, where: str) -> tuple[str, Qualifier, bool]:
    """`ForAnyValue:StringLikeIfExists` -> ("StringLike", "ForAnyValue", True)."""
    rest = name
    qualifier: Qualifier = ""
    head, sep, tail = rest.partition(":")
    if sep:
        if head.lower() == "foranyvalue":
            qualifier = "ForAnyValue"
        elif head.lower() == "forallvalues":
            qualifier = "ForAllValues"
        else:
            raise MalformedPolicy(f"{where}: unknown condition qualifier {head!r}")
        rest = tail
    if_exists = rest.lower().endswith("ifexists") and rest.lower() not in _BY_LOWER
    if if_exists:
        rest = rest[: -len("IfExists")]
    base = _BY_LOWER.get(rest.lower())
    if base is None:
        raise MalformedPolicy(f"{where}: unknown condition operator {name!r}")
    if base == "Null" and (if_exists or qualifier):
        raise MalformedPolicy(f"{where}: {name!r} is not allowed; use Null on its own")
    return base, qualifier, if_exists


def parse_conditions(block: object, where: str) -> tuple[Condition, ...]:
    """Validate a statement's `Condition` element and flatten it to `Condition`s."""
    if not isinstance(block, Mapping):
        raise MalformedPolicy(f"{where}: Condition must be an object")
    out: list[Condition] = []
    for op_name, keys in block.items():
        if not isinstance(op_name, str):
            raise MalformedPolicy(f"{where}: condition operators must be strings")
        base, qualifier, if_exists = parse_operator(op_name, where)
        if not isinstance(keys, Mapping) or not keys:
            raise MalformedPolicy(f"{where}: {op_name} must map condition keys to values")
        canonical = (
            (f"{qualifier}:" if qualifier else "") + base + ("IfExists" if if_exists else "")
        )
        for key, raw in keys.items():
            if not isinstance(key, str) or not key:
                raise MalformedPolicy(f"{where}: condition keys must be non-empty strings")
            items = list(raw) if isinstance(raw, list | tuple) else [raw]
            if not items:
                raise MalformedPolicy(f"{where}: {op_name} {key!r} has no values")
            values = tuple(_scalar(v, where) for v in items)
            for v in values:
                _check_value(base, v, where)
            out.append(Condition(canonical, base, qualifier, if_exists, key, values))
    return tuple(out)


def evaluate_conditions(
    conditions: Sequence[Condition],
    keys: Mapping[str, list[str]],
    lookup: Lookup | None,
) -> bool:
    """All conditions must hold (`keys` maps lower-cased key names to request values)."""
    return all(c.test(keys.get(c.key.lower()), lookup) for c in conditions)
