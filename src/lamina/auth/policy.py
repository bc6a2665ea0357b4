"""IAM policy documents and their evaluation, as AWS documents them (pure; no I/O).

`parse_policy` validates a JSON policy document (raising `MalformedPolicy` with a message that
says what is wrong) and `evaluate` decides one request against the caller's identity-based
policies and the resource's resource-based policy.

Evaluation order (`evaluate`):

1. **Applicability.** A statement applies when its Action/NotAction matches the action
   (case-insensitive, `*`/`?` wildcards), its Resource/NotResource matches the resource ARN
   (case-sensitive; `*` spans `:` and `/`; a resource policy without Resource means "the
   resource it is attached to"), its Principal/NotPrincipal matches the caller (resource
   policies only) and every condition holds (see `lamina.auth.conditions`). Identity policies
   only apply to IAM callers; a service principal (`principal_service`) or an anonymous caller
   is judged by the resource policy alone.
2. **Explicit deny.** Any applicable Deny, in any policy, wins. This includes the account root
   user: it needs no identity policy, but a resource policy can still deny it.
3. **Allow.** Same account (caller's account == resource account): an Allow in the identity
   policies *or* one in the resource policy suffices. Cross-account: both the caller's
   identity policies *and* the resource policy must allow. The root user counts as allowed by
   its own (implicit, full) identity permissions, so cross-account it needs only the resource
   policy's Allow.
   A resource policy that names an *account* (`"123456789012"` or `arn:aws:iam::…:root`)
   rather than the caller itself delegates to that account: the grant only takes effect with
   an identity-policy Allow as well (AWS: "this delegates authority to the account"), except
   for that account's root user, which is the account.
4. **Implicit deny** otherwise.

Policy variables (`${aws:username}`, `${aws:PrincipalAccount}`, `${key, 'default'}`, `${*}`,
`${?}`, `${$}`) are substituted in Resource/NotResource and in condition values for Version
2012-10-17 only; a document without Version gets 2008-10-17 semantics (no variables).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lamina.auth.conditions import (
    Condition,
    Lookup,
    MalformedPolicy,
    compile_glob,
    evaluate_conditions,
    expand,
    glob_match,
    parse_conditions,
    tokens_to_items,
)
from lamina.auth.identity import Principal

__all__ = [
    "Condition",
    "Decision",
    "MalformedPolicy",
    "Policy",
    "PrincipalSpec",
    "RequestContext",
    "Statement",
    "action_matches",
    "evaluate",
    "parse_policy",
    "resource_matches",
]

PolicyKind = Literal["identity", "resource"]
Effect = Literal["Allow", "Deny"]
Reason = Literal["explicit-deny", "allowed", "implicit-deny"]
Via = Literal["identity", "resource", "identity+resource", "root"]

VERSIONS = ("2012-10-17", "2008-10-17")
_TOP_KEYS = frozenset({"Version", "Id", "Statement"})
_STMT_KEYS = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)
_PRINCIPAL_TYPES = ("AWS", "Service", "Federated", "CanonicalUser")
_ACTION = re.compile(r"[A-Za-z0-9-]+:.+", re.DOTALL)
_ACCOUNT = re.compile(r"[0-9]{12}")
_IAM_ARN = re.compile(r"arn:[a-z-]+:(?:iam|sts)::[0-9]{12}:[^*?]+", re.DOTALL)


# -- model -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrincipalSpec:
    """A parsed Principal/NotPrincipal element. `everyone` is `"*"` or `{"AWS": "*"}` (AWS
    documents them as equivalent; both also match service and anonymous callers)."""

    everyone: bool = False
    aws: frozenset[str] = frozenset()
    service: frozenset[str] = frozenset()
    federated: frozenset[str] = frozenset()
    canonical_user: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Statement:
    index: int
    sid: str | None
    effect: Effect
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...] | None  # None: omitted (resource policies only)
    not_resource: bool
    principal: PrincipalSpec | None  # None: identity policy
    not_principal: bool
    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        return self.sid if self.sid else f"Statement[{self.index}]"


@dataclass(frozen=True, slots=True)
class Policy:
    version: str  # effective version: "2012-10-17" or "2008-10-17"
    kind: PolicyKind
    statements: tuple[Statement, ...]
    id: str | None = None
    document: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> str:
        """The document as given (key order kept), compact."""
        return json.dumps(self.document, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class RequestContext:
    """One request to authorize. `resource_account` defaults to the account in the resource
    ARN (or, failing that, the caller's). `keys` are condition keys; names are
    case-insensitive, and principal-derived keys (aws:PrincipalArn, aws:PrincipalAccount,
    aws:PrincipalType, aws:userid, aws:username, aws:PrincipalServiceName,
    aws:ResourceAccount) are filled in unless given."""

    action: str
    resource: str
    principal: Principal | None
    principal_service: str | None = None
    resource_account: str = ""
    keys: Mapping[str, str | Sequence[str]] = field(default_factory=dict)

    @property
    def owner_account(self) -> str:
        if self.resource_account:
            return self.resource_account
        parts = self.resource.split(":", 5)
        if len(parts) == 6 and parts[4]:
            return parts[4]
        return self.principal.account if self.principal else ""


@dataclass(frozen=True, slots=True)
class Decision:
    """`matched` names the deciding statement(s) as `identity[i]:<Sid|Statement[j]>` or
    `resource:<...>` (joined by ` + ` when both were needed); `via` says which side granted."""

    allowed: bool
    reason: Reason
    matched: str | None = None
    via: Via | None = None


# -- parsing -----------------------------------------------------------------------------------


def _strings(value: object, where: str, element: str) -> tuple[str, ...]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise MalformedPolicy(f"{where}: {element} must not be empty")
    out = tuple(v for v in items if isinstance(v, str))
    if len(out) != len(items):
        raise MalformedPolicy(f"{where}: {element} must be a string or a list of strings")
    return out


def _parse_principal(value: object, where: str, element: str) -> PrincipalSpec:
    if value == "*":
        return PrincipalSpec(everyone=True)
    if not isinstance(value, Mapping) or not value:
        raise MalformedPolicy(f'{where}: {element} must be "*" or an object such as {{"AWS": ...}}')
    found: dict[str, frozenset[str]] = {}
    for ptype, entries in value.items():
        if ptype not in _PRINCIPAL_TYPES:
            raise MalformedPolicy(f"{where}: unknown {element} type {ptype!r}")
        found[ptype] = frozenset(_strings(entries, where, f"{element}.{ptype}"))
    aws = found.get("AWS", frozenset())
    for entry in aws:
        if entry != "*" and not _ACCOUNT.fullmatch(entry) and not _IAM_ARN.fullmatch(entry):
            raise MalformedPolicy(f"{where}: invalid principal in policy: {entry!r}")
    return PrincipalSpec(
        everyone="*" in aws,
        aws=aws - {"*"},
        service=frozenset(s.lower() for s in found.get("Service", ())),
        federated=found.get("Federated", frozenset()),
        canonical_user=found.get("CanonicalUser", frozenset()),
    )


def _exactly_one(stmt: Mapping[str, Any], a: str, b: str, where: str, required: bool) -> str | None:
    if a in stmt and b in stmt:
        raise MalformedPolicy(f"{where}: {a} and {b} cannot both be present")
    if a in stmt or b in stmt:
        return a if a in stmt else b
    if required:
        raise MalformedPolicy(f"{where}: must contain {a} or {b}")
    return None


def _parse_statement(stmt: object, index: int, kind: PolicyKind) -> Statement:
    where = f"Statement[{index}]"
    if not isinstance(stmt, Mapping):
        raise MalformedPolicy(f"{where}: must be an object")
    for key in stmt:
        if key not in _STMT_KEYS:
            raise MalformedPolicy(f"{where}: unknown element {key!r}")
    sid = stmt.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise MalformedPolicy(f"{where}: Sid must be a string")
    where = f"Statement {sid!r}" if sid else where
    effect = stmt.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise MalformedPolicy(f'{where}: Effect must be "Allow" or "Deny"')

    action_key = _exactly_one(stmt, "Action", "NotAction", where, required=True)
    assert action_key is not None
    actions = _strings(stmt[action_key], where, action_key)
    for a in actions:
        if a != "*" and not _ACTION.fullmatch(a):
            raise MalformedPolicy(
                f"{where}: action {a!r} must be prefixed by a service, e.g. lambda:"
            )

    res_key = _exactly_one(stmt, "Resource", "NotResource", where, required=kind == "identity")
    resources = _strings(stmt[res_key], where, res_key) if res_key else None
    for r in resources or ():
        if r != "*" and not r.startswith("arn:"):
            raise MalformedPolicy(f'{where}: resource {r!r} must be in ARN format or "*"')

    principal_key = _exactly_one(stmt, "Principal", "NotPrincipal", where, required=False)
    principal: PrincipalSpec | None = None
    if kind == "identity":
        if principal_key:
            raise MalformedPolicy(
                f"{where}: an identity-based policy must not specify {principal_key}"
            )
    else:
        if principal_key is None:
            raise MalformedPolicy(f"{where}: a resource-based policy must specify Principal")
        if principal_key == "NotPrincipal" and effect != "Deny":
            raise MalformedPolicy(f'{where}: NotPrincipal can only be used with "Effect": "Deny"')
        principal = _parse_principal(stmt[principal_key], where, principal_key)

    conditions = parse_conditions(stmt["Condition"], where) if "Condition" in stmt else ()
    return Statement(
        index=index,
        sid=sid or None,
        effect=effect,
        actions=actions,
        not_action=action_key == "NotAction",
        resources=resources,
        not_resource=res_key == "NotResource",
        principal=principal,
        not_principal=principal_key == "NotPrincipal",
        conditions=conditions,
    )


def _reject_constant(name: str) -> Any:
    raise MalformedPolicy(f"Syntax error: {name} is not valid JSON")


def parse_policy(document: str | Mapping[str, Any], *, kind: PolicyKind = "identity") -> Policy:
    """Parse and validate a policy. `kind="resource"` requires Principal/NotPrincipal in every
    statement and lets Resource be omitted; `kind="identity"` forbids Principal and requires
    Resource/NotResource. Raises `MalformedPolicy` with a message naming the problem."""
    if isinstance(document, str | bytes):
        try:
            doc: object = json.loads(document, parse_constant=_reject_constant)
        except MalformedPolicy:
            raise
        except (ValueError, RecursionError) as e:
            raise MalformedPolicy(f"Syntax errors in policy: {e}") from None
    else:
        doc = document
    if not isinstance(doc, Mapping):
        raise MalformedPolicy("The policy must be a JSON object")
    for key in doc:
        if key not in _TOP_KEYS:
            raise MalformedPolicy(f"Unknown policy element {key!r}")
    version = doc.get("Version")
    if version is not None and version not in VERSIONS:
        raise MalformedPolicy('Version must be "2012-10-17" or "2008-10-17"')
    pid = doc.get("Id")
    if pid is not None and not isinstance(pid, str):
        raise MalformedPolicy("Id must be a string")
    if "Statement" not in doc:
        raise MalformedPolicy("The policy must contain a Statement")
    raw = doc["Statement"]
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    if not items:
        raise MalformedPolicy("Statement must not be empty")
    statements = tuple(_parse_statement(s, i, kind) for i, s in enumerate(items))
    seen: set[str] = set()
    for s in statements:
        if s.sid is not None:
            if s.sid in seen:
                raise MalformedPolicy(f"Statement IDs (SID) must be unique: {s.sid!r} repeats")
            seen.add(s.sid)
    try:
        snapshot = json.loads(json.dumps(doc, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as e:  # pragma: no cover - validated above
        raise MalformedPolicy(f"Policy is not serializable as JSON: {e}") from None
    return Policy(
        version=str(version or "2008-10-17"),
        kind=kind,
        statements=statements,
        id=pid,
        document=snapshot,
    )


# -- matching ----------------------------------------------------------------------------------


def action_matches(pattern: str, action: str) -> bool:
    """Case-insensitive glob: `lambda:Get*`, `lambda:*Function*`, `lambda:?etFunction`, `*`."""
    return glob_match(compile_glob(pattern, True), action.lower())


def resource_matches(pattern: str, arn: str) -> bool:
    """Case-sensitive glob; `*` spans any characters, `:` and `/` included."""
    return glob_match(compile_glob(pattern, False), arn)


def _resource_entry_matches(pattern: str, arn: str, lookup: Lookup | None) -> bool | None:
    """None: an unresolvable policy variable."""
    if lookup is None or "${" not in pattern:
        return resource_matches(pattern, arn)
    tokens = expand(pattern, lookup)
    if tokens is None:
        return None
    return glob_match(tokens_to_items(tokens), arn)


def _principal_layers(p: Principal) -> list[frozenset[str]]:
    """Identities AWS checks, outermost first, each as the set of entries naming it."""
    account = frozenset({p.account, f"arn:aws:iam::{p.account}:root"})
    if p.kind == "root":
        return [account | {p.arn}]
    if p.kind == "assumed-role":
        role = frozenset({p.role_arn} if p.role_arn else ())
        return [account, role, role | {p.arn}]
    return [account, frozenset({p.arn})]


def _principal_match(
    spec: PrincipalSpec, ctx: RequestContext
) -> Literal["direct", "account"] | None:
    """How a Principal element names the caller: "direct" (the caller itself, or everyone),
    "account" (its account: a delegation), or None."""
    if spec.everyone:
        return "direct"
    if ctx.principal_service is not None:
        return "direct" if ctx.principal_service.lower() in spec.service else None
    p = ctx.principal
    if p is None:
        return None
    layers = _principal_layers(p)
    if any(spec.aws & layer for layer in layers[1:]) or (p.kind == "root" and spec.aws & layers[0]):
        return "direct"
    return "account" if spec.aws & layers[0] else None


def _not_principal_excludes(spec: PrincipalSpec, ctx: RequestContext) -> bool:
    """NotPrincipal exempts the caller only if every layer (account, then user, or role and
    session) is listed — AWS's advice to list the account alongside the user or role."""
    if spec.everyone:
        return True
    if ctx.principal_service is not None:
        return ctx.principal_service.lower() in spec.service
    p = ctx.principal
    if p is None:
        return False
    return all(spec.aws & layer for layer in _principal_layers(p))


def _applies(
    stmt: Statement, ctx: RequestContext, keys: Mapping[str, list[str]], lookup: Lookup | None
) -> Literal["direct", "account"] | None:
    """Whether `stmt` applies to the request; for resource policies, how the caller matched."""
    if any(action_matches(a, ctx.action) for a in stmt.actions) == stmt.not_action:
        return None
    if stmt.resources is not None:
        hits = [_resource_entry_matches(r, ctx.resource, lookup) for r in stmt.resources]
        if None in hits or any(hits) == stmt.not_resource:
            return None
    how: Literal["direct", "account"] | None = "direct"
    if stmt.principal is not None:
        if stmt.not_principal:
            how = None if _not_principal_excludes(stmt.principal, ctx) else "direct"
        else:
            how = _principal_match(stmt.principal, ctx)
        if how is None:
            return None
    if not evaluate_conditions(stmt.conditions, keys, lookup):
        return None
    return how


def _effective_keys(ctx: RequestContext) -> dict[str, list[str]]:
    derived: dict[str, str] = {"aws:ResourceAccount": ctx.owner_account}
    p = ctx.principal
    if ctx.principal_service is not None:
        derived["aws:PrincipalServiceName"] = ctx.principal_service
        derived["aws:PrincipalIsAWSService"] = "true"
    elif p is not None:
        derived["aws:PrincipalIsAWSService"] = "false"
        derived["aws:PrincipalAccount"] = p.account
        derived["aws:PrincipalArn"] = (
            p.role_arn if p.kind == "assumed-role" and p.role_arn else p.arn
        )
        derived["aws:userid"] = p.user_id
        derived["aws:PrincipalType"] = {"root": "Account", "user": "User"}.get(
            p.kind, "AssumedRole"
        )
        if p.kind == "user":
            derived["aws:username"] = p.name
    keys = {k.lower(): [v] for k, v in derived.items() if v}
    for k, v in ctx.keys.items():
        if isinstance(v, str):
            keys[str(k).lower()] = [v]
        elif isinstance(v, Sequence):
            keys[str(k).lower()] = [str(x) for x in v]
        else:  # tolerate a stray scalar rather than fail authorization with a TypeError
            keys[str(k).lower()] = [str(v)]
    return keys


def _lookup_for(policy: Policy, keys: Mapping[str, list[str]]) -> Lookup | None:
    if policy.version != "2012-10-17":
        return None

    def lookup(name: str) -> str | list[str] | None:
        got = keys.get(name.lower())
        return got if got else None

    return lookup


# -- evaluation --------------------------------------------------------------------------------


def evaluate(
    ctx: RequestContext, identity: Sequence[Policy], resource: Policy | None = None
) -> Decision:
    """Decide `ctx` against the caller's identity policies and the resource's policy; see
    the module docstring for the order (explicit deny, then allow rules, else implicit deny)."""
    keys = _effective_keys(ctx)
    iam_caller = ctx.principal is not None and ctx.principal_service is None
    scoped: list[tuple[str, Policy]] = []
    if iam_caller:
        scoped += [(f"identity[{i}]", pol) for i, pol in enumerate(identity)]
    if resource is not None:
        scoped.append(("resource", resource))

    id_allow: str | None = None
    res_allow: tuple[str, Literal["direct", "account"]] | None = None
    for where, pol in scoped:
        lookup = _lookup_for(pol, keys)
        for stmt in pol.statements:
            how = _applies(stmt, ctx, keys, lookup)
            if how is None:
                continue
            label = f"{where}:{stmt.label}"
            if stmt.effect == "Deny":
                via: Via = "resource" if where == "resource" else "identity"
                return Decision(False, "explicit-deny", label, via)
            if where != "resource":
                id_allow = id_allow or label
            elif res_allow is None or (how == "direct" and res_allow[1] == "account"):
                res_allow = (label, how)

    if not iam_caller:  # service principal or anonymous: the resource policy alone decides
        if res_allow is not None and res_allow[1] == "direct":
            return Decision(True, "allowed", res_allow[0], "resource")
        return Decision(False, "implicit-deny")

    assert ctx.principal is not None
    is_root = ctx.principal.kind == "root"
    same_account = ctx.principal.account == ctx.owner_account
    if same_account:
        if is_root:
            return Decision(True, "allowed", id_allow, "root")
        if id_allow is not None:
            return Decision(True, "allowed", id_allow, "identity")
        if res_allow is not None and res_allow[1] == "direct":
            return Decision(True, "allowed", res_allow[0], "resource")
        return Decision(False, "implicit-deny")
    if res_allow is not None and (is_root or id_allow is not None):
        matched = res_allow[0] if is_root else f"{id_allow} + {res_allow[0]}"
        return Decision(True, "allowed", matched, "identity+resource")
    return Decision(False, "implicit-deny")
