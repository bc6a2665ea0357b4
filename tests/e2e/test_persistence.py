"""What lamina stores survives a clean restart: functions, their configuration, their code."""

from __future__ import annotations

import json
import signal
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory

import lamina.store.metadata
from tests.e2e.server import Server, create

PLAIN = "def handler(event, context):\n    return {'plain': event}\n"
ENVY = (
    "import os\n"
    "def handler(event, context):\n"
    "    return {'color': os.environ['COLOR'], 'name': context.function_name}\n"
)
KEPT = [
    "CodeSha256",
    "CodeSize",
    "RevisionId",
    "LastModified",
    "Runtime",
    "Handler",
    "MemorySize",
    "Timeout",
    "Description",
    "FunctionArn",
]


def alembic_head() -> str:
    cfg = Config()
    migrations = Path(lamina.store.metadata.__file__).parent / "migrations"
    cfg.set_main_option("script_location", str(migrations))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def snapshot(lam: Any, names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        got = lam.get_function(FunctionName=name)
        config = got["Configuration"]
        out[name] = {
            **{key: config[key] for key in KEPT},
            "Environment": config.get("Environment"),
            "Tags": got.get("Tags"),
        }
    return out


def stop_cleanly(server: Server) -> None:
    """SIGTERM: lamina drains, exits 0 (a supervisor reads anything else as a crash), and its
    log shows an orderly shutdown."""
    code = server.stop(signal.SIGTERM)
    log = server.log
    assert code == 0, log
    for bad in ("Traceback", " ERROR ", "CRITICAL", "Exception"):
        assert bad not in log, log
    assert "Application shutdown complete" in log, log


def test_functions_survive_restart(fresh_server: Server) -> None:
    names = ["persist-plain", "persist-envy"]
    fresh_server.start()
    lam = fresh_server.client()
    try:
        create(lam, names[0], PLAIN)
        create(
            lam,
            names[1],
            ENVY,
            Environment={"Variables": {"COLOR": "green", "SHAPE": "round"}},
            Tags={"team": "core", "tier": "gold"},
            MemorySize=256,
            Timeout=30,
            Description="has env and tags",
        )
        lam.update_function_configuration(FunctionName=names[0], Description="updated once")
        before = snapshot(lam, names)
        out = lam.invoke(FunctionName=names[1], Payload=b"{}")  # a live instance at SIGTERM
        assert json.loads(out["Payload"].read())["color"] == "green"
    finally:
        lam.close()

    stop_cleanly(fresh_server)
    data_dir = fresh_server.data_dir
    with closing(sqlite3.connect(data_dir / "lamina.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]
    assert versions == [alembic_head()]

    fresh_server.output.clear()
    fresh_server.url = ""
    fresh_server.start()
    lam = fresh_server.client()
    try:
        listed = sorted(f["FunctionName"] for f in lam.list_functions()["Functions"])
        assert listed == sorted(names)
        after = snapshot(lam, names)
        assert after == before
        assert after["persist-envy"]["Environment"] == {
            "Variables": {"COLOR": "green", "SHAPE": "round"}
        }
        assert after["persist-envy"]["Tags"] == {"team": "core", "tier": "gold"}
        assert after["persist-plain"]["Description"] == "updated once"
        arn = after["persist-envy"]["FunctionArn"]
        assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", "tier": "gold"}

        out = lam.invoke(FunctionName=names[1], Payload=b"{}")
        assert json.loads(out["Payload"].read()) == {"color": "green", "name": names[1]}
        out = lam.invoke(FunctionName=names[0], Payload=b'{"k": 1}')
        assert json.loads(out["Payload"].read()) == {"plain": {"k": 1}}
        usage = lam.get_account_settings()["AccountUsage"]
        assert usage["FunctionCount"] == 2
    finally:
        lam.close()
    stop_cleanly(fresh_server)
