#!/usr/bin/env bash
# Compare ackloop with the C epoll reference server (../shared/bench/c_epoll,
# not in this repository: the project's shared baseline, in the shared
# directory laid beside the clone; C_SRC points elsewhere):
# server CPU time per operation, rate and p99 latency, RSS per idle
# connection, stripped binary size and time from start to ready. Then ackloop
# as a relay (--upstream) beside haproxy and socat: relay CPU time per
# operation, added latency, RSS per idle relayed pair.
#
#   benches/compare.sh                 # from the repository root
#   ROUNDS=5 DURATION=5 benches/compare.sh
#   SERVERS=c ONLY=line benches/compare.sh   # the C reference alone
#   BEFORE=05b89a1 SERVERS="before ackloop c" benches/compare.sh
#                                      # an older revision in the same run
#   ONLY=relay ROUNDS=8 benches/compare.sh   # the relay scenarios alone
#
# Environment (defaults in brackets):
#   ROUNDS [3]         rounds; each runs every scenario once per server, the
#                      servers alternating (A B A B ...); medians are reported
#   DURATION [3]       seconds per measured run
#   SERVERS ["ackloop c"]  which servers to run (ackloop, c, before; rules16
#                      and journal: ackloop with 16 rules that match nothing,
#                      or with --journal /dev/null)
#   BEFORE             a git revision, built in a worktree under target/bench,
#                      run as the server "before" (before/after in one run)
#   IDLE_CONNS [10000] connections in the idle scenario
#   ONLY [all]         run only the scenarios whose label starts with one of
#                      these words (e.g. ONLY="udp line:64x16"; ONLY=relay
#                      for the relay scenarios alone)
#   START_RUNS [20]    runs for the start-up time median
#   C_SRC [../shared/bench/c_epoll/server.c]
#   RELAYS ["ackloop haproxy socat"]  relays for the relay scenarios
#                      (ackloop, ackloop-api: a named endpoint from --config,
#                      toxiproxy: $TOXIPROXY_SERVER or the one
#                      ../shared/bench/toxiproxy/build.sh builds, haproxy,
#                      haproxy-splice: with option splice-request and
#                      splice-response, socat, before); "direct", the load
#                      generator talking to the upstream itself, always runs
#   BEFORE_BIN         an ackloop binary to run as "before" instead of
#                      building BEFORE (e.g. a copy of an earlier build)
#   BULK_MIB [1024]    MiB sent one way in the relay:bulk scenario
#   RELAY_IDLE_CONNS [5000]  idle pairs in relay:idle (a pair holds two
#                      descriptors in the relay)
#   UPSTREAM_CPU [1]   the CPU the relays' upstream is pinned to
#
# Each server runs pinned to CPU 0 (taskset -c 0), the load generator
# (examples/loadgen/, one thread) to CPU 1. The load generator is often
# the bottleneck, so server CPU per operation (from /proc/PID/stat) is the
# figure to compare, not the rate. Everything listens on and talks to
# 127.0.0.1 only. Build products and raw results go to target/bench/.
#
# Relay scenarios (labels relay:*): the same upstream for every relay, the C
# reference server (line mode; once mode for UDP), started afresh for each
# run. The relay runs alone on CPU 0, as the servers do; the upstream shares
# CPU 1 with the load generator, so that nothing else is scheduled on the
# measured relay's CPU, and the direct runs find the upstream where the
# relayed ones do (the added latency is then the relay's alone). ackloop runs as `--upstream tcp:UP --upstream udp:UP`
# (the dist build, --log-level off), haproxy in TCP mode with nbthread 1
# (TCP only: it relays no UDP), socat with TCP-LISTEN,fork,reuseaddr and
# UDP-LISTEN,fork,reuseaddr (its CPU time includes its forked children).
# The script installs haproxy, socat and ss (iproute2) with apt-get when they
# are missing: it expects to run as root on Debian or Ubuntu for that.
set -euo pipefail
export LC_ALL=C # a '.' decimal point in $EPOCHREALTIME and awk
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
SERVERS=${SERVERS:-ackloop c}
IDLE_CONNS=${IDLE_CONNS:-10000}
START_RUNS=${START_RUNS:-20}
C_SRC=${C_SRC:-../shared/bench/c_epoll/server.c}
RELAYS=${RELAYS-ackloop haproxy socat}
BULK_MIB=${BULK_MIB:-1024}
RELAY_IDLE_CONNS=${RELAY_IDLE_CONNS:-5000}
UPSTREAM_CPU=${UPSTREAM_CPU:-1}
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
    # label, upstream mode, load generator arguments
    "relay:64x1    line --scenario line --conns 64 --depth 1"
    "relay:64x16   line --scenario line --conns 64 --depth 16"
    "relay:bulk    line --scenario bulk --mib $BULK_MIB"
    "relay:udp:32  once --scenario udp --conns 32"
    "relay:idle:$RELAY_IDLE_CONNS line --scenario idle --conns $RELAY_IDLE_CONNS"
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

