"""The runtime registry: a Lambda runtime identifier -> how to start an instance of it.

`python3.9` … `python3.14` resolve to a local interpreter of that version: an explicit operator
mapping (`--runtimes python3.14=/path/python`) first, then the interpreter lamina itself runs
on when the version matches, then interpreters found on the machine. A runtime that is not
available is an InvalidParameterValueException naming what is installed, never a silent
substitute. `provided`, `provided.al2` and `provided.al2023` run the package's own `bootstrap`.

Operator mappings are checked before lamina starts (`check_overrides`): each must name a Python
runtime and an executable Python 3.9+ interpreter, else `lamina serve` refuses to start.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lamina.errors import InvalidParameterValueException

PYTHON_RUNTIMES = tuple(f"python3.{minor}" for minor in range(9, 15))
PROVIDED_RUNTIMES = ("provided", "provided.al2", "provided.al2023")
# What AWS accepts as Runtime, so an unknown name gets AWS's enum error.
AWS_RUNTIMES = (
    *PYTHON_RUNTIMES,
    *PROVIDED_RUNTIMES,
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "java11",
    "java17",
    "java21",
    "java25",
    "dotnet8",
    "dotnet10",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
)

BOOTSTRAP = Path(__file__).parent / "python" / "bootstrap.py"
# Pure-Python distributions that make `import boto3` work in every Python runtime, as on AWS.
_SDK_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "urllib3", "dateutil", "six")


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """How to start one runtime: `argv` is run with cwd = the task root."""

    name: str
    kind: str  # "python" | "provided"
    interpreter: str | None
    sdk_path: Path | None = None  # where `import boto3` comes from, when this runtime can use it
    ro_binds: tuple[str, ...] = ()  # host paths a confined instance needs, at the same path

    def argv(self, task_root: Path) -> list[str]:
        if self.kind == "python":
            assert self.interpreter is not None
            return [self.interpreter, "-I", "-S", str(BOOTSTRAP)]
        return [str(task_root / "bootstrap")]


class RuntimeRegistry:
    def __init__(self, overrides: dict[str, str] | None = None, sdk: Path | None = None) -> None:
        self._overrides = overrides or {}
        self._found: dict[str, str | None] = {}
        self._specs: dict[str, RuntimeSpec] = {}
        self._sdk = sdk
        self._sdk_min_minor = sdk_min_minor()

    def resolve(self, name: str) -> RuntimeSpec:
        spec = self._specs.get(name)
        if spec is None:
            spec = self._specs[name] = self._resolve(name)
        return spec

    def _resolve(self, name: str) -> RuntimeSpec:
        if name in PROVIDED_RUNTIMES:
            return RuntimeSpec(name, "provided", None)
        if name not in AWS_RUNTIMES:
            raise InvalidParameterValueException(
                f"Value '{name}' at 'runtime' failed to satisfy constraint: Member must "
                f"satisfy enum value set: [{', '.join(AWS_RUNTIMES)}] or be a valid ARN"
            )
        interpreter = self.interpreter_for(name) if name in PYTHON_RUNTIMES else None
        if interpreter is None and name in self._overrides:
            raise InvalidParameterValueException(
                f"The runtime parameter of {name} is not available on this lamina server: it is "
                f"mapped to {self._overrides[name]}, which is not an executable file."
            )
        if interpreter is None:
            raise InvalidParameterValueException(
                f"The runtime parameter of {name} is not available on this lamina server. "
                f"Installed runtimes: {', '.join(self.available())}. An operator can map one "
                f"explicitly with --runtimes {name}=/path/to/interpreter."
            )
        minor = int(name.removeprefix("python3."))
        sdk = self._sdk if minor >= self._sdk_min_minor else None
        return RuntimeSpec(name, "python", interpreter, sdk, _ro_binds(interpreter, sdk))

    def available(self) -> list[str]:
        pythons = [n for n in PYTHON_RUNTIMES if self.interpreter_for(n)]
        return [*pythons, *PROVIDED_RUNTIMES]

    def interpreter_for(self, name: str) -> str | None:
        if name not in self._found:
            self._found[name] = self._find(name)
        return self._found[name]

    def _find(self, name: str) -> str | None:
        if name in self._overrides:
            mapped = self._overrides[name]
            return mapped if os.access(mapped, os.X_OK) else None
        version = name.removeprefix("python")
        if version == f"{sys.version_info.major}.{sys.version_info.minor}":
            return sys.executable
        exe = f"python{version}"
        pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
        candidates: list[Path] = []
        for entry in os.environ.get("PATH", "").split(os.pathsep):
            if entry and "shims" not in Path(entry).parts:  # pyenv shims fail outside pyenv
                candidates.append(Path(entry) / exe)
        candidates += sorted((pyenv_root / "versions").glob(f"{version}.*/bin/{exe}"), reverse=True)
        candidates += [Path("/usr/local/bin") / exe, Path("/usr/bin") / exe]
        for candidate in candidates:
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        return None


# The oldest Python lamina's bootstrap runs on (the oldest python3.X runtime it knows).
MIN_PYTHON = (3, int(PYTHON_RUNTIMES[0].removeprefix("python3.")))
_PROBE = "import sys; print('%d %d' % tuple(sys.version_info[:2]))"


def check_interpreter(path: str) -> tuple[int, int]:
    """The (major, minor) version of the Python at `path`, which must be an absolute path to an
    executable Python 3.9 or newer; ValueError saying what is wrong otherwise."""
    if not os.path.isabs(path):
        raise ValueError(f"{path!r} is not an absolute path")
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise ValueError(f"{path} is not an executable file")
    try:  # -E -s -S (no -I): Python 2 knows these too, so an old one is named as such
        out = subprocess.run(
            [path, "-E", "-s", "-S", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"{path} is not a Python interpreter (running it failed: {exc})") from None
    words = out.stdout.split()
    if out.returncode != 0 or len(words) != 2 or not all(w.isdigit() for w in words):
        detail = out.stderr.strip() or out.stdout.strip() or f"exit status {out.returncode}"
        raise ValueError(f"{path} is not a Python interpreter ({detail[:200]})")
    version = (int(words[0]), int(words[1]))
    if version < MIN_PYTHON:
        raise ValueError(
            f"{path} is Python {version[0]}.{version[1]}; lamina's Python runtimes need Python "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer"
        )
    return version


def check_overrides(overrides: dict[str, str]) -> None:
    """Refuse operator mappings lamina could not honour: ValueError naming the bad one."""
    for name, path in overrides.items():
        if name in PROVIDED_RUNTIMES:
            raise ValueError(
                f"{name}: a custom runtime runs the package's own bootstrap; it has no "
                "interpreter to map"
            )
        if name not in PYTHON_RUNTIMES:
            raise ValueError(
                f"{name!r} is not a runtime lamina can map to an interpreter (one of "
                f"{', '.join(PYTHON_RUNTIMES)})"
            )
        try:
            check_interpreter(path)
        except ValueError as exc:
            raise ValueError(f"{name}={path}: {exc}") from None


def _ro_binds(interpreter: str, sdk: Path | None) -> tuple[str, ...]:
    """What a confined instance needs from the host: the interpreter's installation and the SDK
    (whose entries are symlinks into lamina's environment), each visible at the same path."""
    binds: list[str] = []
    prefix = Path(interpreter).resolve().parent.parent
    if not str(prefix).startswith(("/usr", "/bin", "/lib")):
        binds.append(str(prefix))
    if sdk is not None:
        binds.append(str(sdk))
        binds += sorted({str(p.resolve()) for p in sdk.iterdir() if p.is_symlink()})
    return tuple(binds)


def sdk_min_minor() -> int:
    """The oldest Python 3 minor version every package of lamina's own SDK copy supports.

    (botocore follows CPython's support window, so e.g. python3.9 functions must package their
    own boto3 once lamina's botocore requires 3.10.)
    """
    lowest = 0
    for dist in ("boto3", "botocore", "s3transfer", "urllib3"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            spec = importlib.metadata.metadata(dist)["Requires-Python"] or ""
            m = re.search(r">=\s*3\.(\d+)", spec)
            if m:
                lowest = max(lowest, int(m.group(1)))
    return lowest


def sdk_path(runtime_dir: Path) -> Path:
    """A directory holding the AWS SDK for Python, importable by every Python runtime.

    Built once from lamina's own environment as symlinks (the packages are pure Python).
    """
    target = runtime_dir / "python-sdk"
    target.mkdir(parents=True, exist_ok=True)
    for package in _SDK_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        src = Path(spec.origin)
        src = src.parent if src.name == "__init__.py" else src
        link = target / src.name
        if link.is_symlink() and link.resolve() != src.resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to(src)
    return target
