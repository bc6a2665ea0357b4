"""The runtime registry in process: which interpreter a runtime resolves to (operator mapping,
lamina's own interpreter, PATH, pyenv, /usr), what is refused and in which words, where the SDK
comes from, and the checks `lamina serve` runs on operator mappings before it starts."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from lamina.errors import InvalidParameterValueException
from lamina.runtimes.registry import (
    BOOTSTRAP,
    PROVIDED_RUNTIMES,
    PYTHON_RUNTIMES,
    RuntimeRegistry,
    check_interpreter,
    check_overrides,
    sdk_min_minor,
    sdk_path,
)

OWN = f"python{sys.version_info.major}.{sys.version_info.minor}"


def only_own_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Nothing on PATH and an empty pyenv: the registry finds lamina's own interpreter, and
    whatever /usr/bin or /usr/local/bin hold (returned: the fake pyenv root)."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    pyenv = tmp_path / "pyenv"
    (pyenv / "versions").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("PYENV_ROOT", str(pyenv))
    return pyenv


def absent_runtime() -> str:
    """A python3.X that is not lamina's own and has no interpreter in /usr/bin or /usr/local/bin."""
    for name in reversed(PYTHON_RUNTIMES):
        places = [Path(d) / name for d in ("/usr/bin", "/usr/local/bin")]
        if name != OWN and not any(p.exists() for p in places):
            return name
    raise AssertionError("every python3.X lamina knows is in /usr/bin or /usr/local/bin")


