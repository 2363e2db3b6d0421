#!/usr/bin/env bash
# System calls per operation, by kind, for ackloop and the C reference in one
# scenario: a figure that, unlike CPU time, barely moves with the machine's
# noise, so it shows what a change to the loop really saves.
#
#   benches/syscalls.sh once --scenario once --conns 32
#   benches/syscalls.sh line --scenario line --conns 64 --depth 16
#   benches/syscalls.sh once --scenario udp --conns 32
#   benches/syscalls.sh udp-rates      # UDP at three fixed offered rates
#   benches/syscalls.sh relay-udp      # ackloop relaying UDP to the C reference
#   BEFORE_BIN=path/to/old/ackloop benches/syscalls.sh relay-udp
#                                      # and an older build, in the same run
#                                      # (udp-rates too)
#
# A closed loop offers more to the faster server, which then drains smaller
# batches and so makes more system calls per datagram: the count follows
# the race, not the server. `udp-rates` fixes the offered load instead: it
# measures the C reference's closed-loop rate (its saturation, 32 sockets),
# then runs both servers at 1/4, 1/2 and 9/10 of it with the load
# generator paced (`--rate`), and prints one table row per rate: medians of
# ROUNDS [3] rounds (calls, CPU and p99 latency per datagram), the servers
# alternating, and each kind's median
# (SATURATION=N skips the closed-loop run and takes N datagrams/s).
#
# `relay-udp` runs ackloop as `--upstream udp:...` in front of the C
# reference (once mode, on the load generator's CPU, as compare.sh's
# relay:udp scenario does) with 32 sockets, closed loop, and counts the
# relay's calls per request (a request and its reply relayed: two
# datagrams); ROUNDS [3] rounds, alternating with BEFORE_BIN's build when
# set, medians printed.
#
# The first word is the server's --mode, the rest go to the load generator.
# BIN [target/dist/ackloop] is the ackloop build measured; BEFORE_BIN, when
# set, an older one measured beside it ("before").
# Needs perf (Debian: linux-perf) with tracepoints readable, and the builds
# that benches/compare.sh makes (it is run first if they are missing).
# Loopback only; each run lasts DURATION seconds [3].
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

DURATION=${DURATION:-3}
OUT=target/bench
LOADGEN=target/dist/examples/loadgen
BIN=${BIN:-target/dist/ackloop}
ROUNDS=${ROUNDS:-3}
[[ $# -ge 2 || ${1:-} == udp-rates || ${1:-} == relay-udp ]] || { sed -n '2,36p' "$0" >&2; exit 2; }
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
    local name=$1 mode=$2 fd pid perf_pid result cmd upstream_pid up_udp
    shift 2
    upstream_pid=
    case $name in
    ackloop) cmd=("$BIN" --log-level off) ;;
    before) cmd=("$BEFORE_BIN" --log-level off) ;;
    c) cmd=("$OUT/c_epoll" --drain) ;;
    relay | relay-before)
        # The upstream on the load generator's CPU; the relay alone on CPU 0.
        exec {fd}< <(exec taskset -c 1 "$OUT/c_epoll" --drain --tcp 127.0.0.1:0 --udp 127.0.0.1:0 --mode "$mode" 2>/dev/null)
        upstream_pid=$!
        read -r _ _ <&"$fd"
        read -r _ up_udp <&"$fd"
        exec {fd}<&-
        cmd=("$BIN" --log-level off --upstream "udp:$up_udp")
        [[ $name == relay-before ]] && cmd[0]=$BEFORE_BIN
        ;;
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
    [[ -z $upstream_pid ]] || kill "$upstream_pid"
    exec {fd}<&-
    OPS=$(grep -o ' ops=[0-9]*' <<<"$result" | cut -d= -f2)
    CPU=$(grep -o 'cpu_us_per_op=[0-9.]*' <<<"$result" | cut -d= -f2)
    LOST=$(grep -o 'lost=[0-9]*' <<<"$result" | cut -d= -f2)
    P99=$(grep -o 'p99_us=[0-9.]*' <<<"$result" | cut -d= -f2)
}

# The count of all system calls per operation in the last measure of NAME.
calls_per_op() {
    awk -F, -v ops="$OPS" '$3 == "raw_syscalls:sys_enter" { printf "%.3f", $1 / ops }' "$OUT/syscalls.$1"
}

