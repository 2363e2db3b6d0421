# shellcheck shell=bash
# The relay scenarios of benches/compare.sh (sourced by it; see its header):
# an upstream, a relay in front of it, the load generator through it, and
# the relay table. Uses compare.sh's OUT, RESULTS, LOADGEN, DURATION,
# RELAYS, RELAY_IDLE_CONNS, UPSTREAM_CPU, LIVE, MEDIANS and its server functions.

# free_port: sets PORT to a port no TCP or UDP socket uses, below the
# ephemeral range (haproxy cannot listen on port 0 and say which it got).
free_port() {
    local used
    used=$(ss -Htuan | awk '{ n = split($5, a, ":"); print a[n] }')
    for _ in $(seq 100); do
        PORT=$((20000 + RANDOM % 12000))
        grep -qx "$PORT" <<<"$used" || return 0
    done
    die "found no free port"
}

# start_quiet PROTO PORT PREFIX...: runs "${CMD[@]}", which prints no
# address, behind the prefix and waits until it (not another process that
# took the port meanwhile) listens on PROTO port PORT; sets SERVER_PID.
start_quiet() {
    local proto=$1 port=$2
    shift 2
    "$@" "${CMD[@]}" >/dev/null 2>>"$OUT/server.err" &
    SERVER_PID=$!
    LIVE[$SERVER_PID]=1
    for _ in $(seq 50); do
        [[ $(ss -Hlnp "--$proto" "sport = :$port") == *"pid=$SERVER_PID,"* ]] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    die "${CMD[*]}: not listening on $proto port $port (see $OUT/server.err)"
}

# haproxy_cfg PORT MAXCONN [OPTION...]: a TCP-mode haproxy, one thread, from
# 127.0.0.1:PORT to the upstream, with the proxy options given (e.g.
# "splice-request"); its defaults otherwise.
haproxy_cfg() {
    local option options=
    for option in "${@:3}"; do options+=$'\n'"    option $option"; done
    cat >"$OUT/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $2
defaults
    mode tcp
    timeout connect 5s
    timeout client 1m
    timeout server 1m
listen relay
    bind 127.0.0.1:$1
    server upstream $UP_TCP$options
EOF
}

# start_relay NAME PROTO LABEL: starts relay NAME on CPU 0 in front of the
# upstream (UP_TCP, UP_UDP); sets SERVER_PID, and TCP and UDP to the
# address the load generator talks to.
start_relay() {
    local name=$1 proto=$2 label=$3 bin=target/dist/ackloop max=$((RELAY_IDLE_CONNS + 100))
    case $name in
    ackloop | before)
        [[ $name == before ]] && bin=$OUT/before/ackloop
        CMD=("$bin" --tcp 127.0.0.1:0 --udp 127.0.0.1:0 --log-level off
            --upstream "tcp:$UP_TCP" --upstream "udp:$UP_UDP")
        # --max-connections (pairs) defaults to 1024; relay:idle needs more.
        [[ $label == relay:idle* ]] && CMD+=(--max-connections "$max")
        start_server setsid taskset -c 0
        return
        ;;
    haproxy | haproxy-splice)
        free_port
        if [[ $name == haproxy ]]; then
            haproxy_cfg "$PORT" "$max"
        else
            # Both directions by splice(2) through a pipe, as ackloop's
            # plain bulk.
            haproxy_cfg "$PORT" "$max" splice-request splice-response
        fi
        CMD=(haproxy -db -f "$OUT/haproxy.cfg")
        ;;
    socat)
        free_port
        local listen=TCP-LISTEN connect=TCP:$UP_TCP
        [[ $proto == udp ]] && listen=UDP-LISTEN connect=UDP:$UP_UDP
        CMD=(socat "$listen:$PORT,bind=127.0.0.1,fork,reuseaddr" "$connect")
        ;;
    ackloop-api)
        # A named endpoint (SPEC 14), as the API or --config makes one.
        free_port
        printf '[{"name":"bench","listen":"127.0.0.1:%s","upstream":"%s"}]\n' \
            "$PORT" "$UP_TCP" >"$OUT/proxies.json"
        CMD=("$bin" --no-udp --tcp 127.0.0.1:0 --log-level off --config "$OUT/proxies.json")
        [[ $label == relay:idle* ]] && CMD+=(--max-connections "$max")
        ;;
    toxiproxy)
        # The real toxiproxy (../shared/bench/toxiproxy/build.sh builds it,
        # or $TOXIPROXY_SERVER), its proxy from its own -config file.
        free_port
        printf '[{"name":"bench","listen":"127.0.0.1:%s","upstream":"%s"}]\n' \
            "$PORT" "$UP_TCP" >"$OUT/toxiproxy.json"
        local api=$((PORT + 1))
        CMD=("${TOXIPROXY_SERVER:-../shared/bench/toxiproxy/toxiproxy-server}"
            -host 127.0.0.1 -port "$api" -config "$OUT/toxiproxy.json")
        ;;
    *) die "unknown relay $name (RELAYS takes ackloop, ackloop-api, toxiproxy, haproxy, haproxy-splice, socat and before)" ;;
    esac
    start_quiet "$proto" "$PORT" setsid taskset -c 0
    TCP=127.0.0.1:$PORT UDP=127.0.0.1:$PORT
}

