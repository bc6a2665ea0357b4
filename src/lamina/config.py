"""Settings: one frozen object, built from defaults < `lamina.toml` < `LAMINA_*` env < flags.

Every setting is declared once in `SETTINGS` with its type, default and help text; the CLI builds
its `serve` flags from that table, so `lamina serve --help` documents all of them and a test
checks each is documented.

Nothing is ignored silently: an unknown key in `lamina.toml`, a value of the wrong type, a
`--config` file that does not exist or a runtime mapping lamina cannot honour is a ConfigError,
and `lamina serve` refuses to start with its message.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
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
        "explicit runtime mappings, e.g. 'python3.14=/usr/bin/python3.13' (comma-separated; "
        "in lamina.toml also a [runtimes] table); each must be an absolute path to a Python 3.9+",
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


class ConfigError(ValueError):
    """A setting lamina cannot use; `lamina serve` prints it and refuses to start."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 4850
    data_dir: str = "~/.lamina"
    account_id: str = "000000000000"
    region: str = "us-east-1"
    isolation: str = "namespaces"
    idle_timeout: float = 300.0
    runtimes: str = ""  # canonical form: "python3.12=/path/python3.12,python3.9=/other"
    log_level: str = "info"
    concurrency_limit: int = 1000
    scale_up_rate: int = 1000
    credentials_ttl: int = 21600
    auth: bool = True
    blanks: int = 4

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def runtime_overrides(self) -> dict[str, str]:
        """`runtimes` parsed: runtime id -> interpreter path."""
        return parse_runtimes(self.runtimes)


def parse_runtimes(value: object) -> dict[str, str]:
    """Runtime mappings in any form lamina accepts: the flag's / environment's string
    `python3.14=/usr/bin/python3.13, python3.9=/x/py` (comma-separated, spaces allowed), or, in
    lamina.toml, that string, a list of such strings, or a `[runtimes]` table. ConfigError for
    anything else (an entry without `=`, an empty side, a runtime mapped twice)."""
    items: list[tuple[str, object]] = []
    if isinstance(value, str):
        for entry in value.split(","):
            if not entry.strip():
                continue
            if "=" not in entry:
                raise ConfigError(
                    f"runtime mapping {entry.strip()!r} is not RUNTIME=/path/to/python"
                )
            key, _, path = entry.partition("=")
            items.append((key, path))
    elif isinstance(value, Mapping):
        items = list(_flatten(value))
    elif isinstance(value, list):
        return parse_runtimes(",".join(_string(v, "runtimes") for v in value))
    else:
        raise ConfigError(f"runtimes must be a string or a table, not {value!r}")
    out: dict[str, str] = {}
    for raw_key, raw_path in items:
        key = _string(raw_key, "runtimes").strip()
        path = str(Path(_string(raw_path, f"runtimes.{key}").strip()).expanduser())
        if not key or not path or path == ".":
            raise ConfigError(f"runtime mapping {key}={path} needs both a runtime and a path")
        if "," in path:
            raise ConfigError(f"runtimes.{key}: an interpreter path cannot contain ','")
        if key in out:
            raise ConfigError(f"runtime {key} is mapped twice ({out[key]} and {path})")
        out[key] = path
    return out


def _flatten(table: Mapping[str, object], prefix: str = "") -> list[tuple[str, object]]:
    """A `[runtimes]` table's entries. TOML reads an unquoted `python3.12 = "…"` as the nested
    table {"python3": {"12": "…"}}; the dotted name is put back together."""
    out: list[tuple[str, object]] = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, not {value!r}")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(setting: Setting, value: Any) -> Any:
    if setting.name == "runtimes":
        overrides = parse_runtimes(value)
        return ",".join(f"{k}={v}" for k, v in overrides.items())
    if isinstance(value, bool) and setting.type is not bool:
        pass  # true/false for a number or text: refused below
    elif setting.type is bool and isinstance(value, str):
        if value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif setting.type is bool and isinstance(value, bool):
        return value
    elif setting.type is float and isinstance(value, int | float | str):
        with contextlib.suppress(ValueError):
            return float(value)
    elif setting.type is int and isinstance(value, int | str):
        with contextlib.suppress(ValueError):
            return int(value)
    elif setting.type is str and isinstance(value, str):
        return value
    kind = {bool: "true or false", int: "an integer", float: "a number"}.get(setting.type, "text")
    raise ConfigError(f"must be {kind}, not {value!r}")


def load(flags: Mapping[str, Any] | None = None, config_file: str | None = None) -> Settings:
    """Build settings. `flags` holds only what was given on the command line (None = unset).

    ConfigError when anything given cannot be used as given (see the module docstring); the
    runtime mappings are checked against the interpreters they name.
    """
    values: dict[str, tuple[Any, str]] = {}  # name -> (value, where it came from)
    named = config_file or os.environ.get("LAMINA_CONFIG")
    path = Path(named or "lamina.toml")
    if named and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_file():
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        by_name = {s.name for s in SETTINGS}
        unknown = sorted(k for k in data if k not in by_name)
        if unknown:
            hint = "".join(
                f" (did you mean {k.replace('-', '_')}?)"
                for k in unknown
                if k.replace("-", "_") in by_name
            )
            raise ConfigError(
                f"unknown setting{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(k) for k in unknown)} in {path}{hint}; known settings: "
                f"{', '.join(s.name for s in SETTINGS)}"
            )
        values.update({k: (v, str(path)) for k, v in data.items()})
    for s in SETTINGS:
        env = os.environ.get(f"LAMINA_{s.name.upper()}")
        if env is not None:
            values[s.name] = (env, f"LAMINA_{s.name.upper()}")
    for key, value in (flags or {}).items():
        if value is not None:
            values[key] = (value, "--" + key.replace("_", "-"))
    by_setting = {s.name: s for s in SETTINGS}
    kwargs: dict[str, Any] = {}
    for key, (value, source) in values.items():
        try:
            kwargs[key] = _coerce(by_setting[key], value)
        except ConfigError as exc:
            raise ConfigError(f"{key} (from {source}): {exc}") from None
    settings = Settings(**kwargs)
    if settings.runtimes:
        from lamina.runtimes.registry import check_overrides

        try:
            check_overrides(settings.runtime_overrides())
        except ValueError as exc:
            raise ConfigError(f"runtimes (from {values['runtimes'][1]}): {exc}") from None
    return settings
