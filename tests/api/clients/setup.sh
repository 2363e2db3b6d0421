#!/bin/sh
# Installs the toxiproxy clients no one here wrote, from their registries,
# into DIR (default: target/api-clients): toxiproxy-python (PyPI, in a
# venv) and, where node is installed, toxiproxy-node-client (npm).
# Idempotent; tests/api/clients.rs runs it when DIR is missing, .ci/run
# runs it up front.
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
dir=${1:-${CARGO_TARGET_DIR:-$root/target}/api-clients}
mkdir -p "$dir"
if [ ! -x "$dir/venv/bin/python" ] || ! "$dir/venv/bin/python" -c 'import toxiproxy' 2>/dev/null; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check toxiproxy-python==0.1.1
fi
if command -v npm >/dev/null 2>&1; then
  if [ ! -d "$dir/node/node_modules/toxiproxy-node-client" ]; then
    mkdir -p "$dir/node"
    (cd "$dir/node" && [ -f package.json ] || echo '{"name":"ackloop-api-clients","private":true}' > package.json)
    (cd "$dir/node" && npm install --silent --no-audit --no-fund toxiproxy-node-client@4.1.0)
  fi
else
  echo "setup.sh: node/npm missing: toxiproxy-node-client not installed (its test skips)"
fi
echo "api clients in $dir"