# relay_names LABEL: sets NAMES, what runs in relay scenario LABEL: direct
# (the upstream alone, for the added latency) and the relays that can.
relay_names() {
    local name skip=
    NAMES=direct
    case $1 in
    # plain: ackloop without --upstream, its idle connection beside its
    # idle pair. socat forks a process per connection: left out.
    relay:idle*) NAMES=plain skip=socat ;;
    relay:udp*) skip="haproxy ackloop-api toxiproxy" ;; # TCP relays only
    esac
    for name in $RELAYS; do
        # haproxy-splice is haproxy: skipped where haproxy is.
        [[ " $skip " == *" $name "* || " $skip " == *" ${name%-splice} "* ]] || NAMES+=" $name"
    done
}

# run_relay NAME LABEL MODE LOADGEN_ARGS...: one measured run through relay
# NAME (direct: to the upstream itself; plain: ackloop without upstream),
# the upstream in MODE on UPSTREAM_CPU; appended to RESULTS.
run_relay() {
    local name=$1 label=$2 mode=$3 proto=tcp upstream= result
    shift 3
    [[ $label == relay:udp* ]] && proto=udp
    if [[ $name == plain ]]; then
        server_cmd ackloop line
        CMD+=(--max-connections $((RELAY_IDLE_CONNS + 100)))
        start_server setsid taskset -c 0
    else
        CMD=("$OUT/c_epoll" --drain --tcp 127.0.0.1:0 --udp 127.0.0.1:0 --mode "$mode")
        start_server setsid taskset -c "$UPSTREAM_CPU"
        upstream=$SERVER_PID UP_TCP=$TCP UP_UDP=$UDP
        [[ $name == direct ]] || start_relay "$name" "$proto" "$label"
    fi
    # direct: SERVER_PID is the upstream's, and so is the CPU time.
    result=$(taskset -c 1 "$LOADGEN" --tcp "$TCP" --udp "$UDP" --pid "$SERVER_PID" \
        --duration "$DURATION" "$@" 2>>"$OUT/loadgen.err") || true
    [[ $SERVER_PID == "$upstream" ]] || stop_server
    [[ -z $upstream ]] || stop "$upstream"
    [[ $result == scenario=* ]] || die "loadgen failed through $name ($label): see $OUT/loadgen.err"
    echo "$name $label $result" >>"$RESULTS"
    printf '  %-8s %-14s %s\n' "$name" "$label" "$result" >&2
}

# need_tool PROGRAM [PACKAGE]: installs the Debian package (named as the
# program by default) with apt-get when the program is missing.
need_tool() {
    local package=${2:-$1}
    command -v "$1" >/dev/null && return 0
    echo "installing $package with apt-get ..." >&2
    { apt-get install -y -qq "$package" || { apt-get update -qq && apt-get install -y -qq "$package"; }; } >>"$OUT/apt.log" 2>&1 ||
        die "$1 is missing and apt-get could not install $package (see $OUT/apt.log; run as root on Debian or Ubuntu)"
}

