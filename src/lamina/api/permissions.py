"""Function resource-based policies: AddPermission, GetPolicy, RemovePermission."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.access import guarded
from lamina.api.render import json_response
from lamina.api.requests import path_param, qualifier, read_json
from lamina.control.permissions import Permissions
from lamina.platform import Platform

PATH = "/2015-03-31/functions/{name}/policy"


def _permissions(request: Request) -> Permissions:
    platform: Platform = request.app.state.platform
    return platform.permissions


async def add_permission(request: Request) -> Response:
    body = await read_json(request)
    out = await _permissions(request).add(path_param(request, "name"), qualifier(request), body)
    return json_response(out, 201)


async def get_policy(request: Request) -> Response:
    return json_response(_permissions(request).get(path_param(request, "name"), qualifier(request)))


async def remove_permission(request: Request) -> Response:
    await _permissions(request).remove(
        path_param(request, "name"),
        qualifier(request),
        path_param(request, "sid"),
        request.query_params.get("RevisionId"),
    )
    return json_response(None, 204)


routes = [
    guarded(PATH, add_permission, ["POST"], "lambda:AddPermission"),
    guarded(PATH, get_policy, ["GET"], "lambda:GetPolicy"),
    guarded(PATH + "/{sid}", remove_permission, ["DELETE"], "lambda:RemovePermission"),
]
