#!/usr/bin/env bash
# The server's own instructions per operation (callgrind: user space only,
# the kernel's work excluded), for the plain scenarios of compare.sh.
# Deterministic enough to compare builds on a loaded machine, where CPU
# times are not: each figure is the difference of two runs (N1 and N2
# operations) divided by the operations between them, so start-up cancels.
#
#   benches/instructions.sh                      # ackloop's profiling build
#   BIN=path/to/other/ackloop benches/instructions.sh once line:64x1
#   BIN=../shared/bench/c_epoll/server ARGS=--drain benches/instructions.sh
#
# Scenarios (arguments; all four by default): once, line:64x1, line:64x16,
# udp. Counts move by a few percent from run to run (how turns batch the
# events changes with timing): run twice and compare medians.
#
# Environment: BIN [target/profiling/ackloop, built here], ARGS [--log-level
# off] (the server's extra arguments), LOADGEN [target/dist/examples/loadgen,
# built here]. Needs valgrind (apt-get install valgrind).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
if [[ -z ${BIN:-} ]]; then
    cargo build --profile profiling --quiet
    BIN=target/profiling/ackloop
fi
ARGS=${ARGS:---log-level off}
LOADGEN=${LOADGEN:-target/dist/examples/loadgen}
[[ -x $LOADGEN ]] || cargo build --profile dist --quiet --example loadgen
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# total MODE SCENARIO N LOADGEN_ARGS...: prints "OPS INSTRUCTIONS" of one run.
total() {
    local mode=$1 scenario=$2 n=$3 fd line tcp='' udp='' pid
    shift 3
    # shellcheck disable=SC2086 # ARGS is words
    exec {fd}< <(exec valgrind --tool=callgrind --callgrind-out-file="$OUT/cg" \
        "$BIN" --tcp 127.0.0.1:0 --udp 127.0.0.1:0 --mode "$mode" $ARGS 2>"$OUT/err")
    pid=$!
    while [[ -z $tcp || -z $udp ]] && read -r -t 60 -u "$fd" line; do
        case $line in
        tcp\ *) tcp=${line#tcp } ;;
        udp\ *) udp=${line#udp } ;;
        esac
    done
    [[ -n $tcp && -n $udp ]] || { echo "$BIN: no address lines (see $OUT/err)" >&2; exit 1; }
    "$LOADGEN" --tcp "$tcp" --udp "$udp" --scenario "$scenario" --requests "$n" \
        --duration 600 "$@" >"$OUT/lg"
    kill -TERM "$pid"
    # The callgrind file is complete once valgrind has exited.
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    exec {fd}<&-
    local ops
    ops=$(grep -o 'ops=[0-9]*' "$OUT/lg" | cut -d= -f2)
    echo "$ops $(awk '/^(summary|totals):/ { print $2; exit }' "$OUT/cg")"
}

# per SCENARIO: instructions per operation.
per() {
    local mode scenario n1 n2 args
    case $1 in
    once) mode=once scenario=once n1=1000 n2=11000 args=(--conns 32) ;;
    line:64x1) mode=line scenario=line n1=2000 n2=22000 args=(--conns 64 --depth 1) ;;
    line:64x16) mode=line scenario=line n1=20000 n2=220000 args=(--conns 64 --depth 16) ;;
    udp) mode=once scenario=udp n1=2000 n2=22000 args=(--conns 32) ;;
    *) echo "unknown scenario $1 (once, line:64x1, line:64x16, udp)" >&2; exit 2 ;;
    esac
    read -r o1 i1 < <(total "$mode" "$scenario" "$n1" "${args[@]}")
    read -r o2 i2 < <(total "$mode" "$scenario" "$n2" "${args[@]}")
    awk -v s="$1" -v o1="$o1" -v i1="$i1" -v o2="$o2" -v i2="$i2" \
        'BEGIN { printf "%-11s %8.1f instructions per operation\n", s, (i2 - i1) / (o2 - o1) }'
}

echo "$BIN $ARGS"
for scenario in "${@:-once line:64x1 line:64x16 udp}"; do
    for s in $scenario; do per "$s"; done
done