# relay_table: the relay scenarios' medians, one row per scenario; then the
# idle pairs' memory.
relay_table() {
    echo
    echo "Relays: medians of $ROUNDS rounds, ${DURATION}s each; relay on CPU 0, upstream (C reference)"
    echo "on CPU $UPSTREAM_CPU, loadgen on CPU 1. cpu: the relay process's CPU time (utime+stime, with its children,"
    echo "100 Hz ticks) per operation; relay:bulk per MiB, its rate in MiB/s, its latency the time"
    echo "${BULK_MIB} MiB took. added: p50 / p99 through the relay minus the same direct to the upstream."
    echo
    awk -v kind=relay -v relays="$RELAYS" "$MEDIANS"'
function cell(x, fmt) { return x == "" ? " - |" : sprintf(" " fmt " |", x) }
function ratio(a, b) { return a == "" || b == "" || b <= 0 ? " - |" : sprintf(" %.2f |", a / b) }
function added(r, l,    d50, d99, r50, r99) {
    d50 = get("direct", l, "p50_us"); d99 = get("direct", l, "p99_us")
    r50 = get(r, l, "p50_us"); r99 = get(r, l, "p99_us")
    if (d50 == "" || r50 == "") return " - |"
    # bulk: one sample, the whole transfer, in ms
    if (l ~ /bulk/) return sprintf(" %+.0f ms |", (r50 - d50) / 1000)
    return sprintf(" %+.1f / %+.1f |", r50 - d50, r99 - d99)
}
function column(name) { head = head " " name " |"; rule = rule "---:|" }
END {
    nr = split(relays, rv, " ")
    ack = (" " relays " ") ~ / ackloop /
    head = "| relay scenario |"; rule = "|---|"
    for (i = 1; i <= nr; i++) column(rv[i] " cpu µs/op")
    for (i = 1; i <= nr; i++) if (ack && rv[i] != "ackloop") column("ackloop/" rv[i])
    column("direct rate/s")
    for (i = 1; i <= nr; i++) column(rv[i] " rate/s")
    column("direct p50 / p99 µs")
    for (i = 1; i <= nr; i++) column(rv[i] " added µs")
    errors = "errors+lost (direct"
    for (i = 1; i <= nr; i++) errors = errors " / " rv[i]
    column(errors ")")
    print head; print rule
    for (o = 1; o <= nl; o++) {
        l = order[o]
        if (l ~ /^relay:idle/) { idle = l; continue }
        row = "| " l " |"
        for (i = 1; i <= nr; i++) row = row cell(get(rv[i], l, "server_cpu_us_per_op"), "%.3f")
        a = get("ackloop", l, "server_cpu_us_per_op")
        for (i = 1; i <= nr; i++) if (ack && rv[i] != "ackloop") row = row ratio(a, get(rv[i], l, "server_cpu_us_per_op"))
        row = row cell(get("direct", l, "rate"), "%.0f")
        for (i = 1; i <= nr; i++) row = row cell(get(rv[i], l, "rate"), "%.0f")
        d50 = get("direct", l, "p50_us")
        if (d50 == "") row = row " - |"
        else if (l ~ /bulk/) row = row sprintf(" %.0f ms |", d50 / 1000)
        else row = row sprintf(" %.1f / %.1f |", d50, get("direct", l, "p99_us"))
        for (i = 1; i <= nr; i++) row = row added(rv[i], l)
        e = bad["direct", l] + 0
        for (i = 1; i <= nr; i++) e = e " / " (get(rv[i], l, "ops") == "" ? "-" : bad[rv[i], l] + 0)
        print row " " e " |"
    }
    if (idle != "") {
        print ""
        n = substr(idle, length("relay:idle:") + 1)
        row = n " idle relayed pairs, relay RSS per pair:"
        for (i = 1; i <= nr; i++) {
            x = get(rv[i], idle, "rss_per_conn_b")
            if (x != "") row = row sprintf(" %s %.0f B (open %d);", rv[i], x, get(rv[i], idle, "open"))
        }
        p = get("plain", idle, "rss_per_conn_b"); a = get("ackloop", idle, "rss_per_conn_b")
        if (p != "") row = row sprintf(" ackloop without --upstream, per idle connection: %.0f B (open %d)", p, get("plain", idle, "open"))
        if (p > 0 && a != "") row = row sprintf("; ackloop pair/connection %.1f", a / p)
        print row
    }
}' "$RESULTS"
}
