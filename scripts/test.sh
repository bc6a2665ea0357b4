#!/usr/bin/env bash
# Installs what the tests need (a venv with lamina and its test extras) and runs the whole
# suite: lint, format check, type check, then pytest. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The custom-runtime tests run a `bootstrap` written with curl, as AWS's examples do, and one
# running awslambdaric on a Python from /usr (all a custom runtime's sandbox sees of the host;
# the test pip-installs awslambdaric for that Python's version).
# Sandboxes get egress beyond the host through iptables NAT (lamina also works without it, and
# the tests that need NAT skip then). A failed install is reported, not fatal.
missing=""
command -v curl >/dev/null || missing="$missing curl"
command -v iptables >/dev/null || missing="$missing iptables"
[ -x /usr/bin/python3 ] || [ -x /usr/local/bin/python3 ] || missing="$missing python3"
if [ -n "$missing" ]; then
  { apt-get update -qq && apt-get install -y -qq $missing; } \
    || echo "warning: could not install$missing; the tests that need them will say so" >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -m "not slow" "$@"