# The processes still running, for the exit trap. Measured ones are started
# with setsid, leading a process group of their own, so that stopping one
# also stops whatever it forked (socat's children).
declare -A LIVE
SERVER_PID=
cleanup() {
    local pid
    for pid in "${!LIVE[@]}"; do
        signal KILL "$pid"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# signal SIG PID: to PID's process group if PID leads one, else to PID.
signal() {
    kill -s "$1" -- "-$2" 2>/dev/null || kill -s "$1" "$2" 2>/dev/null || true
}

# server_cmd NAME MODE: the server's command line, in CMD.
server_cmd() {
    local addrs=(--tcp 127.0.0.1:0 --udp 127.0.0.1:0 --mode "$2")
    case $1 in
    ackloop) CMD=(target/dist/ackloop "${addrs[@]}" --log-level off) ;;
    before) CMD=("$OUT/before/ackloop" "${addrs[@]}" --log-level off) ;;
    # Issue 16's costs: 16 rules that match nothing (each message tries them
    # all, the worst case), and a journal written to /dev/null (its
    # encoding and writes, not a disk's speed).
    rules16)
        CMD=(target/dist/ackloop "${addrs[@]}" --log-level off)
        for i in $(seq 16); do CMD+=(--rule "exact:no such message $i => never"); done
        ;;
    journal) CMD=(target/dist/ackloop "${addrs[@]}" --log-level off --journal /dev/null) ;;
    c) CMD=("$OUT/c_epoll" --drain "${addrs[@]}") ;;
    # Start-up baseline: a process that prints two lines and exits at once.
    spawn) CMD=(printf 'tcp -\nudp -\n') ;;
    *) die "unknown server $1 (SERVERS takes ackloop, c, before, rules16 and journal)" ;;
    esac
}

# start_server PREFIX...: runs "${CMD[@]}" behind the given prefix (setsid,
# taskset, or nothing), reads its two address lines; sets SERVER_PID, TCP,
# UDP. The process substitution's pid is the server's: each layer execs.
start_server() {
    local fd line
    exec {fd}< <(exec "$@" "${CMD[@]}" 2>>"$OUT/server.err")
    SERVER_PID=$!
    LIVE[$SERVER_PID]=1
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

# stop PID: SIGTERM, up to 10 s to finish (ackloop may finish owed
# replies), then SIGKILL to what is left of its group.
stop() {
    signal TERM "$1"
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    signal KILL "$1"
    wait "$1" 2>/dev/null || true
    unset "LIVE[$1]"
}

stop_server() {
    stop "$SERVER_PID"
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
    start_server setsid taskset -c 0
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

# The relay scenarios' functions (start_relay, run_relay, relay_table, ...).
# shellcheck source=benches/relay.sh
source benches/relay.sh

# --------------------------------------------------------------------- main

has() { [[ " $SERVERS " == *" $1 "* ]]; }
relays() { [[ " $RELAYS " == *" $1 "* ]]; }

# The kinds of scenario chosen: servers alone (PLAIN), relays (RELAYED).
PLAIN=0 RELAYED=0
for scenario in "${SCENARIOS[@]}"; do
    case $scenario in
    relay:*) RELAYED=1 ;;
    *) PLAIN=1 ;;
    esac
done

