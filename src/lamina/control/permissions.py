"""Resource-based policies of functions: AddPermission, GetPolicy, RemovePermission, and the
parsed policy the authorization of every Lambda request reads (`policy_for`).

A policy belongs to a function and a qualifier, each separately: the function itself
(unqualified; `$LATEST` names the same policy, and AWS refuses to add to `$LATEST` explicitly),
each published version, each alias. It is stored as the JSON document GetPolicy returns, with
a RevisionId of its own that changes on every change, and kept here parsed
(`lamina.auth.policy.Policy`), so `policy_for` is a dict lookup.

A policy goes with what it is attached to: with the function (`forget`, hooked into
`Functions.on_delete`; the rows cascade), with a deleted version or alias (SQLite triggers drop
the row; the cache notices the version or alias is gone — or, for an alias deleted and created
again under the same name, that its row is gone — the next time it is read).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from lamina.auth.policy import MalformedPolicy, Policy, parse_policy
from lamina.control.functions import Functions
from lamina.control.versions import VERSION_RE
from lamina.errors import (
    InvalidParameterValueException,
    PolicyLengthExceededException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from lamina.store.policies import PolicyStore
from lamina.types import LATEST

MAX_POLICY_BYTES = 20480  # AWS: "Function resource-based policy: 20 KB"

_STATEMENT_ID = re.compile(r"[a-zA-Z0-9-_]+")
_REMOVE_STATEMENT_ID = re.compile(r"[a-zA-Z0-9-_.]+")
_ACTION = re.compile(r"lambda:[*]|lambda:[a-zA-Z]+|[*]")
_SOURCE_ARN = re.compile(
    r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?"
    r":(\d{12})?:(.*)",
    re.DOTALL,
)
_ACCOUNT = re.compile(r"\d{12}")
_EVENT_SOURCE_TOKEN = re.compile(r"[a-zA-Z0-9._\-]+")
_ORG_ID = re.compile(r"o-[a-z0-9]{10,32}")
_IAM_PRINCIPAL = re.compile(
    r"arn:aws(-[a-z]+)*:(iam::\d{12}:(root|(user|role|federated-user)/[\w+=,.@/-]+)"
    r"|sts::\d{12}:assumed-role/[\w+=,.@/-]+)"
)
_SERVICE_PRINCIPAL = re.compile(r"[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)*\.amazon(aws)?\.com(\.cn)?")
_URL_AUTH_TYPES = ("NONE", "AWS_IAM")


@dataclass(slots=True)
class _Entry:
    statements: list[dict[str, Any]]
    revision_id: str
    policy: Policy
    seen: str | None = None  # an alias's RevisionId when its policy was last known current


def _document(statements: list[dict[str, Any]]) -> str:
    doc = {"Version": "2012-10-17", "Id": "default", "Statement": statements}
    return json.dumps(doc, separators=(",", ":"))


def _invalid(value: Any, field: str, constraint: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(
        f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _string(body: dict[str, Any], key: str, field: str, pattern: re.Pattern[str]) -> str | None:
    """An optional string member checked against the model's pattern; None when absent."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _invalid(
            value, field, f"Member must satisfy regular expression pattern: {pattern.pattern}"
        )
    return value


def check_statement_id(value: Any, pattern: re.Pattern[str] = _STATEMENT_ID) -> str:
    if value is None:
        raise _invalid(None, "statementId", "Member must not be null")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _invalid(
            value,
            "statementId",
            f"Member must satisfy regular expression pattern: {pattern.pattern}",
        )
    if len(value) > 100:
        raise _invalid(value, "statementId", "Member must have length less than or equal to 100")
    return value


def _principal(value: Any) -> str | dict[str, str]:
    """The statement's Principal for AddPermission's `Principal` string."""
    if value is None:
        raise _invalid(None, "principal", "Member must not be null")
    if not isinstance(value, str):
        raise _invalid(
            value, "principal", r"Member must satisfy regular expression pattern: [^\s]+"
        )
    if value == "*":
        return "*"
    if _ACCOUNT.fullmatch(value):
        return {"AWS": f"arn:aws:iam::{value}:root"}
    if _IAM_PRINCIPAL.fullmatch(value):
        return {"AWS": value}
    if _SERVICE_PRINCIPAL.fullmatch(value):
        return {"Service": value}
    raise InvalidParameterValueException(
        "The provided principal was invalid. Please check the principal and try again."
    )


