"""GetAccountSettings and lamina's own `/_lamina/health`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.access import PublicRoute, any_resource, guarded
from lamina.api.render import json_response
from lamina.platform import Platform

TOTAL_CODE_SIZE = 80530636800
CODE_SIZE_UNZIPPED = 262144000
CODE_SIZE_ZIPPED = 52428800


async def get_account_settings(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    concurrency = platform.invoker.concurrency
    return json_response(
        {
            "AccountLimit": {
                "TotalCodeSize": TOTAL_CODE_SIZE,
                "CodeSizeUnzipped": CODE_SIZE_UNZIPPED,
                "CodeSizeZipped": CODE_SIZE_ZIPPED,
                "ConcurrentExecutions": concurrency.limit,
                "UnreservedConcurrentExecutions": concurrency.unreserved(),
            },
            "AccountUsage": platform.functions.usage(),
        }
    )


async def health(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    return json_response(platform.health())


routes = [
    guarded(
        "/2016-08-19/account-settings",
        get_account_settings,
        ["GET"],
        "lambda:GetAccountSettings",
        any_resource,
    ),
    guarded(
        "/2016-08-19/account-settings/",
        get_account_settings,
        ["GET"],
        "lambda:GetAccountSettings",
        any_resource,
    ),
    PublicRoute("/_lamina/health", health, methods=["GET"]),
]
