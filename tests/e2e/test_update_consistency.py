"""Invokes during code and configuration updates never see a half-updated function (issue 4)."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.e2e.server import ROLE, invoke, make_zip, python_runtime

CODE = """
import os

def handler(event, context):
    return {"code": "%s", "env": os.environ["VAL"]}
"""

INVOKERS = 8


def _code(tag: str) -> bytes:
    return make_zip({"app.py": CODE % tag})


def test_invokes_during_updates_see_only_committed_states(lam: Any) -> None:
    name = "update-consistency"
    lam.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Handler="app.handler",
        Role=ROLE,
        Code={"ZipFile": _code("c0")},
        Environment={"Variables": {"VAL": "e0"}},
    )
    # Every update gives code or environment a value never used before, so that a mixed state
    # (new code with an environment it never ran with, or the reverse) is recognisable.
    committed: list[tuple[str, str]] = [("c0", "e0")]
    assert invoke(lam, name)["json"] == {"code": "c0", "env": "e0"}

    stop = threading.Event()
    seen: list[list[tuple[str, str]]] = [[] for _ in range(INVOKERS)]
    failures: list[str] = []

    def invoker(i: int) -> None:
        while not stop.is_set():
            try:
                out = invoke(lam, name)
            except Exception as exc:
                failures.append(f"raised {exc!r}")
                continue
            status = out["ResponseMetadata"]["HTTPStatusCode"]
            if status != 200 or "FunctionError" in out:
                failures.append(f"{status} {out.get('FunctionError')} {out['body']!r}")
                continue
            seen[i].append((out["json"]["code"], out["json"]["env"]))

    threads = [threading.Thread(target=invoker, args=(i,)) for i in range(INVOKERS)]
    for th in threads:
        th.start()
    try:
        deadline = time.monotonic() + 3.0
        step = 0
        while time.monotonic() < deadline:
            step += 1
            code, env = committed[-1]
            time.sleep(0.15)
            if step % 2:
                code = f"c{step}"
                out = lam.update_function_code(FunctionName=name, ZipFile=_code(code))
            else:
                env = f"e{step}"
                out = lam.update_function_configuration(
                    FunctionName=name, Environment={"Variables": {"VAL": env}}
                )
            assert out["LastUpdateStatus"] == "Successful"
            committed.append((code, env))
        time.sleep(0.15)
    finally:
        stop.set()
        for th in threads:
            th.join(30)

    assert not failures, failures[:10]
    assert len(committed) >= 6, committed
    valid = set(committed)
    order = {state: n for n, state in enumerate(committed)}
    total = sum(len(s) for s in seen)
    assert total > 100, f"only {total} invokes completed"
    for i, states in enumerate(seen):
        mixed = [s for s in states if s not in valid]
        assert not mixed, f"invoker {i} saw states never committed: {mixed[:5]}; {committed}"
        # an invoker's successive calls never go back to a state older than one it has seen
        indices = [order[s] for s in states]
        assert indices == sorted(indices), f"invoker {i} went back in time: {states}"
    observed = {s for states in seen for s in states}
    print(f"{total} invokes, {len(committed)} committed states, {len(observed)} observed")
    assert len(observed) >= len(committed) // 2, (observed, committed)  # the updates were seen
    # the last state committed is what every invoke sees once the updates stop
    assert invoke(lam, name)["json"] == {"code": committed[-1][0], "env": committed[-1][1]}
    lam.delete_function(FunctionName=name)