def build_statement(body: dict[str, Any], resource: str) -> dict[str, Any]:
    """The statement AWS makes of an AddPermission request (keys in AWS's order; empty parts
    left out). Raises InvalidParameterValueException for anything AWS refuses."""
    sid = check_statement_id(body.get("StatementId"))
    action = body.get("Action")
    if action is None:
        raise _invalid(None, "action", "Member must not be null")
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise _invalid(
            action, "action", f"Member must satisfy regular expression pattern: {_ACTION.pattern}"
        )
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": _principal(body.get("Principal")),
        "Action": action,
        "Resource": resource,
    }
    equals: dict[str, str] = {}
    account = _string(body, "SourceAccount", "sourceAccount", _ACCOUNT)
    if account is not None:
        equals["AWS:SourceAccount"] = account
    org = _string(body, "PrincipalOrgID", "principalOrgID", _ORG_ID)
    if org is not None:
        equals["aws:PrincipalOrgID"] = org
    token = _string(body, "EventSourceToken", "eventSourceToken", _EVENT_SOURCE_TOKEN)
    if token is not None:
        equals["lambda:EventSourceToken"] = token
    auth_type = body.get("FunctionUrlAuthType")
    if auth_type is not None:
        if auth_type not in _URL_AUTH_TYPES:
            raise _invalid(
                auth_type,
                "functionUrlAuthType",
                "Member must satisfy enum value set: [NONE, AWS_IAM]",
            )
        equals["lambda:FunctionUrlAuthType"] = auth_type
    condition: dict[str, Any] = {}
    if equals:
        condition["StringEquals"] = equals
    source_arn = _string(body, "SourceArn", "sourceArn", _SOURCE_ARN)
    if source_arn is not None:
        condition["ArnLike"] = {"AWS:SourceArn": source_arn}
    via_url = body.get("InvokedViaFunctionUrl")
    if via_url is not None and not isinstance(via_url, bool):
        raise InvalidParameterValueException("InvokedViaFunctionUrl must be a boolean")
    if via_url:
        condition["Bool"] = {"lambda:InvokedViaFunctionUrl": "true"}
    if condition:
        statement["Condition"] = condition
    return statement


