#!/usr/bin/env bash
# System calls per operation, by kind, for ackloop and the C reference in one
# scenario: a figure that, unlike CPU time, barely moves with the machine's
# noise, so it shows what a change to the loop really saves.
#
#   benches/syscalls.sh once --scenario once --conns 32
#   benches/syscalls.sh line --scenario line --conns 64 --depth 16
#   benches/syscalls.sh once --scenario udp --conns 32
#   benches/syscalls.sh udp-rates      # UDP at three fixed offered rates
#
# A closed loop offers more to the faster server, which then drains smaller
# batches and so makes more system calls per datagram: the count follows
# the race, not the server. `udp-rates` fixes the offered load instead: it
# measures the C reference's closed-loop rate (its saturation, 32 sockets),
# then runs both servers at 1/4, 1/2 and 9/10 of it with the load
# generator paced (`--rate`), and prints one table row per rate.
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
[[ $# -ge 2 || ${1:-} == udp-rates ]] || { sed -n '2,22p' "$0" >&2; exit 2; }
command -v perf >/dev/null || { echo "syscalls.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
if [[ ! -x $OUT/c_epoll || ! -x $LOADGEN || ! -x target/dist/ackloop ]]; then
    ROUNDS=1 DURATION=1 ONLY=udp START_RUNS=1 benches/compare.sh >/dev/null
fi

KINDS=(accept4 read recvfrom recvmmsg write sendto sendmmsg epoll_ctl epoll_wait shutdown close setsockopt)
events=raw_syscalls:sys_enter
for kind in "${KINDS[@]}"; do events+=",syscalls:sys_enter_$kind"; done

# measure NAME MODE LOADGEN-ARGS...: runs server NAME (ackloop or c) under
# perf with the load generator on the other core; sets OPS (operations
# counted) and writes the per-kind counts to $OUT/syscalls.NAME.
measure() {
    local name=$1 mode=$2 fd pid perf_pid result cmd
    shift 2
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
    result=$(taskset -c 1 "$LOADGEN" --tcp "$tcp" --udp "$udp" --duration "$DURATION" --pid "$pid" "$@")
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    kill "$pid"
    exec {fd}<&-
    OPS=$(grep -o ' ops=[0-9]*' <<<"$result" | cut -d= -f2)
    CPU=$(grep -o 'cpu_us_per_op=[0-9.]*' <<<"$result" | cut -d= -f2)
    LOST=$(grep -o 'lost=[0-9]*' <<<"$result" | cut -d= -f2)
}

# The count of all system calls per operation in the last measure of NAME.
calls_per_op() {
    awk -F, -v ops="$OPS" '$3 == "raw_syscalls:sys_enter" { printf "%.3f", $1 / ops }' "$OUT/syscalls.$1"
}

if [[ $1 == udp-rates ]]; then
    measure c once --scenario udp --conns 32
    saturation=$((OPS / DURATION))
    echo "C reference, closed loop, 32 sockets: $saturation datagrams/s (its saturation here)"
    printf '%10s | %-28s | %-28s\n' "rate/s" "C: calls/dgram, CPU us/dgram" "ackloop: calls/dgram, CPU us/dgram"
    for part in 25 50 90; do
        rate=$((saturation * part / 100))
        row=$(printf '%10d' "$rate")
        for name in c ackloop; do
            measure "$name" once --scenario udp --conns 32 --rate "$rate"
            row+=$(printf ' | %8s  %8s  (lost %s)  ' "$(calls_per_op "$name")" "$CPU" "$LOST")
        done
        echo "$row"
    done
    exit 0
fi

mode=$1
shift
for name in ackloop c; do
    measure "$name" "$mode" "$@"
    echo "$name: $OPS operations; system calls per operation:"
    awk -F, -v ops="$OPS" '$1 + 0 > 0 {
        sub(/^(raw_)?syscalls:sys_enter_?/, "", $3)
        printf "  %-12s %7.3f\n", ($3 == "" ? "all" : $3), $1 / ops
    }' "$OUT/syscalls.$name"
done