def link(path: Path, target: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


# -- resolution -----------------------------------------------------------------------------------


def test_own_version_resolves_to_lamina_s_interpreter() -> None:
    spec = RuntimeRegistry().resolve(OWN)
    assert (spec.name, spec.kind, spec.interpreter) == (OWN, "python", sys.executable)
    assert spec.argv(Path("/var/task")) == [sys.executable, "-I", "-S", str(BOOTSTRAP)]
    assert BOOTSTRAP.is_file()


@pytest.mark.parametrize("name", PROVIDED_RUNTIMES)
def test_custom_runtimes_run_the_package_bootstrap(name: str, tmp_path: Path) -> None:
    spec = RuntimeRegistry().resolve(name)
    assert (spec.kind, spec.interpreter, spec.sdk_path) == ("provided", None, None)
    assert spec.argv(tmp_path) == [str(tmp_path / "bootstrap")]


def test_an_unknown_runtime_gets_aws_s_enum_error() -> None:
    with pytest.raises(InvalidParameterValueException) as info:
        RuntimeRegistry().resolve("python2.7")
    message = info.value.message
    assert message.startswith(
        "Value 'python2.7' at 'runtime' failed to satisfy constraint: Member must satisfy enum "
        "value set: [python3.9, python3.10,"
    )
    assert message.endswith("ruby3.4] or be a valid ARN")


def test_a_missing_runtime_names_what_is_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    only_own_python(monkeypatch, tmp_path)
    registry = RuntimeRegistry()
    installed = registry.available()
    assert OWN in installed and installed[-3:] == list(PROVIDED_RUNTIMES)
    for name in (absent_runtime(), "nodejs20.x", "java21"):  # an AWS runtime lamina lacks
        with pytest.raises(InvalidParameterValueException) as info:
            registry.resolve(name)
        assert info.value.message == (
            f"The runtime parameter of {name} is not available on this lamina server. "
            f"Installed runtimes: {', '.join(installed)}. An operator can map one explicitly "
            f"with --runtimes {name}=/path/to/interpreter."
        )


def test_pythons_are_found_on_path_then_pyenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pyenv = only_own_python(monkeypatch, tmp_path)
    name = absent_runtime()
    version = name.removeprefix("python")
    # pyenv: the newest patch release wins; shims (which need pyenv itself) are skipped
    older = link(pyenv / "versions" / f"{version}.1" / "bin" / name, sys.executable)
    newer = link(pyenv / "versions" / f"{version}.10" / "bin" / name, sys.executable)
    shims = link(pyenv / "shims" / name, sys.executable)
    monkeypatch.setenv("PATH", f"{shims.parent}{os.pathsep}{tmp_path / 'empty-path'}")
    assert older.exists()
    assert RuntimeRegistry().resolve(name).interpreter == str(newer)
    assert name in RuntimeRegistry().available()
    # a PATH entry comes first
    on_path = link(tmp_path / "bin" / name, sys.executable)
    monkeypatch.setenv("PATH", f"{shims.parent}{os.pathsep}{on_path.parent}")
    assert RuntimeRegistry().resolve(name).interpreter == str(on_path)


def test_an_operator_mapping_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    only_own_python(monkeypatch, tmp_path)
    name = absent_runtime()
    mapped = link(tmp_path / "interp" / "python", sys.executable)
    registry = RuntimeRegistry({name: str(mapped), OWN: str(mapped)})
    assert registry.resolve(name).interpreter == str(mapped)
    assert registry.resolve(OWN).interpreter == str(mapped)  # even over lamina's own
    assert name in registry.available()
    assert RuntimeRegistry().interpreter_for(name) is None  # only through the mapping


def test_a_mapping_to_a_vanished_interpreter_says_so(tmp_path: Path) -> None:
    gone = str(tmp_path / "python3.12")
    registry = RuntimeRegistry({"python3.12": gone})
    with pytest.raises(InvalidParameterValueException) as info:
        registry.resolve("python3.12")
    assert info.value.message == (
        f"The runtime parameter of python3.12 is not available on this lamina server: it is "
        f"mapped to {gone}, which is not an executable file."
    )
    assert "python3.12" not in registry.available()


# -- the SDK --------------------------------------------------------------------------------------


def test_sdk_min_minor_is_what_every_sdk_package_admits() -> None:
    minimum = sdk_min_minor()
    specs = {
        dist: SpecifierSet(importlib.metadata.metadata(dist)["Requires-Python"] or "")
        for dist in ("boto3", "botocore", "s3transfer", "urllib3")
    }
    assert all(f"3.{minimum}.0" in spec for spec in specs.values()), specs
    assert not all(f"3.{minimum - 1}.99" in spec for spec in specs.values()), specs


def test_runtimes_below_the_sdk_minimum_get_no_sdk(tmp_path: Path) -> None:
    sdk = sdk_path(tmp_path / "runtime")
    minimum = sdk_min_minor()
    overrides = {name: sys.executable for name in PYTHON_RUNTIMES}
    registry = RuntimeRegistry(overrides, sdk)
    for name in PYTHON_RUNTIMES:
        spec = registry.resolve(name)
        minor = int(name.removeprefix("python3."))
        assert spec.sdk_path == (sdk if minor >= minimum else None), name
        assert (str(sdk) in spec.ro_binds) == (minor >= minimum), name


def test_sdk_path_links_lamina_s_own_packages(tmp_path: Path) -> None:
    import boto3
    import botocore

    sdk = sdk_path(tmp_path / "runtime")
    assert (sdk / "boto3").resolve() == Path(boto3.__file__).parent.resolve()
    assert (sdk / "botocore").resolve() == Path(botocore.__file__).parent.resolve()
    assert {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil"} <= {
        p.name for p in sdk.iterdir()
    }
    assert sdk_path(tmp_path / "runtime") == sdk  # idempotent


# -- checks on operator mappings (before `lamina serve` starts) -----------------------------------


def test_check_interpreter_reports_the_version() -> None:
    assert check_interpreter(sys.executable) == tuple(sys.version_info[:2])


def test_check_interpreter_refuses_what_is_not_a_usable_python(tmp_path: Path) -> None:
    script = tmp_path / "talks"
    script.write_text("#!/bin/sh\necho 'Python 3.12.1'\n")
    script.chmod(0o755)
    old = tmp_path / "old"
    old.write_text("#!/bin/sh\necho 2 7\n")
    old.chmod(0o755)
    plain = tmp_path / "plain"
    plain.write_text("not executable")
    cases = {
        "python3": "'python3' is not an absolute path",
        str(tmp_path / "nope"): f"{tmp_path / 'nope'} does not exist",
        str(tmp_path): f"{tmp_path} is not an executable file",
        str(plain): f"{plain} is not an executable file",
        str(script): f"{script} is not a Python interpreter (Python 3.12.1)",
        str(old): f"{old} is Python 2.7; lamina's Python runtimes need Python 3.9 or newer",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError) as info:
            check_interpreter(path)
        assert str(info.value) == message


def test_check_overrides_names_the_bad_mapping(tmp_path: Path) -> None:
    check_overrides({"python3.14": sys.executable, "python3.9": sys.executable})
    gone = str(tmp_path / "gone")
    cases = {
        ("python3.12", gone): f"python3.12={gone}: {gone} does not exist",
        ("nodejs20.x", sys.executable): "'nodejs20.x' is not a runtime lamina can map to an "
        f"interpreter (one of {', '.join(PYTHON_RUNTIMES)})",
        ("provided", sys.executable): "provided: a custom runtime runs the package's own "
        "bootstrap; it has no interpreter to map",
    }
    for (name, path), message in cases.items():
        with pytest.raises(ValueError) as info:
            check_overrides({"python3.11": sys.executable, name: path})
        assert str(info.value) == message
