"""Provisioned concurrency: Put/Get/Delete/ListProvisionedConcurrencyConfig(s)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lamina.api.render import json_response
from lamina.api.requests import path_param, read_json
from lamina.platform import Platform
from lamina.worker.provisioned import Provisioned

PATH = "/2019-09-30/functions/{name}/provisioned-concurrency"


def _provisioned(request: Request) -> Provisioned:
    platform: Platform = request.app.state.platform
    return platform.provisioned


async def put_config(request: Request) -> Response:
    body = await read_json(request)
    qualifier = request.query_params.get("Qualifier")
    out = _provisioned(request).put(path_param(request, "name"), qualifier, body)
    return json_response(out, 202)


async def get_config(request: Request) -> Response:
    prov = _provisioned(request)
    name = path_param(request, "name")
    if request.query_params.get("List") == "ALL":
        return json_response(prov.list(name))
    return json_response(prov.get(name, request.query_params.get("Qualifier")))


async def delete_config(request: Request) -> Response:
    qualifier = request.query_params.get("Qualifier")
    _provisioned(request).delete(path_param(request, "name"), qualifier)
    return json_response(None, 204)


routes = [
    Route(PATH, put_config, methods=["PUT"]),
    Route(PATH, get_config, methods=["GET"]),
    Route(PATH, delete_config, methods=["DELETE"]),
]
