"""Function resources: CreateFunction, GetFunction, ListFunctions, UpdateFunction*,
DeleteFunction, GetFunctionConfiguration, and the code download behind `Code.Location`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.access import PublicRoute, any_resource, function_in_body, guarded, pass_role
from lamina.api.render import json_response, page_response
from lamina.api.requests import base_url, int_query, path_param, read_json
from lamina.errors import ResourceNotFoundException
from lamina.platform import Platform


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


async def create_function(request: Request) -> Response:
    body = await read_json(request)
    return json_response(await _platform(request).functions.create(body), 201)


async def list_functions(request: Request) -> Response:
    marker = request.query_params.get("Marker")
    functions, next_marker = _platform(request).functions.page(
        marker, int_query(request, "MaxItems"), request.query_params.get("FunctionVersion")
    )
    return page_response("Functions", functions, next_marker)


async def get_function(request: Request) -> Response:
    platform = _platform(request)
    fns = platform.functions
    rec, q = fns.resolve(path_param(request, "name"), request.query_params.get("Qualifier"))
    out: dict[str, object] = {
        "Configuration": fns.configuration(rec, q),
        "Code": {
            "RepositoryType": "S3",
            "Location": platform.sign_code_url(base_url(request), rec.code_sha256_hex),
        },
    }
    if rec.tags:
        out["Tags"] = dict(rec.tags)
    concurrency = fns.get_concurrency(rec.name)
    if concurrency:
        out["Concurrency"] = concurrency
    return json_response(out)


async def get_configuration(request: Request) -> Response:
    fns = _platform(request).functions
    rec, q = fns.resolve(path_param(request, "name"), request.query_params.get("Qualifier"))
    return json_response(fns.configuration(rec, q))


async def update_configuration(request: Request) -> Response:
    body = await read_json(request)
    fns = _platform(request).functions
    return json_response(await fns.update_configuration(path_param(request, "name"), body))


async def update_code(request: Request) -> Response:
    body = await read_json(request)
    fns = _platform(request).functions
    return json_response(await fns.update_code(path_param(request, "name"), body))


async def delete_function(request: Request) -> Response:
    fns = _platform(request).functions
    await fns.delete(path_param(request, "name"), request.query_params.get("Qualifier"))
    return json_response(None, 204)


async def download_code(request: Request) -> Response:
    """The presigned URL GetFunction hands out: valid for 10 minutes, like S3's."""
    platform = _platform(request)
    sha = path_param(request, "sha")
    ok = platform.check_code_url(
        sha, request.query_params.get("expires", ""), request.query_params.get("signature", "")
    )
    gone = ResourceNotFoundException("The code location is unknown or its URL has expired")
    if not ok:
        raise gone
    try:  # the package may be collected (code replaced, function deleted) at any moment
        data = platform.code.read_zip(sha)
    except FileNotFoundError:
        raise gone from None
    return Response(data, 200, media_type="application/zip")


routes = [
    guarded(
        "/2015-03-31/functions",
        create_function,
        ["POST"],
        "lambda:CreateFunction",
        function_in_body,
        pass_role,
    ),
    guarded("/2015-03-31/functions", list_functions, ["GET"], "lambda:ListFunctions", any_resource),
    guarded(
        "/2015-03-31/functions/", list_functions, ["GET"], "lambda:ListFunctions", any_resource
    ),
    guarded("/2015-03-31/functions/{name}", get_function, ["GET"], "lambda:GetFunction"),
    guarded("/2015-03-31/functions/{name}", delete_function, ["DELETE"], "lambda:DeleteFunction"),
    guarded(
        "/2015-03-31/functions/{name}/configuration",
        get_configuration,
        ["GET"],
        "lambda:GetFunctionConfiguration",
    ),
    guarded(
        "/2015-03-31/functions/{name}/configuration",
        update_configuration,
        ["PUT"],
        "lambda:UpdateFunctionConfiguration",
        None,
        pass_role,
    ),
    guarded("/2015-03-31/functions/{name}/code", update_code, ["PUT"], "lambda:UpdateFunctionCode"),
    PublicRoute("/_lamina/code/{sha}", download_code, methods=["GET"]),
]
