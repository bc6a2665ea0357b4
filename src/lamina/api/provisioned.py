"""Provisioned concurrency: Put/Get/Delete/ListProvisionedConcurrencyConfig(s)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.access import guarded
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


def provisioned_action(request: Request) -> str:
    """GET with `?List=ALL` is ListProvisionedConcurrencyConfigs, a permission of its own."""
    if request.query_params.get("List") == "ALL":
        return "lambda:ListProvisionedConcurrencyConfigs"
    return "lambda:GetProvisionedConcurrencyConfig"


routes = [
    guarded(PATH, put_config, ["PUT"], "lambda:PutProvisionedConcurrencyConfig"),
    guarded(PATH, get_config, ["GET"], provisioned_action),
    guarded(PATH, delete_config, ["DELETE"], "lambda:DeleteProvisionedConcurrencyConfig"),
]