command -v taskset >/dev/null || die "taskset not found (util-linux)"
(($(nproc) >= 2)) || die "needs 2 CPUs: the server on CPU 0, the load generator on CPU 1"
# The idle run holds IDLE_CONNS sockets in the load generator and as many in
# the server; each process has its own limit, inherited from this shell. A
# relayed pair holds two in the relay.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
((!PLAIN || $(ulimit -n) > IDLE_CONNS + 100)) ||
    die "open files limit $(ulimit -n) is too low for IDLE_CONNS=$IDLE_CONNS (raise the hard limit, or lower IDLE_CONNS)"
((!RELAYED || $(ulimit -n) > 2 * RELAY_IDLE_CONNS + 200)) ||
    die "open files limit $(ulimit -n) is too low for RELAY_IDLE_CONNS=$RELAY_IDLE_CONNS (raise the hard limit, or lower RELAY_IDLE_CONNS)"

mkdir -p "$OUT"
: >"$RESULTS"
: >"$OUT/server.err"
: >"$OUT/loadgen.err"
if ((RELAYED)); then
    need_tool ss iproute2
    for tool in haproxy socat; do
        if relays "$tool" || relays "$tool-splice"; then need_tool "$tool"; fi
    done
fi
echo "building ..." >&2
if has ackloop || has rules16 || has journal || ((RELAYED)); then
    cargo build --profile dist --quiet ||
        die "ackloop does not build; SERVERS=c ONLY=line benches/compare.sh runs the C reference alone"
fi
if has before || { ((RELAYED)) && relays before; }; then
    if [[ -n ${BEFORE_BIN:-} ]]; then
        mkdir -p "$OUT/before" && cp "$BEFORE_BIN" "$OUT/before/ackloop"
    else
        [[ -n ${BEFORE:-} ]] || die "SERVERS or RELAYS names before: set BEFORE to a git revision (or BEFORE_BIN to a binary)"
        build_before "$BEFORE"
    fi
fi
cargo build --profile dist --quiet --example loadgen
[[ -f $C_SRC ]] || die "C reference not found at $C_SRC: it is not in this repository but in the project's shared directory beside the clone (../shared/bench/c_epoll/server.c, see its README); set C_SRC=path/to/server.c"
${CC:-cc} -O2 -Wall -Wextra -o "$OUT/c_epoll" "$C_SRC"

echo "running $ROUNDS rounds of ${#SCENARIOS[@]} scenarios, ${DURATION}s each, servers: $SERVERS, relays: $RELAYS" >&2
for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round" >&2
    for scenario in "${SCENARIOS[@]}"; do
        read -r label mode args <<<"$scenario"
        if [[ $label == relay:* ]]; then
            relay_names "$label"
            runner=run_relay
        else
            NAMES=$SERVERS runner=run
        fi
        for name in $NAMES; do
            # shellcheck disable=SC2086 # args is a word list
            $runner "$name" "$label" "$mode" $args
        done
    done
done

declare -A START SIZE
if ((PLAIN)); then
    echo "measuring start-up time ..." >&2
    startup_ms spawn
    SPAWN_MS=$STARTUP_MS
    for name in $SERVERS; do
        startup_ms "$name"
        START[$name]=$STARTUP_MS
        server_cmd "$name" once
        strip -o "$OUT/$name.stripped" "${CMD[0]}"
        SIZE[$name]=$(stat -c %s "$OUT/$name.stripped")
    done
fi

# -------------------------------------------------------------------- table

# The awk code both tables share: the medians over the rounds of field k for
# server (or relay) s in scenario l, get(s, l, k), "" when there is none;
# bad[s, l], the errors and losses summed. It reads RESULTS lines "NAME
# LABEL key=value ..." of one kind (plain: the servers', relay: the relays').
MEDIANS='
function median(list,    a, n, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function get(s, l, k) { return median(v[s, l, k]) }
(kind == "relay") != ($2 ~ /^relay:/) { next }
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
'

if ((PLAIN)); then
    echo
    echo "Medians of $ROUNDS rounds, ${DURATION}s each; server on CPU 0, loadgen on CPU 1."
    echo "cpu µs/op: server CPU time (utime+stime, 100 Hz ticks) per operation."
    echo
    awk -v kind=plain -v servers="$SERVERS" "$MEDIANS"'
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
fi
if ((RELAYED)); then
    relay_table
fi
echo
echo "raw results: $RESULTS"
if [[ -s $OUT/loadgen.err ]]; then
    echo "loadgen reported errors: see $OUT/loadgen.err"
fi
