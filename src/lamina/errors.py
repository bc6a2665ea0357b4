"""Every AWS error lamina can answer with, defined once.

Each class carries what the wire needs: the error code botocore maps to its modeled exception
class, the HTTP status, whether the caller (`User`) or lamina (`Service`) is at fault, and the
member name the service model gives the message (`message` or `Message`). `api/render.py`
turns an instance into a rest-json response (Lambda), `api/query.py` into the query protocol's
XML (IAM, STS, which use `query_code` when it is set); nothing else formats errors.

`ALL_ERRORS` and `IAM_ERRORS` list every class; tests/unit/test_error_shape.py checks that
botocore parses each into its modeled exception class, and tests/e2e/test_errors.py triggers
each Lambda one over the wire. Lambda's model has two more that lamina never answers:
ResourceNotReadyException (502: an Inactive function whose VPC connection is being restored;
lamina's functions are Active from the moment they are created, and have no VPC), and
UnsupportedMediaTypeException (415, "the content type of the Invoke request body is not
JSON": the SDKs send no content type (botocore, the CLI), an empty one (Java v1) or
`binary/octet-stream` (JavaScript v2), and AWS runs them all; what it checks is the body,
InvalidRequestContentException, and so does lamina).
"""

from __future__ import annotations

from typing import Any, ClassVar


class LambdaError(Exception):
    code: ClassVar[str] = "ServiceException"
    status: ClassVar[int] = 500
    fault: ClassVar[str] = "Service"
    message_key: ClassVar[str] = "Message"
    query_code: ClassVar[str | None] = None  # the code query-protocol services (IAM, STS) use

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"Type": self.fault, self.message_key: self.message, **self.extra}


class ServiceException(LambdaError):
    """A fault in lamina (500). The query protocol (IAM, STS) spells it `ServiceFailure`, as
    IAM's model does; STS models no fault of its own, so boto3 raises a ClientError there."""

    query_code = "ServiceFailure"


class ResourceNotFoundException(LambdaError):
    code = "ResourceNotFoundException"
    status = 404
    fault = "User"


class ResourceConflictException(LambdaError):
    code = "ResourceConflictException"
    status = 409
    fault = "User"
    message_key = "message"


class InvalidParameterValueException(LambdaError):
    code = "InvalidParameterValueException"
    status = 400
    fault = "User"
    message_key = "message"


class InvalidRequestContentException(LambdaError):
    code = "InvalidRequestContentException"
    status = 400
    fault = "User"
    message_key = "message"


class RequestTooLargeException(LambdaError):
    code = "RequestTooLargeException"
    status = 413
    fault = "User"
    message_key = "message"


class TooManyRequestsException(LambdaError):
    code = "TooManyRequestsException"
    status = 429
    fault = "User"
    message_key = "message"

    def __init__(self, message: str, reason: str, retry_after: int = 1) -> None:
        super().__init__(message, Reason=reason)
        self.headers["Retry-After"] = str(retry_after)


class PreconditionFailedException(LambdaError):
    code = "PreconditionFailedException"
    status = 412
    fault = "User"
    message_key = "message"


class ValidationException(LambdaError):
    """Request shape errors that botocore's model has no member for (e.g. a method the path
    does not take)."""

    code = "ValidationException"
    status = 400
    fault = "User"
    message_key = "message"


class PolicyLengthExceededException(LambdaError):
    """A function's resource-based policy would be larger than AWS's 20 KB limit."""

    code = "PolicyLengthExceededException"
    status = 400
    fault = "User"
    message_key = "message"


class ProvisionedConcurrencyConfigNotFoundException(LambdaError):
    code = "ProvisionedConcurrencyConfigNotFoundException"
    status = 404
    fault = "User"
    message_key = "message"


class UnknownOperationException(LambdaError):
    code = "UnknownOperationException"
    status = 404
    fault = "User"


# Authentication and authorization (issue 5). The same failures answer every protocol lamina
# speaks: rest-json services render them as JSON, query services (IAM, STS) as XML.


class MissingAuthenticationTokenException(LambdaError):
    """No Authorization header and no presigned query."""

    code = "MissingAuthenticationTokenException"
    status = 403
    fault = "User"
    message_key = "message"
    query_code = "MissingAuthenticationToken"


class UnrecognizedClientException(LambdaError):
    """An access key (or session token) lamina does not know."""

    code = "UnrecognizedClientException"
    status = 403
    fault = "User"
    message_key = "message"
    query_code = "InvalidClientTokenId"


class InvalidSignatureException(LambdaError):
    """A signature that does not match, a malformed Authorization, or a request outside the
    clock-skew window ("Signature expired" / "Signature not yet current")."""

    code = "InvalidSignatureException"
    status = 403
    fault = "User"
    message_key = "message"
    query_code = "SignatureDoesNotMatch"


class ExpiredTokenException(LambdaError):
    """Temporary credentials past their expiry."""

    code = "ExpiredTokenException"
    status = 403
    fault = "User"
    message_key = "message"
    query_code = "ExpiredToken"


class AccessDeniedException(LambdaError):
    """Authenticated, but no policy allows the action (or one denies it)."""

    code = "AccessDeniedException"
    status = 403
    fault = "User"
    message_key = "Message"
    query_code = "AccessDenied"


ALL_ERRORS: tuple[type[LambdaError], ...] = (
    ServiceException,
    ResourceNotFoundException,
    ResourceConflictException,
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
    TooManyRequestsException,
    PreconditionFailedException,
    ValidationException,
    PolicyLengthExceededException,
    ProvisionedConcurrencyConfigNotFoundException,
    UnknownOperationException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
    InvalidSignatureException,
    ExpiredTokenException,
    AccessDeniedException,
)


# -- IAM and STS (query protocol) ---------------------------------------------------------------
# Codes and statuses as botocore's iam/sts models give them; `api/query.py` renders these (and
# the authentication errors above) as the query protocol's XML `ErrorResponse`.


class NoSuchEntity(LambdaError):
    code = "NoSuchEntity"
    status = 404
    fault = "User"


class EntityAlreadyExists(LambdaError):
    code = "EntityAlreadyExists"
    status = 409
    fault = "User"


class MalformedPolicyDocument(LambdaError):
    code = "MalformedPolicyDocument"
    status = 400
    fault = "User"


class LimitExceeded(LambdaError):
    code = "LimitExceeded"
    status = 409
    fault = "User"


class DeleteConflict(LambdaError):
    code = "DeleteConflict"
    status = 409
    fault = "User"


class InvalidInput(LambdaError):
    code = "InvalidInput"
    status = 400
    fault = "User"


class ValidationError(LambdaError):
    """A parameter breaks the model's constraints (the query protocol's ValidationException)."""

    code = "ValidationError"
    status = 400
    fault = "User"


class InvalidAction(LambdaError):
    """An Action the query endpoint does not know."""

    code = "InvalidAction"
    status = 400
    fault = "User"


class AccessDenied(LambdaError):
    """IAM's and STS's own spelling of an authorization failure (e.g. AssumeRole refused)."""

    code = "AccessDenied"
    status = 403
    fault = "User"


IAM_ERRORS: tuple[type[LambdaError], ...] = (
    NoSuchEntity,
    EntityAlreadyExists,
    MalformedPolicyDocument,
    LimitExceeded,
    DeleteConflict,
    InvalidInput,
    ValidationError,
    InvalidAction,
    AccessDenied,
)