class Permissions:
    def __init__(self, functions: Functions, store: PolicyStore) -> None:
        self.functions = functions
        self.store = store
        self._entries: dict[tuple[str, str], _Entry] = {}
        for name, qualifier, document, revision_id in store.all():
            key = (name, qualifier)
            if not self._exists(key):  # its version or alias went while triggers were absent
                store.delete(name, qualifier)
                continue
            statements = json.loads(document)["Statement"]
            self._entries[key] = self._entry(statements, revision_id, key)

    # -- what authorization reads ----------------------------------------------------------------

    def policy_for(self, function_name: str, qualifier: str | None) -> Policy | None:
        """The parsed resource-based policy of `function_name` (a bare name, as resolved)
        with `qualifier`: a version number or alias gets that version's or alias's own policy
        (AWS evaluates the policy of the qualifier invoked, never the function's); None or
        `$LATEST` gets the function's (unqualified) policy. None when there is none."""
        key = (function_name, qualifier or LATEST)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if key[1] != LATEST and not self._current(key, entry):
            return None
        return entry.policy

    # -- the API -------------------------------------------------------------------------------

    async def add(self, raw: str, qualifier: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """AddPermission: the new statement, as a JSON string, under `Statement`."""
        statement = build_statement(body, "")  # the request's own checks come first
        async with self.functions.lock:
            key, named = self._key(raw, qualifier)
            if named == LATEST:
                raise InvalidParameterValueException(
                    "We currently do not support adding policies for $LATEST."
                )
            statement["Resource"] = self.functions.arn(key[0], None if key[1] == LATEST else key[1])
            entry = self._live(key)
            self._check_revision(key, entry, body.get("RevisionId"))
            statements = list(entry.statements) if entry else []
            if any(s.get("Sid") == statement["Sid"] for s in statements):
                raise ResourceConflictException(
                    f"The statement id ({statement['Sid']}) provided already exists. Please "
                    "provide a new statement id, or remove the existing statement."
                )
            statements.append(statement)
            self._save(key, statements)
        return {"Statement": json.dumps(statement, separators=(",", ":"))}

    def get(self, raw: str, qualifier: str | None) -> dict[str, Any]:
        """GetPolicy: the whole document as a JSON string, and its RevisionId."""
        key, _named = self._key(raw, qualifier)
        entry = self._live(key)
        if entry is None:
            raise ResourceNotFoundException("The resource you requested does not exist.")
        return {"Policy": _document(entry.statements), "RevisionId": entry.revision_id}

    async def remove(
        self, raw: str, qualifier: str | None, statement_id: str, revision_id: str | None
    ) -> None:
        """RemovePermission; removing the last statement removes the policy."""
        sid = check_statement_id(statement_id, _REMOVE_STATEMENT_ID)
        async with self.functions.lock:
            key, _named = self._key(raw, qualifier)
            entry = self._live(key)
            self._check_revision(key, entry, revision_id)
            if entry is None or not any(s.get("Sid") == sid for s in entry.statements):
                raise ResourceNotFoundException(f"Statement {sid} is not found in resource policy.")
            self._save(key, [s for s in entry.statements if s.get("Sid") != sid])

    def forget(self, name: str) -> None:
        """The function was deleted: its policies go (the rows went with it already)."""
        for key in [k for k in self._entries if k[0] == name]:
            del self._entries[key]
        self.store.delete_function(name)

    # -- internals -----------------------------------------------------------------------------

    def _key(self, raw: str, qualifier: str | None) -> tuple[tuple[str, str], str | None]:
        """(function name, stored qualifier) of `FunctionName` + `Qualifier`, and the qualifier
        as named. Unknown functions, versions and aliases raise ResourceNotFoundException."""
        rec, q = self.functions.resolve(raw, qualifier)
        return (rec.name, q or LATEST), q

    def _entry(
        self, statements: list[dict[str, Any]], revision_id: str, key: tuple[str, str]
    ) -> _Entry:
        policy = parse_policy(_document(statements), kind="resource")
        return _Entry(statements, revision_id, policy, self._alias_revision(key))

    def _alias_revision(self, key: tuple[str, str]) -> str | None:
        alias = self.functions.versions.aliases.get(key[0], {}).get(key[1])
        return None if alias is None else alias.revision_id

    def _exists(self, key: tuple[str, str]) -> bool:
        name, q = key
        if self.functions.latest(name) is None:
            return False
        versions = self.functions.versions
        if q == LATEST:
            return True
        if VERSION_RE.match(q):
            return q in versions.published.get(name, {})
        return q in versions.aliases.get(name, {})

    def _current(self, key: tuple[str, str], entry: _Entry) -> bool:
        """Whether the version or alias `entry` belongs to is still the one it was attached
        to; drops the entry when not."""
        name, q = key
        versions = self.functions.versions
        if VERSION_RE.match(q):  # numbers are never reused: present means the same version
            if q in versions.published.get(name, {}):
                return True
        else:
            alias = versions.aliases.get(name, {}).get(q)
            if alias is not None:
                if alias.revision_id == entry.seen:
                    return True
                # Updated, or deleted and created again? A deleted alias's row went (trigger).
                if self.store.get(name, q) is not None:
                    entry.seen = alias.revision_id
                    return True
        self._entries.pop(key, None)
        self.store.delete(name, q)
        return False

    def _live(self, key: tuple[str, str]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and key[1] != LATEST and not self._current(key, entry):
            return None
        return entry

    def _target_revision(self, key: tuple[str, str]) -> str | None:
        """The RevisionId of what the policy is attached to (function, version or alias)."""
        name, q = key
        if q == LATEST:
            rec = self.functions.latest(name)
            return None if rec is None else rec.revision_id
        if VERSION_RE.match(q):
            version = self.functions.versions.published.get(name, {}).get(q)
            return None if version is None else version.revision_id
        return self._alias_revision(key)

    def _check_revision(self, key: tuple[str, str], entry: _Entry | None, given: Any) -> None:
        """A given RevisionId must be the policy's (GetPolicy's), or while there is no policy
        yet, that of the function, version or alias (GetFunction's / GetAlias's)."""
        if given is None:
            return
        current = entry.revision_id if entry is not None else self._target_revision(key)
        if given != current:
            raise PreconditionFailedException(
                "The RevisionId provided does not match the latest RevisionId for the Lambda "
                "function or alias. Call the GetFunction or the GetAlias API to retrieve the "
                "latest RevisionId for your resource."
            )

    def _save(self, key: tuple[str, str], statements: list[dict[str, Any]]) -> None:
        """Validate, store and cache `statements` as the policy of `key` (none: no policy)."""
        if not statements:
            self.store.delete(*key)
            self._entries.pop(key, None)
            return
        document = _document(statements)
        size = len(document.encode())
        if size > MAX_POLICY_BYTES:
            raise PolicyLengthExceededException(
                f"The final policy size ({size}) is bigger than the limit ({MAX_POLICY_BYTES})."
            )
        revision_id = str(uuid.uuid4())
        try:
            entry = self._entry(statements, revision_id, key)
        except MalformedPolicy as exc:
            raise InvalidParameterValueException(f"The policy is not valid: {exc}") from None
        self.store.put(key[0], key[1], document, revision_id)
        self._entries[key] = entry
