#!/usr/bin/env bash
# Compare ackloop with the C epoll reference server (../shared/bench/c_epoll):
# server CPU time per operation, rate and p99 latency, RSS per idle
# connection, stripped binary size and time from start to ready.
#
#   benches/compare.sh                 # from the repository root
#   ROUNDS=5 DURATION=5 benches/compare.sh
#   SERVERS=c benches/compare.sh       # the C reference alone
#   BEFORE=05b89a1 SERVERS="before ackloop c" benches/compare.sh
#                                      # an older revision in the same run
#
# Environment (defaults in brackets):
#   ROUNDS [3]         rounds; each runs every scenario once per server, the
#                      servers alternating (A B A B ...); medians are reported
#   DURATION [3]       seconds per measured run
#   SERVERS ["ackloop c"]  which servers to run (ackloop, c, before)
#   BEFORE             a git revision, built in a worktree under target/bench,
#                      run as the server "before" (before/after in one run)
#   IDLE_CONNS [10000] connections in the idle scenario
#   ONLY [all]         run only the scenarios whose label starts with one of
#                      these words (e.g. ONLY="udp line:64x16")
#   START_RUNS [20]    runs for the start-up time median
#   C_SRC [../shared/bench/c_epoll/server.c]
#
# Each server runs pinned to CPU 0 (taskset -c 0), the load generator
# (examples/loadgen.rs, one thread) to CPU 1. The load generator is often
# the bottleneck, so server CPU per operation (from /proc/PID/stat) is the
# figure to compare, not the rate. Everything listens on and talks to
# 127.0.0.1 only. Build products and raw results go to target/bench/.
set -euo pipefail
export LC_ALL=C # a '.' decimal point in $EPOCHREALTIME and awk
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
SERVERS=${SERVERS:-ackloop c}
IDLE_CONNS=${IDLE_CONNS:-10000}
START_RUNS=${START_RUNS:-20}
C_SRC=${C_SRC:-../shared/bench/c_epoll/server.c}
OUT=target/bench
# The shipped build (Cargo.toml's dist profile): what users run.
LOADGEN=target/dist/examples/loadgen
RESULTS=$OUT/results.txt

# label, server mode, load generator arguments
SCENARIOS=(
    "once:32       once --scenario once --conns 32"
    "line:64x1     line --scenario line --conns 64 --depth 1"
    "line:64x16    line --scenario line --conns 64 --depth 16"
    "udp:32        once --scenario udp --conns 32"
    "idle:$IDLE_CONNS line --scenario idle --conns $IDLE_CONNS"
)

die() {
    echo "compare.sh: $*" >&2
    exit 1
}

if [[ -n ${ONLY:-} ]]; then
    chosen=()
    for scenario in "${SCENARIOS[@]}"; do
        for word in $ONLY; do
            [[ $scenario == "$word"* ]] && chosen+=("$scenario") && break
        done
    done
    ((${#chosen[@]})) || die "ONLY=$ONLY matches no scenario"
    SCENARIOS=("${chosen[@]}")
fi

# ------------------------------------------------------------------ servers

SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# server_cmd NAME MODE: the server's command line, in CMD.
server_cmd() {
    local addrs=(--tcp 127.0.0.1:0 --udp 127.0.0.1:0 --mode "$2")
    case $1 in
    ackloop) CMD=(target/dist/ackloop "${addrs[@]}" --log-level off) ;;
    before) CMD=("$OUT/before/ackloop" "${addrs[@]}" --log-level off) ;;
    c) CMD=("$OUT/c_epoll" --drain "${addrs[@]}") ;;
    # Start-up baseline: a process that prints two lines and exits at once.
    spawn) CMD=(printf 'tcp -\nudp -\n') ;;
    *) die "unknown server $1 (SERVERS takes ackloop, c and before)" ;;
    esac
}

# start_server CPU_PREFIX...: runs "${CMD[@]}" behind the given prefix
# (taskset or nothing), reads its two address lines; sets SERVER_PID, TCP,
# UDP. The process substitution's pid is the server's: each layer execs.
start_server() {
    local fd line
    exec {fd}< <(exec "$@" "${CMD[@]}" 2>>"$OUT/server.err")
    SERVER_PID=$!
    TCP= UDP=
    while [[ -z $TCP || -z $UDP ]] && read -r -t 5 -u "$fd" line; do
        case $line in
        tcp\ *) TCP=${line#tcp } ;;
        udp\ *) UDP=${line#udp } ;;
        esac
    done
    exec {fd}<&-
    [[ -n $TCP && -n $UDP ]] || die "${CMD[*]}: no address lines (see $OUT/server.err)"
}

stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do # ackloop may finish owed replies: wait up to 10 s
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# run SERVER LABEL MODE LOADGEN_ARGS...: one measured run, appended to RESULTS.
run() {
    local name=$1 label=$2 mode=$3 result
    shift 3
    server_cmd "$name" "$mode"
    # ackloop's --max-connections defaults to 1024; the idle run needs more.
    if [[ $name != c && $label == idle:* ]]; then
        CMD+=(--max-connections $((IDLE_CONNS + 100)))
    fi
    start_server taskset -c 0
    result=$(taskset -c 1 "$LOADGEN" --tcp "$TCP" --udp "$UDP" --pid "$SERVER_PID" \
        --duration "$DURATION" "$@" 2>>"$OUT/loadgen.err") || true
    stop_server
    [[ $result == scenario=* ]] || die "loadgen failed against $name ($label): see $OUT/loadgen.err"
    echo "$name $label $result" >>"$RESULTS"
    printf '  %-8s %-12s %s\n' "$name" "$label" "$result" >&2
}

# startup_ms NAME: sets STARTUP_MS, the median milliseconds from starting the
# server to reading both address lines over START_RUNS runs. This includes
# bash's fork and exec, the same for every server; "spawn" measures that
# alone.
startup_ms() {
    local i t0 t1 times=()
    for ((i = 0; i < START_RUNS; i++)); do
        server_cmd "$1" once
        t0=$EPOCHREALTIME
        start_server
        t1=$EPOCHREALTIME
        stop_server
        times+=("$t0 $t1")
    done
    STARTUP_MS=$(printf '%s\n' "${times[@]}" | awk '{ print ($2 - $1) * 1000 }' | sort -n |
        awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
}

# build_before REV: builds revision REV's shipped binary into $OUT/before,
# in a worktree of its own (its dist profile, or release before dist existed).
build_before() {
    local tree=$OUT/before-tree profile=release
    rm -rf "$tree" && git worktree prune
    git worktree add --quiet --detach "$tree" "$1" || die "BEFORE=$1: not a revision"
    grep -q '^\[profile.dist\]' "$tree/Cargo.toml" && profile=dist
    (cd "$tree" && CARGO_TARGET_DIR=$PWD/../before-target cargo build --profile "$profile" --quiet --bin ackloop) ||
        die "BEFORE=$1 does not build"
    mkdir -p "$OUT/before"
    cp "$OUT/before-target/$profile/ackloop" "$OUT/before/ackloop"
    git worktree remove --force "$tree"
}

# --------------------------------------------------------------------- main

has() { [[ " $SERVERS " == *" $1 "* ]]; }

command -v taskset >/dev/null || die "taskset not found (util-linux)"
(($(nproc) >= 2)) || die "needs 2 CPUs: the server on CPU 0, the load generator on CPU 1"
# The idle run holds IDLE_CONNS sockets in the load generator and as many in
# the server; each process has its own limit, inherited from this shell.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) > IDLE_CONNS + 100)) ||
    die "open files limit $(ulimit -n) is too low for IDLE_CONNS=$IDLE_CONNS (raise the hard limit, or lower IDLE_CONNS)"

mkdir -p "$OUT"
: >"$RESULTS"
: >"$OUT/server.err"
: >"$OUT/loadgen.err"
echo "building ..." >&2
if has ackloop; then
    cargo build --profile dist --quiet ||
        die "ackloop does not build; SERVERS=c benches/compare.sh runs the C reference alone"
fi
if has before; then
    [[ -n ${BEFORE:-} ]] || die "SERVERS names before: set BEFORE to a git revision"
    build_before "$BEFORE"
fi
cargo build --profile dist --quiet --example loadgen
[[ -f $C_SRC ]] || die "C reference not found at $C_SRC (set C_SRC)"
${CC:-cc} -O2 -Wall -Wextra -o "$OUT/c_epoll" "$C_SRC"

echo "running $ROUNDS rounds of ${#SCENARIOS[@]} scenarios, ${DURATION}s each, servers: $SERVERS" >&2
for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round" >&2
    for scenario in "${SCENARIOS[@]}"; do
        read -r label mode args <<<"$scenario"
        for name in $SERVERS; do
            # shellcheck disable=SC2086 # args is a word list
            run "$name" "$label" "$mode" $args
        done
    done
done

echo "measuring start-up time ..." >&2
declare -A START SIZE
startup_ms spawn
SPAWN_MS=$STARTUP_MS
for name in $SERVERS; do
    startup_ms "$name"
    START[$name]=$STARTUP_MS
    server_cmd "$name" once
    strip -o "$OUT/$name.stripped" "${CMD[0]}"
    SIZE[$name]=$(stat -c %s "$OUT/$name.stripped")
done

# -------------------------------------------------------------------- table

echo
echo "Medians of $ROUNDS rounds, ${DURATION}s each; server on CPU 0, loadgen on CPU 1."
echo "cpu µs/op: server CPU time (utime+stime, 100 Hz ticks) per operation."
echo
awk -v servers="$SERVERS" '
function median(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function get(s, l, k) { return median(v[s, l, k]) }
{
    s = $1; l = $2
    if (!(l in seen)) { seen[l] = 1; order[++nl] = l }
    for (i = 3; i <= NF; i++) {
        eq = index($i, "="); k = substr($i, 1, eq - 1); x = substr($i, eq + 1)
        sub("/s$", "", x)
        v[s, l, k] = v[s, l, k] " " x
        if (k == "errors" || k == "lost") bad[s, l] += x
    }
}
END {
    ns = split(servers, sv, " ")
    both = (servers ~ /ackloop/ && servers ~ /(^| )c( |$)/)
    hasb = (servers ~ /ackloop/ && servers ~ /before/)
    head = "| scenario |"; rule = "|---|"
    for (i = 1; i <= ns; i++) { head = head " " sv[i] " cpu µs/op |"; rule = rule "---:|" }
    if (both) { head = head " ackloop/c |"; rule = rule "---:|" }
    if (hasb) { head = head " ackloop/before |"; rule = rule "---:|" }
    for (i = 1; i <= ns; i++) { head = head " " sv[i] " rate/s |"; rule = rule "---:|" }
    for (i = 1; i <= ns; i++) { head = head " " sv[i] " p99 µs |"; rule = rule "---:|" }
    head = head " errors+lost |"; rule = rule "---:|"
    print head; print rule
    for (o = 1; o <= nl; o++) {
        l = order[o]
        if (l ~ /^idle/) { idle = l; continue }
        row = "| " l " |"
        for (i = 1; i <= ns; i++) row = row sprintf(" %.3f |", get(sv[i], l, "server_cpu_us_per_op"))
        if (both) {
            a = get("ackloop", l, "server_cpu_us_per_op"); c = get("c", l, "server_cpu_us_per_op")
            row = row (c > 0 ? sprintf(" %.2f |", a / c) : " - |")
        }
        if (hasb) {
            a = get("ackloop", l, "server_cpu_us_per_op"); b = get("before", l, "server_cpu_us_per_op")
            row = row (b > 0 ? sprintf(" %.2f |", a / b) : " - |")
        }
        for (i = 1; i <= ns; i++) row = row sprintf(" %.0f |", get(sv[i], l, "rate"))
        for (i = 1; i <= ns; i++) row = row sprintf(" %.1f |", get(sv[i], l, "p99_us"))
        e = ""
        for (i = 1; i <= ns; i++) e = e (i > 1 ? " / " : "") bad[sv[i], l] + 0
        print row " " e " |"
    }
    if (idle != "") {
        print ""
        row = idle " connections, server RSS per connection:"
        for (i = 1; i <= ns; i++) row = row sprintf(" %s %.0f B (open %d);", sv[i], get(sv[i], idle, "rss_per_conn_b"), get(sv[i], idle, "open"))
        if (both) {
            c = get("c", idle, "rss_per_conn_b")
            row = row (c > 0 ? sprintf(" ackloop/c %.1f", get("ackloop", idle, "rss_per_conn_b") / c) : "")
        }
        print row
    }
}' "$RESULTS"
echo
echo "start to ready: median of $START_RUNS runs, from fork to both address lines read;"
echo "net: minus the same for a printf of two lines ($SPAWN_MS ms, fork+exec alone)."
for name in $SERVERS; do
    net=$(awk -v a="${START[$name]}" -v b="$SPAWN_MS" 'BEGIN { printf "%.2f", a - b }')
    printf '%-8s stripped binary %9s bytes, start to ready %s ms (net %s ms)\n' \
        "$name" "${SIZE[$name]}" "${START[$name]}" "$net"
done
echo
echo "raw results: $RESULTS"
if [[ -s $OUT/loadgen.err ]]; then
    echo "loadgen reported errors: see $OUT/loadgen.err"
fi
