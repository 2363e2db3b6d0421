#!/usr/bin/env bash
# The toxiproxy API's figures (SPEC 14, issue 21), over real sockets:
#
#   benches/api.sh                                  # ackloop's --api
#   SERVERS="ackloop toxiproxy" benches/api.sh      # beside a real toxiproxy
#
# (a) ENDPOINTS proxies relaying line traffic (CONNS connections spread
#     over them, one request in flight each, to the C reference upstream),
#     and GETS `GET /proxies` one after the other on one keep-alive
#     connection meanwhile: the API's latency per request (goal: p99 under
#     1 ms for 50 endpoints).
# (b) The same traffic, alone and then with toxics added and removed at
#     RATE a second over those proxies (`examples/apiload.rs churn`: a
#     slow_close of 0, which does nothing to the bytes), alternating,
#     ROUNDS rounds of DURATION seconds each: the relayed traffic's p99
#     with the churn over without (goal: within 10 %); then the server's
#     CPU time per toxic change, changes as fast as they go, no traffic.
# (c) A fresh server, one proxy made to warm it up, then IDLE more, none
#     with a connection: RSS growth per proxy (goal: under 4 KiB).
#
# The server runs alone on CPU 0; the load generator, the upstream and
# the API client on CPU 1 (2-core machine). It builds what it needs: the
# dist ackloop, examples/loadgen and examples/apiload, and the C reference
# (../shared/bench/c_epoll/server.c, or C_SRC); toxiproxy is TOXIPROXY
# (../shared/bench/toxiproxy/toxiproxy-server, built by its build.sh).
#
# Environment: SERVERS [ackloop], ENDPOINTS [50], CONNS [50], GETS [1000],
# RATE [100], ROUNDS [3], DURATION [5], IDLE [255] (the warm-up proxy
# makes 256, the most a server holds). RT=1 runs the server and the API
# client at real-time priority (chrt -f 10; root): on a machine other work
# keeps busy, a woken process otherwise waits behind it for up to a
# scheduler period (about 8 ms here), and (a)'s p99 is that wait, not
# the API's.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

SERVERS=${SERVERS:-ackloop}
ENDPOINTS=${ENDPOINTS:-50}
CONNS=${CONNS:-50}
GETS=${GETS:-1000}
RATE=${RATE:-100}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
IDLE=${IDLE:-255}
# The project's shared directory, beside the clone (or beside a worktree's
# parent directory).
SHARED=../shared
[[ -d $SHARED ]] || SHARED=../../shared
C_SRC=${C_SRC:-$SHARED/bench/c_epoll/server.c}
TOXIPROXY=${TOXIPROXY:-$SHARED/bench/toxiproxy/toxiproxy-server}
OUT=target/bench
mkdir -p "$OUT"

die() { echo "api.sh: $*" >&2; exit 1; }
RT=${RT:-0}
# What runs the server and the API client: at real-time priority with RT=1.
PRIO=()
((RT)) && PRIO=(chrt -f 10)
for tool in cc taskset python3; do
    command -v "$tool" >/dev/null || die "needs $tool (apt-get install gcc util-linux python3)"
done
[[ -f $C_SRC ]] || die "C reference not found at $C_SRC (set C_SRC; see benches/compare.sh)"
[[ " $SERVERS " != *" toxiproxy "* || -x $TOXIPROXY ]] ||
    die "no toxiproxy at $TOXIPROXY (../shared/bench/toxiproxy/build.sh builds one; or set TOXIPROXY)"

echo "building..." >&2
cargo build --quiet --profile dist --bin ackloop
cargo build --quiet --release --example loadgen --example apiload
${CC:-cc} -O2 -o "$OUT/c_epoll" "$C_SRC"
LOADGEN=target/release/examples/loadgen
APILOAD=target/release/examples/apiload

# Processes to stop on exit (each started here, by its pid).
declare -A LIVE
cleanup() { for pid in "${!LIVE[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CPU CMD...: runs CMD on CPU, its pid in PID, its output in
# $OUT/NAME.out; waits (up to 5 s) for a line starting with `tcp ` or `api `.
start() {
    local name=$1 cpu=$2
    shift 2
    # Emptied here, not by the redirection: that runs in the child, and
    # the address lines of an earlier run must not be read meanwhile.
    : >"$OUT/$name.out"
    taskset -c "$cpu" "$@" >>"$OUT/$name.out" 2>"$OUT/$name.err" &
    PID=$!
    LIVE[$PID]=1
}
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    unset "LIVE[$1]"
}
# line_of FILE WORD: the address after WORD on FILE's line, once written.
line_of() {
    local deadline=$((SECONDS + 5)) addr
    while ((SECONDS < deadline)); do
        addr=$(awk -v w="$2" '$1 == w { print $2; exit }' "$1" 2>/dev/null)
        [[ -n $addr ]] && { echo "$addr"; return; }
        sleep 0.05
    done
    die "no '$2' line in $1: $(cat "${1%.out}.err")"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_server NAME: the server under test on CPU 0; its API in API.
start_server() {
    case $1 in
    ackloop)
        start server 0 "${PRIO[@]}" target/dist/ackloop --api 127.0.0.1:0 --tcp 127.0.0.1:0 --no-udp --log-level off
        API=$(line_of "$OUT/server.out" api) ;;
    toxiproxy)
        local port
        port=$(free_port)
        start server 0 "${PRIO[@]}" "$TOXIPROXY" -host 127.0.0.1 -port "$port"
        API=127.0.0.1:$port
        for _ in $(seq 100); do
            python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.1)" 2>/dev/null && break
            sleep 0.05
        done ;;
    *) die "unknown server $1 (ackloop, toxiproxy)" ;;
    esac
    SERVER_PID=$PID
}
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# traffic SECS: the relayed line traffic over every proxy, for SECS seconds.
traffic() {
    taskset -c 1 "$LOADGEN" --scenario line --tcp "$LISTENS" --conns "$CONNS" --depth 1 \
        --duration "$1" --pid "$SERVER_PID"
}

