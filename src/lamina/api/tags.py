"""TagResource, UntagResource, ListTags on function ARNs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.access import guarded, tagged_arn
from lamina.api.render import json_response
from lamina.api.requests import path_param, read_json
from lamina.errors import InvalidParameterValueException
from lamina.platform import Platform


def _fns(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


async def list_tags(request: Request) -> Response:
    tags = _fns(request).functions.list_tags(path_param(request, "arn"))
    return json_response({"Tags": tags})


async def tag_resource(request: Request) -> Response:
    body = await read_json(request)
    if "Tags" not in body:
        raise InvalidParameterValueException("Tags is required")
    _fns(request).functions.tag(path_param(request, "arn"), body["Tags"])
    return json_response(None, 204)


async def untag_resource(request: Request) -> Response:
    keys = request.query_params.getlist("tagKeys")
    if not keys:
        raise InvalidParameterValueException("tagKeys is required")
    _fns(request).functions.untag(path_param(request, "arn"), keys)
    return json_response(None, 204)


routes = [
    guarded("/2017-03-31/tags/{arn}", list_tags, ["GET"], "lambda:ListTags", tagged_arn),
    guarded("/2017-03-31/tags/{arn}", tag_resource, ["POST"], "lambda:TagResource", tagged_arn),
    guarded(
        "/2017-03-31/tags/{arn}", untag_resource, ["DELETE"], "lambda:UntagResource", tagged_arn
    ),
]
