"""What lamina stores survives a clean restart — functions, their configuration, their code —
and an upgrade of its schema from the oldest migration to head."""

from __future__ import annotations

import json
import signal
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import lamina.store.metadata
from lamina.store.code import CodeStore
from tests.e2e.server import ROLE, Server, create, make_zip, python_runtime, raw

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


def migrations_config(connection: Any = None) -> Config:
    cfg = Config()
    migrations = Path(lamina.store.metadata.__file__).parent / "migrations"
    cfg.set_main_option("script_location", str(migrations))
    cfg.attributes["connection"] = connection
    return cfg


OLD_CODE = (
    "import os\n"
    "def handler(event, context):\n"
    "    version = context.function_version\n"
    "    return {'color': os.environ['COLOR'], 'event': event, 'version': version}\n"
)


def test_upgrade_from_the_oldest_revision_keeps_functions(fresh_server: Server) -> None:
    """A data dir made by the first lamina (schema at the oldest alembic revision, a function in
    it as that lamina stored it) is upgraded to head at start, and the function is served."""
    data_dir = fresh_server.data_dir
    data_dir.mkdir(parents=True)
    oldest = ScriptDirectory.from_config(migrations_config()).get_base()
    assert oldest == "0001"
    engine = sqlalchemy.create_engine(f"sqlite:///{data_dir / 'lamina.db'}")
    with engine.begin() as conn:
        command.upgrade(migrations_config(conn), oldest)
    engine.dispose()

    package = make_zip({"app.py": OLD_CODE})
    stored = CodeStore(data_dir / "code").put(package)
    config = {  # the $LATEST configuration as revision 0001's lamina wrote it
        "Timeout": 7,
        "MemorySize": 192,
        "Description": "made before versions existed",
        "Architectures": ["x86_64"],
        "Runtime": python_runtime(),
        "Handler": "app.handler",
        "Role": ROLE,
        "Environment": {"COLOR": "amber"},
        "CodeSha256": stored.code_sha256,
        "CodeSize": stored.size,
        "LastModified": "2026-01-02T03:04:05.000+0000",
    }
    revision = "8f2a4c1e-0b7d-4e59-9a36-2d1c5e7f9b10"
    with closing(sqlite3.connect(data_dir / "lamina.db")) as db, db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"alembic_version", "functions", "function_versions"}
        db.execute(
            "INSERT INTO functions (name, created, tags) VALUES (?, ?, ?)",
            ("from-0001", 1767323045.0, json.dumps({"era": "0001"})),
        )
        db.execute(
            "INSERT INTO function_versions (name, version, config, code_sha256_hex, revision_id)"
            " VALUES (?, ?, ?, ?, ?)",
            ("from-0001", "$LATEST", json.dumps(config), stored.sha256_hex, revision),
        )

    fresh_server.start()
    lam = fresh_server.client()
    try:
        with closing(sqlite3.connect(data_dir / "lamina.db")) as db:
            versions = [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]
        assert versions == [alembic_head()]
        assert [f["FunctionName"] for f in lam.list_functions()["Functions"]] == ["from-0001"]
        got = lam.get_function(FunctionName="from-0001")
        conf = got["Configuration"]
        for key in ("Timeout", "MemorySize", "Description", "Runtime", "Handler", "Role"):
            assert conf[key] == config[key], key
        assert (conf["CodeSha256"], conf["CodeSize"]) == (stored.code_sha256, stored.size)
        assert (conf["RevisionId"], conf["LastModified"]) == (revision, config["LastModified"])
        assert conf["Environment"] == {"Variables": {"COLOR": "amber"}}
        assert got["Tags"] == {"era": "0001"}
        status, _headers, body = raw(got["Code"]["Location"])
        assert (status, body) == (200, package)

        out = lam.invoke(FunctionName="from-0001", Payload=b'{"n": 1}')
        assert "FunctionError" not in out
        expected = {"color": "amber", "event": {"n": 1}, "version": "$LATEST"}
        assert json.loads(out["Payload"].read()) == expected
        # what later revisions added works on the upgraded function
        assert lam.publish_version(FunctionName="from-0001")["Version"] == "1"  # 0002
        lam.create_alias(FunctionName="from-0001", Name="live", FunctionVersion="1")  # 0002
        out = lam.invoke(FunctionName="from-0001", Qualifier="live", Payload=b"{}")
        assert json.loads(out["Payload"].read())["version"] == "1"
        lam.put_function_event_invoke_config(  # 0003
            FunctionName="from-0001", MaximumRetryAttempts=0
        )
        lam.add_permission(  # 0005
            FunctionName="from-0001",
            StatementId="events",
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
        )
        assert lam.get_account_settings()["AccountUsage"]["FunctionCount"] == 1
    finally:
        lam.close()
    stop_cleanly(fresh_server)
