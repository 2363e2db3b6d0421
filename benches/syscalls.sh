#!/usr/bin/env bash
# System calls per operation, by kind, for ackloop and the C reference in one
# scenario: a figure that, unlike CPU time, barely moves with the machine's
# noise, so it shows what a change to the loop really saves.
#
#   benches/syscalls.sh once --scenario once --conns 32
#   benches/syscalls.sh line --scenario line --conns 64 --depth 16
#   benches/syscalls.sh once --scenario udp --conns 32
#
# The first word is the server's --mode, the rest go to the load generator.
# Needs perf (Debian: linux-perf) with tracepoints readable, and the builds
# that benches/compare.sh makes (it is run first if they are missing).
# Loopback only; each run lasts DURATION seconds [3].
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3}
OUT=target/bench
LOADGEN=target/dist/examples/loadgen
[[ $# -ge 2 ]] || { sed -n '2,13p' "$0" >&2; exit 2; }
mode=$1
shift
command -v perf >/dev/null || { echo "syscalls.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
if [[ ! -x $OUT/c_epoll || ! -x $LOADGEN || ! -x target/dist/ackloop ]]; then
    ROUNDS=1 DURATION=1 ONLY=udp START_RUNS=1 benches/compare.sh >/dev/null
fi

KINDS=(accept4 read recvfrom recvmmsg write sendto sendmmsg epoll_ctl epoll_wait shutdown close setsockopt)
events=raw_syscalls:sys_enter
for kind in "${KINDS[@]}"; do events+=",syscalls:sys_enter_$kind"; done

for name in ackloop c; do
    case $name in
    ackloop) cmd=(target/dist/ackloop --log-level off) ;;
    c) cmd=("$OUT/c_epoll" --drain) ;;
    esac
    exec {fd}< <(exec taskset -c 0 "${cmd[@]}" --tcp 127.0.0.1:0 --udp 127.0.0.1:0 --mode "$mode" 2>/dev/null)
    pid=$!
    read -r _ tcp <&"$fd"
    read -r _ udp <&"$fd"
    perf stat -x, -e "$events" -p "$pid" -o "$OUT/syscalls.$name" 2>/dev/null &
    perf_pid=$!
    sleep 0.2 # perf attaching; what it misses is before the load starts
    result=$(taskset -c 1 "$LOADGEN" --tcp "$tcp" --udp "$udp" --duration "$DURATION" "$@")
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    kill "$pid"
    exec {fd}<&-
    ops=$(grep -o 'ops=[0-9]*' <<<"$result" | cut -d= -f2)
    echo "$name: $ops operations; system calls per operation:"
    awk -F, -v ops="$ops" '$1 + 0 > 0 {
        sub(/^(raw_)?syscalls:sys_enter_?/, "", $3)
        printf "  %-12s %7.3f\n", ($3 == "" ? "all" : $3), $1 / ops
    }' "$OUT/syscalls.$name"
done
