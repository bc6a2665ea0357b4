from __future__ import annotations

from pathlib import Path

import pytest

from lamina import config
from lamina.cli import build_parser


def test_every_setting_is_a_documented_serve_flag() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    help_text = serve.format_help()
    for s in config.SETTINGS:
        flag = "--" + s.name.replace("_", "-")
        assert flag in help_text, flag
        assert f"LAMINA_{s.name.upper()}" in help_text


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for s in config.SETTINGS:
        assert f"`LAMINA_{s.name.upper()}`" in readme, s.name


def test_precedence_flags_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "lamina.toml"
    toml.write_text('port = 1111\nregion = "eu-west-1"\nidle_timeout = 9\n')
    monkeypatch.setenv("LAMINA_PORT", "2222")
    settings = config.load({"port": None}, str(toml))
    assert (settings.port, settings.region, settings.idle_timeout) == (2222, "eu-west-1", 9.0)
    assert config.load({"port": 3333}, str(toml)).port == 3333


def test_runtime_overrides_parse() -> None:
    s = config.Settings(runtimes="python3.14=/usr/bin/python3.13, python3.9=/x/py")
    assert s.runtime_overrides() == {"python3.14": "/usr/bin/python3.13", "python3.9": "/x/py"}
