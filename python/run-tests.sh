#!/usr/bin/env bash
# The Python package's checks, as CI runs them (.ci/run calls this): a fresh
# virtual environment in a temporary directory, `pip install . pytest mypy`
# (maturin builds the program into target/, reusing what cargo built),
# `mypy --strict` on the package, then its pytest suite against the
# installed package and the `ackloop` program pip put beside the
# interpreter, not target/. Needs python3 with venv, cargo, and PyPI.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"

work="$(mktemp -d "${TMPDIR:-/tmp}/ackloop-python.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "== python: a fresh venv ($("$python" --version))"
"$python" -m venv "$work/venv"
venv="$work/venv/bin"
# Quiet pip, but its errors still show; no version check (offline-friendly).
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS
"$venv/pip" install --quiet "$repo" pytest mypy
echo "== python: pip install . pytest mypy took $((SECONDS - start)) s"

echo "== python: mypy --strict on the package (and its tests)"
"$venv/mypy" --strict --config-file "$repo/pyproject.toml" --cache-dir "$work/mypy-cache" \
    "$repo/python/ackloop" "$repo/python/tests"

echo "== python: pytest python/tests (the installed package and program)"
# From a directory outside the tree, so `import ackloop` can only find the
# installed package; the tests check the program is the one pip installed.
cd "$work"
"$venv/python" -m pytest "$repo/python/tests" -p no:cacheprovider -q
