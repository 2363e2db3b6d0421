#!/usr/bin/env bash
# Memory of idle named endpoints (SPEC 14, issue 21): the RSS each of N
# idle endpoints adds to the server (its listener or socket, its entry in
# the registry, its name, addresses and limits), TCP and UDP, made two
# ways: from a config file (`--config`) and through the API (`POST
# /populate` on a running server). Each is measured against the same
# server with one endpoint of the kind, so that the code pages that making
# one touches (the JSON parser, the endpoint's start) are not counted as
# the endpoints' memory: per endpoint is (RSS with N - RSS with 1) / (N - 1).
#
#   benches/endpoints.sh                 # 256 endpoints [N]
#   BIN=old/ackloop benches/endpoints.sh # another build, the same way
#   TOXIPROXY_SERVER=path/to/toxiproxy-server benches/endpoints.sh
#                                        # and toxiproxy's TCP proxies, the API way
#
# Loopback only; RSS is VmRSS from /proc/PID/status. Every upstream is
# the discard port, never reached: nothing connects.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

N=${N:-256}
BIN=${BIN:-target/dist/ackloop}
if [[ $BIN == target/dist/ackloop ]]; then
    cargo build --profile dist --quiet --bin ackloop
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# A toxiproxy config (JSON array) of $1 endpoints; $2 is "" or "udp:".
proxies() {
    local i sep=""
    printf '['
    for ((i = 0; i < $1; i++)); do
        printf '%s{"name":"e%d","listen":"%s127.0.0.1:0","upstream":"%s127.0.0.1:9"}' \
            "$sep" "$i" "$2" "$2"
        sep=,
    done
    printf ']'
}

# Starts the server with "$@"; sets $pid and $out (its stdout), and
# waits for its address lines (the api line last, when asked for).
start() {
    exec {out}< <(exec "$BIN" --tcp 127.0.0.1:0 --udp 127.0.0.1:0 --log-level off "$@")
    pid=$!
    local lines=2 line
    [[ " $* " == *" --api "* ]] && lines=3
    for ((; lines > 0; lines--)); do
        read -r line <&"$out"
        api=${line#api }
    done
}

# Starts toxiproxy-server on a free port; sets $pid and $api once it answers.
start_toxiproxy() {
    local port tries
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    exec {out}< <(exec "$TOXIPROXY_SERVER" -host 127.0.0.1 -port "$port" 2>/dev/null)
    pid=$!
    api=127.0.0.1:$port
    for ((tries = 0; tries < 100; tries++)); do
        curl -sf "http://$api/version" >/dev/null && return
        sleep 0.1
    done
    echo "toxiproxy-server did not answer on $api" >&2
    exit 1
}

stop() {
    kill "$pid"
    exec {out}<&-
}

# Bytes per endpoint from RSS readings in KiB with one and with N.
per_endpoint() { echo $(((($2 - $1) * 1024) / (N - 1))); }

# POST /populate with file $1; fails unless 201.
populate() {
    local status
    status=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary "@$1" \
        "http://$api/populate")
    [[ $status == 201 ]] || { echo "POST /populate $1: $status" >&2; exit 1; }
}

echo "$BIN, $N idle endpoints each way"
for kind in tcp udp; do
    prefix=""
    [[ $kind == udp ]] && prefix="udp:"
    proxies 1 "$prefix" >"$dir/one.json"
    proxies "$N" "$prefix" >"$dir/all.json"

    start --config "$dir/one.json"
    one=$(rss_kib "$pid")
    stop
    start --config "$dir/all.json"
    all=$(rss_kib "$pid")
    stop
    printf '%s, --config FILE:  %5d KiB with one, %5d KiB with %d: %5d B per endpoint\n' \
        "$kind" "$one" "$all" "$N" "$(per_endpoint "$one" "$all")"

    # The second populate keeps the first's endpoint as it is.
    start --api 127.0.0.1:0
    populate "$dir/one.json"
    one=$(rss_kib "$pid")
    populate "$dir/all.json"
    all=$(rss_kib "$pid")
    stop
    printf '%s, POST /populate: %5d KiB with one, %5d KiB with %d: %5d B per endpoint\n' \
        "$kind" "$one" "$all" "$N" "$(per_endpoint "$one" "$all")"
done

if [[ -n ${TOXIPROXY_SERVER:-} ]]; then
    proxies 1 "" >"$dir/one.json"
    proxies "$N" "" >"$dir/all.json"
    start_toxiproxy
    populate "$dir/one.json"
    one=$(rss_kib "$pid")
    populate "$dir/all.json"
    all=$(rss_kib "$pid")
    stop
    printf 'toxiproxy tcp, POST /populate: %5d KiB with one, %5d KiB with %d: %5d B per endpoint\n' \
        "$one" "$all" "$N" "$(per_endpoint "$one" "$all")"
fi
