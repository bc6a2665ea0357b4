"""The ASGI application, built in one function: error handling, then routing.

Every AWS-compatible service is served on one endpoint; for now that is Lambda plus lamina's
own `/_lamina/*` routes. A request that matches no route is answered as AWS answers an unknown
operation, never with an HTML page.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from lamina.api import (
    account,
    concurrency,
    event_invoke,
    functions,
    iam,
    invocations,
    permissions,
    provisioned,
    query,
    streaming,
    sts,
    tags,
    versions,
)
from lamina.api.auth import AuthMiddleware
from lamina.api.render import error_response, handle_lambda_error, handle_unexpected
from lamina.errors import LambdaError, UnknownOperationException, ValidationException
from lamina.platform import Platform


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(
            ValidationException(f"Method {request.method} is not allowed on {request.url.path}")
        )
    return error_response(
        UnknownOperationException(f"No operation matches {request.method} {request.url.path}")
    )


def route_table() -> list[BaseRoute]:
    return [
        *invocations.routes,  # first: the router tries routes in order, Invoke is most of them
        *functions.routes,
        *versions.routes,
        *streaming.routes,
        *tags.routes,
        *event_invoke.routes,
        *account.routes,
        *concurrency.routes,
        *provisioned.routes,
        *permissions.routes,
        *query.routes(iam.SERVICE, sts.SERVICE),  # IAM, STS: POST / (query protocol)
    ]


def build_app(platform: Platform) -> Starlette:
    app = Starlette(
        routes=route_table(),
        exception_handlers={
            LambdaError: handle_lambda_error,
            HTTPException: _http_error,
            Exception: handle_unexpected,
        },
    )
    app.router.redirect_slashes = False
    app.state.platform = platform
    app.add_middleware(AuthMiddleware, platform=platform)
    return app
