from __future__ import annotations

import json
from typing import Any

from tests.e2e.server import create


def test_create_and_invoke(lam: Any) -> None:
    create(lam, "smoke", "def handler(event, context):\n    return {'got': event}\n")
    out = lam.invoke(FunctionName="smoke", Payload=b'{"a": 1}')
    assert out["StatusCode"] == 200
    assert json.loads(out["Payload"].read()) == {"got": {"a": 1}}
