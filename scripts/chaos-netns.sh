#!/usr/bin/env bash
# Real-network chaos (TESTING.md layer L5): the release `burrow` binary in network namespaces.
#
#   server namespace:  burrow serve (10.77.0.1:4000) + burrow proxy adding latency (:4001)
#   3 client namespaces (10.77.0.11-13), each joined by a veth pair to a bridge in a hub
#   namespace. During the chaos phase:
#     - nftables drops 10-30 % of each client's packets at random (both ways; the rate is
#       re-drawn every few seconds),
#     - tc tbf caps every client link at 256 kbit/s in both directions,
#     - client links flap (down for 2-5 s),
#     - the in-repo proxy adds 300 ms ± 200 ms each way (tc netem does not exist here).
#   Each client runs a writer loop (`burrow client exec`, one local transaction per write) and a
#   sync loop (`burrow client sync` every ~0.2 s, killed after CHAOS_SYNC_TIMEOUT s) for CHAOS_SECS.
#   Then the network heals, every client syncs until its outbox is empty plus two rounds, and
#   the script checks: pending_ops == 0 and no rejected ops on every client, identical query
#   results on every client, and on the server exactly the ops each client captured.
#
# Needs root. Exits 0 with "skipped: ..." when not root or when namespaces cannot be made.
# Environment: CHAOS_SECS (60), CHAOS_SEED (1), CHAOS_LOSS_MIN/MAX (10/30 %), CHAOS_RATE
# (256kbit), CHAOS_PROXY_PROFILE ("none:latency=300ms,jitter=200ms"; empty = no proxy),
# BURROW_BIN (default target/release/burrow, built if missing), CHAOS_KEEP=1 keeps the work
# directory.
set -euo pipefail

CHAOS_SECS=${CHAOS_SECS:-60}
CHAOS_SEED=${CHAOS_SEED:-1}
LOSS_MIN=${CHAOS_LOSS_MIN:-10}
LOSS_MAX=${CHAOS_LOSS_MAX:-30}
RATE=${CHAOS_RATE:-256kbit}
PROXY_PROFILE=${CHAOS_PROXY_PROFILE-none:latency=300ms,jitter=200ms}
CLIENTS=3
HEAL_SECS=180
SYNC_TIMEOUT=${CHAOS_SYNC_TIMEOUT:-45}

skip() {
    echo "skipped: $*"
    exit 0
}
log() { echo "chaos-netns: $*" >&2; }

[ "$(id -u)" -eq 0 ] || skip "chaos-netns.sh needs root (network namespaces, nftables, tc)"

cd "$(dirname "$0")/.."
ROOT=$(pwd)