# The per-kind counts per operation in the last measure of NAME, one line.
kinds_per_op() {
    awk -F, -v ops="$OPS" '$1 + 0 > 0 && $3 != "raw_syscalls:sys_enter" {
        sub(/^syscalls:sys_enter_/, "", $3)
        printf " %s %.3f", $3, $1 / ops
    }' "$OUT/syscalls.$1"
}

# median: the median of the numbers on stdin.
median() {
    sort -n | awk '{ v[NR] = $1 } END { printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

if [[ $1 == relay-udp ]]; then
    names=relay
    [[ -z ${BEFORE_BIN:-} ]] || names="relay-before relay"
    declare -A CALLS CPUS
    for ((round = 1; round <= ROUNDS; round++)); do
        for name in $names; do
            measure "$name" once --scenario udp --conns 32
            CALLS[$name]+="$(calls_per_op "$name") "
            CPUS[$name]+="$CPU "
            printf '%-12s round %d: %s requests, %s calls/request, cpu %s us/request;%s (lost %s)\n' \
                "$name" "$round" "$OPS" "$(calls_per_op "$name")" "$CPU" "$(kinds_per_op "$name")" "$LOST"
        done
    done
    for name in $names; do
        printf '%-12s median of %d: %s calls/request, cpu %s us/request\n' "$name" "$ROUNDS" \
            "$(tr ' ' '\n' <<<"${CALLS[$name]}" | grep . | median)" "$(tr ' ' '\n' <<<"${CPUS[$name]}" | grep . | median)"
    done
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit 0
fi

if [[ $1 == udp-rates ]]; then
    if [[ -n ${SATURATION:-} ]]; then
        saturation=$SATURATION
        echo "saturation given: $saturation datagrams/s"
    else
        measure c once --scenario udp --conns 32
        saturation=$((OPS / DURATION))
        echo "C reference, closed loop, 32 sockets: $saturation datagrams/s (its saturation here)"
    fi
    names="c ackloop"
    [[ -z ${BEFORE_BIN:-} ]] || names="c before ackloop"
    echo "medians of $ROUNDS rounds, the servers alternating; lost: summed over the rounds"
    header=$(printf '%10s' "rate/s")
    for name in $names; do header+=$(printf ' | %-46s' "$name: calls/dgram, CPU us/dgram, p99 us"); done
    echo "$header"
    for part in 25 50 90; do
        rate=$((saturation * part / 100))
        declare -A calls=() cpus=() lost=() kinds=() p99s=()
        for ((round = 1; round <= ROUNDS; round++)); do
            for name in $names; do
                measure "$name" once --scenario udp --conns 32 --rate "$rate"
                calls[$name]+="$(calls_per_op "$name") "
                cpus[$name]+="$CPU "
                p99s[$name]+="$P99 "
                lost[$name]=$((${lost[$name]:-0} + LOST))
                kinds[$name]+="$(kinds_per_op "$name")"$'\n'
            done
        done
        row=$(printf '%10d' "$rate")
        for name in $names; do
            row+=$(printf ' | %8s  %8s  %9s  (lost %s)    ' \
                "$(tr ' ' '\n' <<<"${calls[$name]}" | grep . | median)" \
                "$(tr ' ' '\n' <<<"${cpus[$name]}" | grep . | median)" \
                "$(tr ' ' '\n' <<<"${p99s[$name]}" | grep . | median)" "${lost[$name]}")
        done
        echo "$row"
        for name in $names; do
            # Each kind's median over the rounds (a kind absent from a round counts 0).
            printf '%10s   %-7s by kind:%s\n' "" "$name" "$(awk -v rounds="$ROUNDS" '
                function median(list,    a, n, i, j, t) {
                    n = split(list, a, " ")
                    for (i = n + 1; i <= rounds; i++) a[i] = 0
                    n = rounds
                    for (i = 2; i <= n; i++)
                        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
                    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
                }
                { for (i = 1; i < NF; i += 2) { if (!($i in v)) order[++k] = $i; v[$i] = v[$i] " " $(i + 1) } }
                END { for (o = 1; o <= k; o++) printf " %s %.3f", order[o], median(v[order[o]]) }' <<<"${kinds[$name]}")"
        done
    done
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
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
