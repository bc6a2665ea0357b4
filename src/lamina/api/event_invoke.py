"""Put/Update/Get/Delete/ListFunctionEventInvokeConfigs (async retries and destinations)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.access import guarded
from lamina.api.render import json_response, page_response
from lamina.api.requests import int_query, path_param, qualifier, read_json
from lamina.control.event_invoke import EventInvokeConfigs
from lamina.platform import Platform

PATH = "/2019-09-25/functions/{name}/event-invoke-config"


def _configs(request: Request) -> EventInvokeConfigs:
    platform: Platform = request.app.state.platform
    return platform.event_configs


async def put_config(request: Request) -> Response:
    body = await read_json(request)
    out = _configs(request).put(path_param(request, "name"), qualifier(request), body)
    return json_response(out)


async def update_config(request: Request) -> Response:
    body = await read_json(request)
    out = _configs(request).update(path_param(request, "name"), qualifier(request), body)
    return json_response(out)


async def get_config(request: Request) -> Response:
    return json_response(_configs(request).get(path_param(request, "name"), qualifier(request)))


async def delete_config(request: Request) -> Response:
    _configs(request).delete(path_param(request, "name"), qualifier(request))
    return json_response(None, 204)


async def list_configs(request: Request) -> Response:
    configs, next_marker = _configs(request).list(
        path_param(request, "name"),
        request.query_params.get("Marker"),
        int_query(request, "MaxItems"),
    )
    return page_response("FunctionEventInvokeConfigs", configs, next_marker)


routes = [
    guarded(PATH, put_config, ["PUT"], "lambda:PutFunctionEventInvokeConfig"),
    guarded(PATH, update_config, ["POST"], "lambda:UpdateFunctionEventInvokeConfig"),
    guarded(PATH, get_config, ["GET"], "lambda:GetFunctionEventInvokeConfig"),
    guarded(PATH, delete_config, ["DELETE"], "lambda:DeleteFunctionEventInvokeConfig"),
    guarded(PATH + "/list", list_configs, ["GET"], "lambda:ListFunctionEventInvokeConfigs"),
]