need_pkgs=()
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v tc >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
command -v python3 >/dev/null 2>&1 || command -v sqlite3 >/dev/null 2>&1 || need_pkgs+=(sqlite3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"; } >/dev/null 2>&1; then
        skip "could not install ${need_pkgs[*]} with apt-get"
    fi
fi

BURROW=${BURROW_BIN:-$ROOT/target/release/burrow}
if [ ! -x "$BURROW" ] || { [ -n "$PROXY_PROFILE" ] && ! "$BURROW" proxy --help >/dev/null 2>&1; }; then
    log "building the release binary (cargo build --release -p burrow-cli)"
    cargo build --release -p burrow-cli >&2
    BURROW=$ROOT/target/release/burrow
fi

P="bch$$"
HUB="$P-hub"
SRV="$P-srv"
CNS=()
for i in $(seq 0 $((CLIENTS - 1))); do CNS+=("$P-c$i"); done
W=$(mktemp -d /tmp/burrow-chaos-netns.XXXXXX)
PIDS=()

cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do
        pkill -P "$pid" 2>/dev/null # a loop's running `burrow client`
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    for ns in "$HUB" "$SRV" "${CNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    if [ "${CHAOS_KEEP:-0}" = 1 ]; then
        log "work directory kept: $W"
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! ip netns add "$HUB" 2>/dev/null; then
    skip "cannot create network namespaces here"
fi
in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

# ---- topology -------------------------------------------------------------------------------
ip netns add "$SRV"
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
ip -n "$HUB" link set lo up
connect() { # ns, hub-side name, address
    ip netns exec "$HUB" ip link add "$2" type veth peer name eth0 netns "$1"
    ip -n "$HUB" link set "$2" master br0 up
    ip -n "$1" link set lo up
    ip -n "$1" addr add "$3/24" dev eth0
    ip -n "$1" link set eth0 up
}
connect "$SRV" vs 10.77.0.1
for i in $(seq 0 $((CLIENTS - 1))); do
    ip netns add "${CNS[$i]}"
    connect "${CNS[$i]}" "v$i" "10.77.0.1$((i + 1))"
done

# ---- server ---------------------------------------------------------------------------------
SECRET="chaos-$CHAOS_SEED-$$"
SCHEMA="$ROOT/examples/delivery.toml"
# `ip netns exec` execs the command, so $! is the server's own pid.
ip netns exec "$SRV" "$BURROW" serve --data "$W/srv" --schema "$SCHEMA" --listen 0.0.0.0:4000 \
    --secret "$SECRET" 2>"$W/server.log" &
PIDS+=($!)
DIRECT=http://10.77.0.1:4000
URL=$DIRECT
if [ -n "$PROXY_PROFILE" ]; then
    ip netns exec "$SRV" "$BURROW" proxy --listen 10.77.0.1:4001 --upstream 127.0.0.1:4000 \
        --profile "$PROXY_PROFILE" --seed "$CHAOS_SEED" --stats-every 10 2>"$W/proxy.log" &
    PIDS+=($!)
    URL=http://10.77.0.1:4001
fi
up=0
for _ in $(seq 1 100); do
    if in_ns "${CNS[0]}" bash -c 'exec 3<>/dev/tcp/10.77.0.1/4000' 2>/dev/null; then
        up=1
        break
    fi
    sleep 0.1
done
[ "$up" = 1 ] || {
    cat "$W/server.log" >&2
    echo "FAIL: the server in $SRV is not reachable from ${CNS[0]}" >&2
    exit 1
}

TOKENS=()
for i in $(seq 0 $((CLIENTS - 1))); do
    TOKENS+=("$("$BURROW" token --secret "$SECRET" --user "driver-$i" --ttl 2h)")
done
client() { # i, args...
    local i=$1
    shift
    in_ns "${CNS[$i]}" "$BURROW" client --db "$W/c$i.db" "$@"
}
json_field() { # name; reads flat JSON on stdin, prints the first value of that key
    local s re="\"$1\": *\"?([^,\"}]*)"
    s=$(cat)
    if [[ $s =~ $re ]]; then echo "${BASH_REMATCH[1]}"; fi
}

# Shared rows, created by client 0 and synced everywhere before the faults start.
setup_sql=""
for r in 0 1 2 3; do setup_sql+="INSERT INTO routes(id, driver_id, day) VALUES ('r-$r', 'd', 'mon');"; done
for s in 0 1 2 3 4 5 6 7; do
    setup_sql+="INSERT INTO shipments(id, route_id, status, address) VALUES ('s-$s', 'r-$((s % 4))', 'new', 'depot');"
done
client 0 --schema "$SCHEMA" exec --json "$setup_sql" | json_field ops_captured >"$W/setup.ops"
for i in $(seq 0 $((CLIENTS - 1))); do
    [ -f "$W/c$i.db" ] || client "$i" --schema "$SCHEMA" status >/dev/null
    client "$i" --token "${TOKENS[$i]}" sync --server "$DIRECT" >/dev/null
done
log "setup done: server, ${CLIENTS} clients, $(cat "$W/setup.ops") shared rows; chaos for ${CHAOS_SECS}s (seed $CHAOS_SEED)"

# ---- chaos ----------------------------------------------------------------------------------
END=$(($(date +%s) + CHAOS_SECS))

set_loss() { # i, percent
    in_ns "${CNS[$1]}" nft -f - <<EOF
table inet chaos
delete table inet chaos
table inet chaos {
    chain input { type filter hook input priority 0; policy accept; iifname "eth0" numgen random mod 100 < $2 drop; }
    chain output { type filter hook output priority 0; policy accept; oifname "eth0" numgen random mod 100 < $2 drop; }
}
EOF
}

faults_on() {
    for i in $(seq 0 $((CLIENTS - 1))); do
        in_ns "${CNS[$i]}" tc qdisc replace dev eth0 root tbf rate "$RATE" burst 16kbit latency 500ms
        ip netns exec "$HUB" tc qdisc replace dev "v$i" root tbf rate "$RATE" burst 16kbit latency 500ms
        set_loss "$i" "$LOSS_MIN"
    done
}

controller() {
    RANDOM=$CHAOS_SEED
    local flaps=0 draws=0
    while [ "$(date +%s)" -lt "$END" ]; do
        for i in $(seq 0 $((CLIENTS - 1))); do
            set_loss "$i" $((LOSS_MIN + RANDOM % (LOSS_MAX - LOSS_MIN + 1)))
            draws=$((draws + 1))
        done
        if [ $((RANDOM % 2)) -eq 0 ]; then
            local c=$((RANDOM % CLIENTS)) d=$((2 + RANDOM % 4))
            ip -n "$HUB" link set "v$c" down
            sleep "$d"
            ip -n "$HUB" link set "v$c" up
            flaps=$((flaps + 1))
        fi
        sleep $((2 + RANDOM % 3))
    done
    echo "$flaps $draws" >"$W/controller.out"
}

writer() { # i
    local i=$1 k=0 ops=0 fails=0 own=() sql
    RANDOM=$((CHAOS_SEED * 100 + i))
    while [ "$(date +%s)" -lt "$END" ]; do
        local s=$((RANDOM % 8)) r=$((RANDOM % 4))
        case $((RANDOM % 10)) in
        0 | 1 | 2 | 3) sql="UPDATE shipments SET status = 'c$i-$k', address = 'by c$i at $k' WHERE id = 's-$s'" ;;
        4) sql="UPDATE routes SET driver_id = 'd$i-$k' WHERE id = 'r-$r'" ;;
        5 | 6)
            sql="INSERT INTO scans(id, shipment_id, code, scanned_at) VALUES ('c$i-$k', 's-$s', 'code $k', $k)"
            own+=("c$i-$k")
            ;;
        7)
            sql="INSERT INTO shipments(id, route_id, status, address, weight_kg) VALUES ('c$i-$k', 'r-$r', 'new', 'street $k', $((RANDOM % 40)).5);"
            sql+="INSERT INTO scans(id, shipment_id, code, scanned_at) VALUES ('c$i-$k-scan', 'c$i-$k', 'first', $k);"
            sql+="UPDATE shipments SET status = 'tx c$i-$k' WHERE id = 's-$s'"
            ;;
        *)
            if [ ${#own[@]} -gt 0 ]; then
                local j=$((RANDOM % ${#own[@]}))
                sql="DELETE FROM scans WHERE id = '${own[$j]}'"
                own=("${own[@]:0:j}" "${own[@]:j+1}")
            else
                sql="UPDATE routes SET day = 'day $k' WHERE id = 'r-$r'"
            fi
            ;;
        esac
        local out
        if out=$(client "$i" exec --json "$sql" 2>>"$W/c$i.write.err"); then
            ops=$((ops + $(echo "$out" | json_field ops_captured)))
            k=$((k + 1))
        else
            fails=$((fails + 1))
        fi
        echo "$k $ops $fails" >"$W/c$i.writes"
        sleep 0.0$((5 + RANDOM % 5))
    done
}

syncer() { # i
    local i=$1 attempts=0 ok=0 resumed=0 prev_failed=0 killed=0 rc
    while [ "$(date +%s)" -lt "$END" ]; do
        attempts=$((attempts + 1))
        rc=0
        timeout "$SYNC_TIMEOUT" ip netns exec "${CNS[$i]}" "$BURROW" client --db "$W/c$i.db" \
            --token "${TOKENS[$i]}" sync --server "$URL" >/dev/null 2>>"$W/c$i.sync.err" || rc=$?
        if [ "$rc" -eq 0 ]; then
            ok=$((ok + 1))
            [ "$prev_failed" = 1 ] && resumed=$((resumed + 1))
            prev_failed=0
        else
            [ "$rc" -eq 124 ] && killed=$((killed + 1))
            prev_failed=1
        fi
        echo "$attempts $ok $resumed $killed $prev_failed" >"$W/c$i.syncs"
        sleep 0.2
    done
}

faults_on
controller &
CONTROLLER=$!
PIDS+=("$CONTROLLER")
LOOPS=()
for i in $(seq 0 $((CLIENTS - 1))); do
    writer "$i" &
    LOOPS+=($!)
    syncer "$i" &
    LOOPS+=($!)
done
PIDS+=("${LOOPS[@]}")
for pid in "${LOOPS[@]}"; do wait "$pid"; done
wait "$CONTROLLER" || log "the fault controller stopped early (rc $?)"
log "chaos phase over; healing"

# ---- heal -----------------------------------------------------------------------------------
for i in $(seq 0 $((CLIENTS - 1))); do
    in_ns "${CNS[$i]}" nft delete table inet chaos 2>/dev/null || true
    in_ns "${CNS[$i]}" tc qdisc del dev eth0 root 2>/dev/null || true
    ip netns exec "$HUB" tc qdisc del dev "v$i" root 2>/dev/null || true
    ip -n "$HUB" link set "v$i" up
done
heal_start=$(date +%s)
heal_attempts=0
pending() { client "$1" status --json | json_field pending_ops; }
for i in $(seq 0 $((CLIENTS - 1))); do
    while :; do
        heal_attempts=$((heal_attempts + 1))
        if client "$i" --token "${TOKENS[$i]}" sync --server "$DIRECT" >/dev/null 2>>"$W/c$i.sync.err" &&
            [ "$(pending "$i")" = 0 ]; then
            break
        fi
        if [ $(($(date +%s) - heal_start)) -gt "$HEAL_SECS" ]; then
            echo "FAIL: client $i still has $(pending "$i") pending ops after ${HEAL_SECS}s of healed network" >&2
            exit 1
        fi
        sleep 0.2
    done
done
for _ in 1 2; do
    for i in $(seq 0 $((CLIENTS - 1))); do
        client "$i" --token "${TOKENS[$i]}" sync --server "$DIRECT" >/dev/null
    done
done
heal_secs=$(($(date +%s) - heal_start))

# ---- checks ---------------------------------------------------------------------------------
failed=0
fail() {
    echo "FAIL: $*" >&2
    failed=1
}
server_sql() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$W/srv/burrow-server.db" "$1" <<'EOF'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
for row in c.execute(sys.argv[2]):
    print("|".join(str(v) for v in row))
EOF
    else
        sqlite3 "$W/srv/burrow-server.db" "$1"
    fi
}
total_ops=0
total_writes=0
attempts=0
oks=0
resumes=0
kills=0
first_hash=""
for i in $(seq 0 $((CLIENTS - 1))); do
    read -r k ops wfails <"$W/c$i.writes"
    [ "$i" = 0 ] && ops=$((ops + $(cat "$W/setup.ops")))
    read -r a o r kl last_failed <"$W/c$i.syncs"
    # The last chaos attempt failed: it resumed if the first healed sync completed (it did).
    [ "$last_failed" = 1 ] && r=$((r + 1))
    total_ops=$((total_ops + ops))
    total_writes=$((total_writes + k))
    attempts=$((attempts + a))
    oks=$((oks + o))
    resumes=$((resumes + r))
    kills=$((kills + kl))
    [ "$wfails" = 0 ] || fail "client $i: $wfails local writes failed (see $W/c$i.write.err)"
    status=$(client "$i" status --json)
    p=$(echo "$status" | json_field pending_ops)
    rj=$(echo "$status" | json_field rejected_ops)
    cid=$(echo "$status" | json_field client_id)
    [ "$p" = 0 ] || fail "client $i: $p ops still pending"
    [ "$rj" = 0 ] || fail "client $i: $rj ops rejected"
    on_server=$(server_sql "SELECT count(*), coalesce(max(client_seq), 0), coalesce(min(client_seq), 0) FROM ops JOIN clients USING(node) WHERE client_id = '$cid'")
    IFS='|' read -r n maxseq minseq <<<"$on_server"
    [ "$n" = "$ops" ] && [ "$maxseq" = "$ops" ] && { [ "$ops" = 0 ] || [ "$minseq" = 1 ]; } ||
        fail "client $i captured $ops ops; the server holds $n (seqs $minseq..$maxseq)"
    h=$( {
        client "$i" query --json "SELECT * FROM routes ORDER BY id"
        client "$i" query --json "SELECT * FROM shipments ORDER BY id"
        client "$i" query --json "SELECT * FROM scans ORDER BY id"
    } | sha256sum | cut -c1-16)
    log "client $i: $k writes, $ops ops captured, $n on the server; syncs: $a attempts, $o completed, $r resumed, $kl killed after ${SYNC_TIMEOUT}s; data $h"
    if [ -z "$first_hash" ]; then first_hash=$h; elif [ "$h" != "$first_hash" ]; then fail "client $i data differs ($h vs $first_hash)"; fi
done
server_ops=$(server_sql "SELECT count(*) FROM ops")
[ "$server_ops" = "$total_ops" ] || fail "server holds $server_ops ops, clients captured $total_ops"
read -r flaps draws <"$W/controller.out" 2>/dev/null || { flaps='?'; draws='?'; }
rate=$(python3 -c "print(f'{100*($oks+$resumes)/max($attempts,1):.1f}')" 2>/dev/null || echo "?")
echo "chaos-netns report: ${CHAOS_SECS}s, seed $CHAOS_SEED, loss ${LOSS_MIN}-${LOSS_MAX}% (re-drawn $draws times), tbf $RATE, $flaps link flaps, proxy '${PROXY_PROFILE}'"
echo "chaos-netns report: $total_writes writes, $total_ops ops captured, $server_ops ops on the server; sync attempts $attempts: $oks completed, $resumes resumed, $kills killed at ${SYNC_TIMEOUT}s; success rate $rate % (completed or resumed); healed in ${heal_secs}s ($heal_attempts attempts)"
if [ -n "$PROXY_PROFILE" ]; then tail -n1 "$W/proxy.log" | sed 's/^/chaos-netns report: /'; fi
if [ "$failed" = 0 ]; then
    echo "chaos-netns: PASS (no op lost or duplicated, $CLIENTS clients identical, outboxes empty)"
else
    CHAOS_KEEP=1
    echo "chaos-netns: FAILED" >&2
    exit 1
fi
