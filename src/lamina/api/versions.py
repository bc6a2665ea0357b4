"""Versions and aliases: PublishVersion, ListVersionsByFunction, and the alias operations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.access import guarded
from lamina.api.render import json_response, page_response
from lamina.api.requests import int_query, path_param, read_json
from lamina.control.versions import Versions
from lamina.platform import Platform


def _versions(request: Request) -> Versions:
    platform: Platform = request.app.state.platform
    return platform.functions.versions


async def publish_version(request: Request) -> Response:
    body = await read_json(request)
    return json_response(await _versions(request).publish(path_param(request, "name"), body), 201)


async def list_versions(request: Request) -> Response:
    versions, next_marker = _versions(request).page(
        path_param(request, "name"),
        request.query_params.get("Marker"),
        int_query(request, "MaxItems"),
    )
    return page_response("Versions", versions, next_marker)


async def create_alias(request: Request) -> Response:
    body = await read_json(request)
    out = await _versions(request).create_alias(path_param(request, "name"), body)
    return json_response(out, 201)


async def get_alias(request: Request) -> Response:
    out = _versions(request).get_alias(path_param(request, "name"), path_param(request, "alias"))
    return json_response(out)


async def update_alias(request: Request) -> Response:
    body = await read_json(request)
    out = await _versions(request).update_alias(
        path_param(request, "name"), path_param(request, "alias"), body
    )
    return json_response(out)


async def delete_alias(request: Request) -> Response:
    await _versions(request).delete_alias(path_param(request, "name"), path_param(request, "alias"))
    return json_response(None, 204)


async def list_aliases(request: Request) -> Response:
    aliases, next_marker = _versions(request).list_aliases(
        path_param(request, "name"),
        request.query_params.get("FunctionVersion"),
        request.query_params.get("Marker"),
        int_query(request, "MaxItems"),
    )
    return page_response("Aliases", aliases, next_marker)


routes = [
    guarded(
        "/2015-03-31/functions/{name}/versions", publish_version, ["POST"], "lambda:PublishVersion"
    ),
    guarded(
        "/2015-03-31/functions/{name}/versions",
        list_versions,
        ["GET"],
        "lambda:ListVersionsByFunction",
    ),
    guarded("/2015-03-31/functions/{name}/aliases", create_alias, ["POST"], "lambda:CreateAlias"),
    guarded("/2015-03-31/functions/{name}/aliases", list_aliases, ["GET"], "lambda:ListAliases"),
    guarded("/2015-03-31/functions/{name}/aliases/{alias}", get_alias, ["GET"], "lambda:GetAlias"),
    guarded(
        "/2015-03-31/functions/{name}/aliases/{alias}", update_alias, ["PUT"], "lambda:UpdateAlias"
    ),
    guarded(
        "/2015-03-31/functions/{name}/aliases/{alias}",
        delete_alias,
        ["DELETE"],
        "lambda:DeleteAlias",
    ),
]