start upstream 1 "$OUT/c_epoll" --drain --tcp 127.0.0.1:0 --no-udp --mode line
UPSTREAM_PID=$PID
UPSTREAM=$(line_of "$OUT/upstream.out" tcp)

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; RT=$RT" >&2
for server in $SERVERS; do
    echo "== $server: $ENDPOINTS proxies, $CONNS connections relaying lines to the C reference"
    start_server "$server"
    LISTENS=$(taskset -c 1 "$APILOAD" create "$API" "$ENDPOINTS" "$UPSTREAM" bench)

    echo "-- (a) $GETS GET /proxies on one keep-alive connection, while the proxies relay"
    for round in $(seq "$ROUNDS"); do
        traffic $((DURATION + 5)) >"$OUT/api.traffic" &
        LOAD_PID=$!
        sleep 1 # the traffic under way
        gets=$(taskset -c 1 "${PRIO[@]}" "$APILOAD" get "$API" "$GETS")
        wait "$LOAD_PID"
        echo "round $round: $gets; traffic: $(grep -o 'rate=[^ ]*' "$OUT/api.traffic")"
    done

    echo "-- (b) relayed p99 alone and with $RATE toxic changes a second, $ROUNDS rounds of ${DURATION}s"
    : >"$OUT/api.p99"
    for round in $(seq "$ROUNDS"); do
        alone=$(traffic "$DURATION")
        taskset -c 1 "$APILOAD" churn "$API" "$ENDPOINTS" "$RATE" "$DURATION" bench >"$OUT/api.churn" &
        CHURN_PID=$!
        churned=$(traffic "$DURATION")
        wait "$CHURN_PID"
        a=$(field "$alone" p99_us) c=$(field "$churned" p99_us)
        echo "$a $c" >>"$OUT/api.p99"
        echo "round $round: p99 alone ${a} µs, with churn ${c} µs ($(awk "BEGIN { printf \"%.2f\", $c / $a }")); " \
            "cpu/op $(field "$alone" server_cpu_us_per_op) / $(field "$churned" server_cpu_us_per_op) µs; churn: $(cat "$OUT/api.churn")"
    done
    a=$(cut -d' ' -f1 "$OUT/api.p99" | median) c=$(cut -d' ' -f2 "$OUT/api.p99" | median)
    echo "median p99: alone $a µs, with churn $c µs, ratio $(awk "BEGIN { printf \"%.2f\", $c / $a }")"
    # What a change costs the server, steadier than a p99 on a shared
    # machine: its run time (ns, /proc/PID/schedstat) over CHANGES
    # changes as fast as they come, no traffic.
    ran=$(cut -d' ' -f1 "/proc/$SERVER_PID/schedstat")
    churn=$(taskset -c 1 "$APILOAD" churn "$API" "$ENDPOINTS" 100000 2 bench)
    ran=$(($(cut -d' ' -f1 "/proc/$SERVER_PID/schedstat") - ran))
    changes=$(field "$churn" changes)
    echo "server CPU per toxic change: $((ran / changes / 1000)) µs" \
        "($changes changes in 2 s, no traffic; at $RATE a second: $(awk "BEGIN { printf \"%.2f\", $ran / $changes * $RATE / 1e7 }") % of a core)"
    stop "$SERVER_PID"

    echo "-- (c) RSS per idle proxy"
    start_server "$server"
    taskset -c 1 "$APILOAD" create "$API" 1 "$UPSTREAM" warm >/dev/null
    before=$(rss_kib "$SERVER_PID")
    taskset -c 1 "$APILOAD" create "$API" "$IDLE" "$UPSTREAM" idle >/dev/null
    after=$(rss_kib "$SERVER_PID")
    echo "RSS ${before} KiB with 1 proxy, ${after} KiB with $((IDLE + 1)):" \
        "$(((after - before) * 1024 / IDLE)) bytes per proxy"
    stop "$SERVER_PID"
done
stop "$UPSTREAM_PID"
