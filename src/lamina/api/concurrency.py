"""Reserved concurrency: PutFunctionConcurrency, GetFunctionConcurrency,
DeleteFunctionConcurrency."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.access import guarded
from lamina.api.render import json_response
from lamina.api.requests import path_param, read_json
from lamina.platform import Platform


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


async def put_concurrency(request: Request) -> Response:
    body = await read_json(request)
    fns = _platform(request).functions
    return json_response(await fns.put_concurrency(path_param(request, "name"), body))


async def get_concurrency(request: Request) -> Response:
    return json_response(_platform(request).functions.get_concurrency(path_param(request, "name")))


async def delete_concurrency(request: Request) -> Response:
    await _platform(request).functions.delete_concurrency(path_param(request, "name"))
    return json_response(None, 204)


routes = [
    guarded(
        "/2017-10-31/functions/{name}/concurrency",
        put_concurrency,
        ["PUT"],
        "lambda:PutFunctionConcurrency",
    ),
    guarded(
        "/2017-10-31/functions/{name}/concurrency",
        delete_concurrency,
        ["DELETE"],
        "lambda:DeleteFunctionConcurrency",
    ),
    guarded(
        "/2019-09-30/functions/{name}/concurrency",
        get_concurrency,
        ["GET"],
        "lambda:GetFunctionConcurrency",
    ),
]
