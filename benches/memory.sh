#!/usr/bin/env bash
# Memory and size on a small host: RSS of an idle ackloop, RSS per idle
# connection, at the default settings and at the smallest ones, and the
# stripped binary's size with the dist profile (the shipped build) and with `opt-level = "z"`
# (the `small` profile).
#
#   benches/memory.sh                 # 10,000 idle connections [CONNS]
#   BIN=old/ackloop benches/memory.sh # another build, the same way
#
# Loopback only. The load generator (examples/loadgen/, scenario idle)
# opens CONNS line-mode connections, confirms each with one round trip and
# reads the server's RSS growth from /proc/PID/status.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

CONNS=${CONNS:-10000}
# BIN=path/to/ackloop measures another build (e.g. an older revision's) the same way.
BIN=${BIN:-target/dist/ackloop}
SMALLEST="--read-buffer 512 --max-owed 1 --udp-queue-len 1 --udp-queue-bytes 1024"
cargo build --profile dist --quiet --bin ackloop --example loadgen
cargo build --profile small --quiet --bin ackloop
ulimit -n $((CONNS + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

for settings in default smallest; do
    args=()
    [[ $settings == smallest ]] && read -r -a args <<<"$SMALLEST"
    exec {out}< <(exec "$BIN" --tcp 127.0.0.1:0 --udp 127.0.0.1:0 \
        --mode line --log-level off --max-connections $((CONNS + 100)) "${args[@]}")
    pid=$!
    read -r _ tcp <&"$out"
    read -r _ udp <&"$out"
    idle=$(rss_kib "$pid")
    # One long line fills the read buffer: its pages are resident from now on.
    port=${tcp##*:}
    exec {conn}<>"/dev/tcp/127.0.0.1/$port"
    { head -c 60000 /dev/zero | tr '\0' x; echo; } |
        dd bs=60001 iflag=fullblock status=none >&"$conn"
    read -r _ <&"$conn"
    exec {conn}<&-
    busy=$(rss_kib "$pid")
    result=$(target/dist/examples/loadgen --tcp "$tcp" --udp "$udp" --pid "$pid" \
        --scenario idle --conns "$CONNS")
    kill "$pid"
    exec {out}<&-
    per_conn=$(grep -o 'rss_per_conn_b=[0-9]*' <<<"$result" | cut -d= -f2)
    printf '%-9s idle server RSS %5d KiB, %5d KiB after one 60 KB line; per idle connection %4d B (%d connections) %s\n' \
        "$settings" "$idle" "$busy" "$per_conn" "$CONNS" "${args[*]:+[${args[*]}]}"
done

for profile in dist small; do
    strip -o "target/ackloop.$profile.stripped" "target/$profile/ackloop"
    printf 'binary, %-7s profile: %d bytes stripped\n' "$profile" \
        "$(stat -c %s "target/ackloop.$profile.stripped")"
done
