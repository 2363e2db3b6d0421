#!/bin/sh
# Runs the API black-box suite (tests/api/) against a real toxiproxy 2.12,
# so that every expectation it holds ackloop to is first checked against
# the server whose API SPEC 14 follows. Where SPEC 14 says ackloop differs
# on purpose, the suite expects each server's own answer (Target::pick).
#
# Needs toxiproxy-server: $TOXIPROXY_SERVER, or the one
# ../shared/bench/toxiproxy/build.sh builds. Without it, says so and
# exits 0 (nothing ran). One test thread: /reset is global.
set -eu
cd "$(dirname "$0")/../.."
server=${TOXIPROXY_SERVER:-../shared/bench/toxiproxy/toxiproxy-server}
if [ ! -x "$server" ]; then
  echo "against_toxiproxy.sh: no toxiproxy-server at $server (build it with ../shared/bench/toxiproxy/build.sh); skipped"
  exit 0
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$server" -host 127.0.0.1 -port "$port" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
# Ready when /version answers (bounded).
i=0
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/version', timeout=1)" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 100 ] || { echo "toxiproxy did not start" >&2; exit 1; }
  sleep 0.1
done
ACKLOOP_API_ADDR=127.0.0.1:$port ACKLOOP_API_FLAVOR=toxiproxy \
  cargo test --release --test api -- --test-threads=1 "$@"
