"""Settings: one frozen object, built from defaults < `lamina.toml` < `LAMINA_*` env < flags.

Every setting is declared once in `SETTINGS` with its type, default and help text; the CLI builds
its `serve` flags from that table, so `lamina serve --help` documents all of them and a test
checks each is documented.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "address to listen on"),
    Setting("port", int, 4850, "port to listen on (0 picks a free one)"),
    Setting("data_dir", str, "~/.lamina", "where metadata, code packages and logs are kept"),
    Setting("account_id", str, "000000000000", "the AWS account id used in ARNs"),
    Setting("region", str, "us-east-1", "the AWS region used in ARNs"),
    Setting(
        "isolation",
        str,
        "namespaces",
        "how instances are isolated: namespaces (zygote-forked sandboxes with their own "
        "namespaces, cgroup, root, uid and seccomp filter; needs root) or process (plain "
        "processes, no isolation)",
    ),
    Setting(
        "idle_timeout", float, 300.0, "seconds an idle instance is kept warm before it is reaped"
    ),
    Setting(
        "runtimes",
        str,
        "",
        "explicit runtime mappings, e.g. 'python3.14=/usr/bin/python3.13' (comma-separated)",
    ),
    Setting("log_level", str, "info", "server log level: debug, info, warning, error"),
    Setting(
        "concurrency_limit",
        int,
        1000,
        "the account's concurrent executions (reservations must leave 100 unreserved)",
    ),
    Setting("scale_up_rate", int, 1000, "new instances a function may start per 10 seconds"),
    Setting(
        "credentials_ttl",
        int,
        21600,
        "seconds an instance's execution-role credentials are valid; an instance gets no more "
        "work once half of that has passed (a new one, with new credentials, takes over)",
    ),
    Setting(
        "auth",
        bool,
        True,
        "require SigV4 signatures and IAM permissions on every request; --no-auth is for "
        "throwaway local use only (anyone who can connect can do anything)",
    ),
    Setting(
        "blanks",
        int,
        4,
        "sandboxes per runtime kept half-started ahead of cold starts (isolation namespaces)",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 4850
    data_dir: str = "~/.lamina"
    account_id: str = "000000000000"
    region: str = "us-east-1"
    isolation: str = "namespaces"
    idle_timeout: float = 300.0
    runtimes: str = ""
    log_level: str = "info"
    concurrency_limit: int = 1000
    scale_up_rate: int = 1000
    credentials_ttl: int = 21600
    auth: bool = True
    blanks: int = 4
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def runtime_overrides(self) -> dict[str, str]:
        """`runtimes` parsed: runtime id -> interpreter path."""
        out: dict[str, str] = {}
        for item in self.runtimes.split(","):
            if "=" in item:
                key, _, value = item.partition("=")
                out[key.strip()] = value.strip()
        return out


def _coerce(setting: Setting, value: Any) -> Any:
    if setting.type is bool and isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    return setting.type(value)


def load(flags: Mapping[str, Any] | None = None, config_file: str | None = None) -> Settings:
    """Build settings. `flags` holds only what was given on the command line (None = unset)."""
    values: dict[str, Any] = {}
    path = Path(config_file or os.environ.get("LAMINA_CONFIG", "lamina.toml"))
    if path.is_file():
        with path.open("rb") as fh:
            values.update(tomllib.load(fh))
    for s in SETTINGS:
        env = os.environ.get(f"LAMINA_{s.name.upper()}")
        if env is not None:
            values[s.name] = env
    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = value
    known = {f.name for f in fields(Settings)} - {"extra"}
    by_name = {s.name: s for s in SETTINGS}
    kwargs = {k: _coerce(by_name[k], v) for k, v in values.items() if k in known}
    extra = {k: v for k, v in values.items() if k not in known}
    return Settings(**kwargs, extra=extra)
