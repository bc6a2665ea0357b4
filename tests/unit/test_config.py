from __future__ import annotations

import os
import sys
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


# -- runtime mappings in every form; nothing ignored silently -------------------------------------

OWN = sys.executable  # a real Python 3.9+ interpreter, at an absolute path


def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LAMINA_* from the caller's environment, and no ./lamina.toml."""
    for key in list(os.environ):
        if key.startswith("LAMINA_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "body",
    [
        f'[runtimes]\npython3.14 = "{OWN}"\n"python3.9" = "{OWN}"\n',  # bare dotted and quoted
        f'runtimes = {{ "python3.14" = "{OWN}", "python3.9" = "{OWN}" }}\n',
        f'runtimes = "python3.14={OWN}, python3.9={OWN}"\n',
        f'runtimes = ["python3.14={OWN}", "python3.9={OWN}"]\n',
    ],
    ids=["table", "inline-table", "string", "list"],
)
def test_runtimes_from_the_file_in_every_form(
    body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated(monkeypatch, tmp_path)
    toml = tmp_path / "lamina.toml"
    toml.write_text(body)
    settings = config.load({}, str(toml))
    assert settings.runtime_overrides() == {"python3.14": OWN, "python3.9": OWN}
    # the default ./lamina.toml is read the same way
    assert config.load({}).runtime_overrides() == {"python3.14": OWN, "python3.9": OWN}


def test_runtimes_from_the_environment_and_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated(monkeypatch, tmp_path)
    (tmp_path / "lamina.toml").write_text(f'[runtimes]\npython3.13 = "{OWN}"\n')
    monkeypatch.setenv("LAMINA_RUNTIMES", f" python3.12 = {OWN} ,")
    assert config.load({}).runtime_overrides() == {"python3.12": OWN}  # env over file
    flags = {"runtimes": f"python3.10={OWN}"}
    assert config.load(flags).runtime_overrides() == {"python3.10": OWN}  # flag over env


def test_home_in_a_mapping_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolated(monkeypatch, tmp_path)
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "py").symlink_to(OWN)
    monkeypatch.setenv("HOME", str(home))
    settings = config.load({"runtimes": "python3.14=~/bin/py"})
    assert settings.runtime_overrides() == {"python3.14": str(home / "bin" / "py")}


def refused(**flags: str) -> str:
    with pytest.raises(config.ConfigError) as info:
        config.load(flags, None)
    return str(info.value)


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        ("python3.12=/no/such/python", ["--runtimes", "python3.12", "/no/such/python", "exist"]),
        ("python3.12=bin/python3", ["python3.12", "'bin/python3' is not an absolute path"]),
        ("python3.12=/tmp", ["python3.12", "/tmp is not an executable file"]),
        ("python3.12=/bin/true", ["python3.12", "/bin/true is not a Python interpreter"]),
        ("python3.12", ["'python3.12' is not RUNTIME=/path/to/python"]),
        ("=/usr/bin/python3", ["needs both a runtime and a path"]),
        (f"python3.12={OWN},python3.12={OWN}", ["python3.12 is mapped twice"]),
        (f"nodejs20.x={OWN}", ["'nodejs20.x' is not a runtime lamina can map", "python3.14"]),
        (f"provided.al2023={OWN}", ["provided.al2023", "package's own bootstrap"]),
        (f"python3.99={OWN}", ["'python3.99' is not a runtime lamina can map"]),
    ],
)
def test_a_bad_mapping_is_refused_naming_it(
    mapping: str, words: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated(monkeypatch, tmp_path)
    message = refused(runtimes=mapping)
    assert message.startswith("runtimes (from --runtimes): "), message
    for word in words:
        assert word in message, message


def test_an_old_python_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An executable that answers lamina's version probe as Python 3.8 does."""
    isolated(monkeypatch, tmp_path)
    old = tmp_path / "python3.8"
    old.write_text("#!/bin/sh\necho 3 8\n")
    old.chmod(0o755)
    monkeypatch.setenv("LAMINA_RUNTIMES", f"python3.9={old}")
    message = refused()
    assert message == (
        f"runtimes (from LAMINA_RUNTIMES): python3.9={old}: {old} is Python 3.8; lamina's Python "
        "runtimes need Python 3.9 or newer"
    )


def test_a_mapping_in_the_file_is_refused_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated(monkeypatch, tmp_path)
    (tmp_path / "lamina.toml").write_text('[runtimes]\npython3.11 = "/opt/none/python3.11"\n')
    message = refused()
    assert message.startswith("runtimes (from lamina.toml): python3.11=/opt/none/python3.11:")
    (tmp_path / "lamina.toml").write_text("[runtimes]\npython3.11 = 311\n")
    assert "runtimes.python3.11 must be a string, not 311" in refused()


def test_unknown_keys_in_the_file_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated(monkeypatch, tmp_path)
    toml = tmp_path / "lamina.toml"
    toml.write_text('prot = 4851\ndata-dir = "/srv/lamina"\n')
    message = refused()
    assert message.startswith("unknown settings 'data-dir', 'prot' in lamina.toml"), message
    assert "(did you mean data_dir?)" in message
    assert "known settings: host, port, data_dir" in message


def test_values_of_the_wrong_type_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated(monkeypatch, tmp_path)
    monkeypatch.setenv("LAMINA_PORT", "http")
    assert refused() == "port (from LAMINA_PORT): must be an integer, not 'http'"
    monkeypatch.delenv("LAMINA_PORT")
    monkeypatch.setenv("LAMINA_AUTH", "maybe")
    assert refused() == "auth (from LAMINA_AUTH): must be true or false, not 'maybe'"
    monkeypatch.delenv("LAMINA_AUTH")
    (tmp_path / "lamina.toml").write_text("host = 127\nport = true\n")
    assert refused() == "host (from lamina.toml): must be text, not 127"
    (tmp_path / "lamina.toml").write_text("[port]\nvalue = 1\n")
    assert refused().startswith("port (from lamina.toml): must be an integer, not {")
    (tmp_path / "lamina.toml").write_text("port = \n")
    assert refused().startswith("cannot read lamina.toml: ")


def test_a_named_config_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolated(monkeypatch, tmp_path)
    assert config.load({}).port == 4850  # no ./lamina.toml: the defaults
    with pytest.raises(config.ConfigError, match=r"config file .*/gone\.toml does not exist"):
        config.load({}, str(tmp_path / "gone.toml"))
    monkeypatch.setenv("LAMINA_CONFIG", str(tmp_path / "also-gone.toml"))
    with pytest.raises(config.ConfigError, match=r"also-gone\.toml does not exist"):
        config.load({})
