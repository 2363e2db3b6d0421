#!/usr/bin/env bash
# ackloop against the hand-written C epoll reference, in the same run.
#
#   benches/compare.sh            # from the repository root
#   ROUNDS=5 DURATION=5 benches/compare.sh
#
# Builds ackloop, the loadgen example and ../shared/bench/c_epoll (into
# target/, never into the source tree), then for each scenario runs the two
# servers alternately (A B A B ...), the server pinned to CPU 0 and the load
# generator to CPU 1, and prints the medians of the server's CPU time per
# operation (the fair figure on 2 cores, where the load generator is often
# the bottleneck), the rate and p99 latency, and the ratio ackloop / C.
# Loopback only; every run ends by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
C_SRC=${C_SRC:-../shared/bench/c_epoll/server.c}

cargo build --release --quiet
cargo build --release --quiet --example loadgen
mkdir -p target/bench
cc -O2 -o target/bench/c_epoll "$C_SRC"
ACKLOOP="./target/release/ackloop --log-level off --idle-timeout 0 --max-connections 100000"
C_EPOLL="./target/bench/c_epoll --drain"
LOADGEN=./target/release/examples/loadgen
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

server_pid=""
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true' EXIT

# start_server CMD MODE: starts it pinned to CPU 0; sets server_pid, tcp, udp.
start_server() {
    local out=target/bench/server.out
    : > "$out"
    taskset -c 0 $1 --tcp 127.0.0.1:0 --udp 127.0.0.1:0 --mode "$2" > "$out" 2>/dev/null &
    server_pid=$!
    for _ in $(seq 250); do
        [ "$(wc -l < "$out")" -ge 2 ] && break
        sleep 0.02
    done
    tcp=$(awk '/^tcp/ {print $2}' "$out")
    udp=$(awk '/^udp/ {print $2}' "$out")
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# field LINE NAME: the value of NAME=... in a loadgen line.
field() { tr ' ' '\n' <<< "$1" | awk -F= -v k="$2" '$1 == k {print $2}' | tr -d '/s'; }
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

printf '%-26s %12s %12s %7s %12s %12s %9s %9s\n' scenario "ackloop µs/op" "C µs/op" ratio \
    "ackloop op/s" "C op/s" "ack p99" "C p99"
for spec in "once once 32 1" "line line 64 1" "line line 64 16" "once udp 32 1"; do
    read -r mode scenario conns depth <<< "$spec"
    declare -A cpu=() rate=() p99=()
    for _ in $(seq "$ROUNDS"); do
        for name in ackloop c; do
            if [ "$name" = ackloop ]; then cmd=$ACKLOOP; else cmd=$C_EPOLL; fi
            start_server "$cmd" "$mode"
            line=$(taskset -c 1 "$LOADGEN" --scenario "$scenario" --tcp "$tcp" --udp "$udp" \
                --conns "$conns" --depth "$depth" --duration "$DURATION" --pid "$server_pid")
            stop_server
            cpu[$name]+="$(field "$line" server_cpu_us_per_op) "
            rate[$name]+="$(field "$line" rate) "
            p99[$name]+="$(field "$line" p99_us) "
        done
    done
    m() { tr ' ' '\n' <<< "$1" | grep . | median; }
    a=$(m "${cpu[ackloop]}"); c=$(m "${cpu[c]}")
    printf '%-26s %12s %12s %7.3f %12.0f %12.0f %9s %9s\n' \
        "$scenario c=$conns d=$depth" "$a" "$c" "$(awk -v a="$a" -v c="$c" 'BEGIN {print a / c}')" \
        "$(m "${rate[ackloop]}")" "$(m "${rate[c]}")" "$(m "${p99[ackloop]}")" "$(m "${p99[c]}")"
    unset cpu rate p99
done

echo
for name in ackloop c; do
    if [ "$name" = ackloop ]; then cmd=$ACKLOOP; else cmd=$C_EPOLL; fi
    start_server "$cmd" line
    echo "$name: $("$LOADGEN" --scenario idle --tcp "$tcp" --conns 10000 --pid "$server_pid")"
    stop_server
done
echo "stripped binary: $(stat -c %s target/release/ackloop) bytes"
# Start to address lines, timed by Python (a shell's own forks would
# dominate a figure of about a millisecond).
python3 - <<'PY'
import statistics, subprocess, time
runs = []
for _ in range(20):
    started = time.perf_counter()
    server = subprocess.Popen(["./target/release/ackloop", "--tcp", "127.0.0.1:0",
                               "--udp", "127.0.0.1:0", "--log-level", "off"],
                              stdout=subprocess.PIPE)
    server.stdout.readline(); server.stdout.readline()
    runs.append((time.perf_counter() - started) * 1000)
    server.terminate(); server.wait()
print(f"start to address lines: median {statistics.median(runs):.2f} ms over 20 runs")
PY
