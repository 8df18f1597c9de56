#!/usr/bin/env bash
# The stockd benchmark suite: one command, one run, figures side by side.
#
#   benches/suite.sh                   # 10 s per measurement, about 3 minutes in all
#   SUITE_QUICK=1 benches/suite.sh     # 2 s per measurement, for CI
#   SUITE_SECONDS=30 benches/suite.sh  # longer runs
#
# It builds the release binaries, starts target/release/stockd on 127.0.0.1 with a
# temporary data folder, pinned to one core (taskset -c 0), and drives it with
# target/release/stockd-load pinned to the other (taskset -c 1), then prints:
#   - health, browse, Reserve and flash-sale throughput at the same concurrency (50), and
#     the ratios browse ÷ health and Reserve ÷ health;
#   - Reserve p50/p99/p99.9 at 50% of its maximum throughput (open loop, --rps);
#   - sync ÷ async durability throughput for Reserve (the server restarted with
#     --durability async);
#   - Reserve with one live WatchEvents consumer ÷ without, in alternating pairs of runs,
#     each on a fresh server (so neither side inherits the other's holds or checkpoints);
#   - the disk's floor: what one fdatasync of 4 KiB costs alone (python3);
#   - one hot product against 10,000 products spread evenly;
#   - stockd-load against h2load (nghttp2-client) on the same server with the same
#     gRPC-framed request, so a slow load generator cannot pass for a slow server;
#   - shard scaling: Reserve (1 and 3 lines), GetHold and the flash sale at --shards 8
#     against --shards 1, on the same pinned core (goal: 8 ÷ 1 ≥ 0.90).
#
# Environment:
#   SUITE_SECONDS      seconds per measurement (default 10; 2 with SUITE_QUICK=1)
#   SUITE_QUICK=1      quick mode for CI
#   SUITE_CONCURRENCY  concurrent callers (default 50)
#   SUITE_CONNECTIONS  HTTP/2 connections they share (default 5; h2load gets the same)
#   SUITE_SERVER_CPU   core of the server (default 0); SUITE_LOAD_CPU: of the load (1)
#   SUITE_SHARDS       server shards (default 1: it has one core)
#   SUITE_WATCH_PAIRS  watcher comparison: pairs of runs per durability (default 4; 1 quick)
#   SUITE_SCALE_PAIRS  shard scaling: pairs of fresh servers, 1 and 8 shards (default 2; 1 quick)
#   SUITE_KEEP=1       keep the JSON reports and the server logs
#   SUITE_NO_BUILD=1   use the binaries already in target/release
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${SUITE_QUICK:-0}
if [[ "$QUICK" == 1 ]]; then
    SECS=${SUITE_SECONDS:-2}
else
    SECS=${SUITE_SECONDS:-10}
fi
CONC=${SUITE_CONCURRENCY:-50}
CONNS=${SUITE_CONNECTIONS:-5}
SERVER_CPU=${SUITE_SERVER_CPU:-0}
LOAD_CPU=${SUITE_LOAD_CPU:-1}
SHARDS=${SUITE_SHARDS:-1}
STREAMS=$(((CONC + CONNS - 1) / CONNS))
STOCKD=$ROOT/target/release/stockd
LOAD=$ROOT/target/release/stockd-load
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stockd-suite.XXXXXX")
SERVER_PID=""
SERVER_MODE=""
DATA=""
COMMANDS=$WORK/commands.txt
: >"$COMMANDS"

log() { printf '%s\n' "$*" >&2; }

cleanup() {
    stop_server || true
    if [[ "${SUITE_KEEP:-0}" == 1 ]]; then
        log "reports kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v python3 >/dev/null || { log "suite.sh needs python3 (to read the JSON reports)"; exit 2; }

# --- pinning --------------------------------------------------------------------------
SERVER_PIN=()
LOAD_PIN=()
if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
    SERVER_PIN=(taskset -c "$SERVER_CPU")
    LOAD_PIN=(taskset -c "$LOAD_CPU")
    PINNING="stockd on CPU $SERVER_CPU, stockd-load and h2load on CPU $LOAD_CPU (taskset)"
else
    PINNING="NOT pinned (taskset missing or fewer than 2 cores): figures are indicative only"
fi

# --- build ----------------------------------------------------------------------------
if [[ "${SUITE_NO_BUILD:-0}" != 1 ]]; then
    log "building release binaries (cargo build --release --bin stockd --bin stockd-load)"
    cargo build --release --quiet --bin stockd --bin stockd-load
fi

# --- h2load ---------------------------------------------------------------------------
if ! command -v h2load >/dev/null; then
    log "h2load missing: installing nghttp2-client"
    if [[ $(id -u) == 0 ]]; then
        (apt-get install -y -qq nghttp2-client >/dev/null 2>&1 ||
            (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nghttp2-client >/dev/null 2>&1)) || true
    elif command -v sudo >/dev/null; then
        sudo -n apt-get install -y -qq nghttp2-client >/dev/null 2>&1 || true
    fi
fi
HAVE_H2LOAD=0
command -v h2load >/dev/null && HAVE_H2LOAD=1

# --- server ---------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() { # durability
    SERVER_MODE=$1
    DATA=$(mktemp -d "$WORK/data-$1.XXXXXX")
    PORT=$(free_port)
    local metrics
    metrics=$(free_port)
    local cmd=("${SERVER_PIN[@]}" "$STOCKD" --grpc-addr "127.0.0.1:$PORT" --metrics-addr "127.0.0.1:$metrics"
        --data-dir "$DATA" --durability "$1" --shards "$SHARDS")
    echo "RUST_LOG=warn ${cmd[*]}" >>"$COMMANDS"
    RUST_LOG=warn "${cmd[@]}" >"$DATA.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if "$LOAD" health -n 1 -c 1 -t 1s --connect-timeout 1s -O json "127.0.0.1:$PORT" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "stockd did not start:"
    cat "$DATA.log" >&2
    exit 1
}

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "stockd ($SERVER_MODE) did not exit within 10 s of SIGTERM: killed" >>"$WORK/warnings.txt"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    if [[ -n "$DATA" && "${SUITE_KEEP:-0}" != 1 ]]; then
        rm -rf "$DATA" "$DATA.log"
    fi
    DATA=""
}

# load NAME ARGS...: runs stockd-load pinned, JSON report in $WORK/NAME.json.
load() {
    local name=$1
    shift
    local cmd=("${LOAD_PIN[@]}" "$LOAD" "$@" -O json -o "$WORK/$name.json" "127.0.0.1:$PORT")
    echo "${cmd[*]}" >>"$COMMANDS"
    log "  $name"
    local status=0 before
    before=$(server_ticks)
    "${cmd[@]}" || status=$?
    # The server's CPU over the run (seeding included), in clock ticks.
    echo "$(($(server_ticks) - before)) $(getconf CLK_TCK)" >"$WORK/$name.cpu"
    # 1 is a scenario check failing (reported in the table); anything else is an error.
    if [[ $status -ne 0 && $status -ne 1 ]]; then
        log "stockd-load failed ($status): ${cmd[*]}"
        exit 1
    fi
}

# The server's user + system CPU so far, in clock ticks (0 when unknown).
server_ticks() {
    awk '{print $14 + $15}' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0
}

jget() { # FILE PYTHON-EXPRESSION-ON-d
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

# h2load NAME PATH BODY-FILE: h2load pinned like stockd-load, output in $WORK/NAME.txt.
h2() {
    local name=$1 path=$2 body=$3
    local cmd=("${LOAD_PIN[@]}" h2load -c "$CONNS" -m "$STREAMS" -t 1 -D "$SECS" -d "$body"
        -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$PORT$path")
    echo "${cmd[*]}" >>"$COMMANDS"
    log "  $name"
    "${cmd[@]}" >"$WORK/$name.txt" 2>&1 || true
}

# --- header ---------------------------------------------------------------------------
CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
echo "stockd benchmark suite"
echo "  date:        $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "  machine:     $(nproc) cores, ${CPU_MODEL:-unknown CPU}, $(uname -sr)"
echo "  commit:      $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
echo "  load avg:    $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) at start"
echo "  pinning:     $PINNING"
echo "  runs:        ${SECS} s each, $CONC concurrent callers over $CONNS HTTP/2 connections, server with $SHARDS shard(s)"
echo

# --- sync durability ------------------------------------------------------------------
log "sync durability"
start_server sync
"${LOAD_PIN[@]}" "$LOAD" health -z 1s -c "$CONC" --connections "$CONNS" -O json "127.0.0.1:$PORT" >/dev/null # warm-up
common=(-c "$CONC" --connections "$CONNS" -z "${SECS}s")
load health health "${common[@]}"
load browse browse --prefix suite --products 1000 --keys 3 "${common[@]}"
load reserve reserve --products 10000 "${common[@]}"
load hot reserve --hot "${common[@]}"
RESERVE_RPS=$(jget "$WORK/reserve.json" 'd["rps"]')
HALF=$(python3 -c "import sys; print(max(1, round(float(sys.argv[1]) / 2)))" "$RESERVE_RPS")
load open reserve --products 10000 --rps "$HALF" -c $((CONC * 4)) --connections "$CONNS" -z "${SECS}s"
BUYERS=$(python3 -c "import sys; print(max(2000, round(float(sys.argv[1]) * int(sys.argv[2]))))" "$RESERVE_RPS" "$SECS")
UNITS=$((BUYERS / 20))
load flash flash-sale --units "$UNITS" --buyers "$BUYERS" -c "$CONC" --connections "$CONNS"
load checkout checkout "${common[@]}"
load mixed mixed "${common[@]}"

# The same fixed GetAvailability for stockd-load and h2load (3 of browse's products).
GA_DATA='{"channelRef":"load-web","keys":[{"productRef":"suite-p1","locationRef":"suite-wh"},{"productRef":"suite-p500","locationRef":"suite-wh"},{"productRef":"suite-p999","locationRef":"suite-wh"}]}'
GA_CALL=inventory.v1.InventoryService.GetAvailability
"$LOAD" call --call "$GA_CALL" -d "$GA_DATA" --dump-request "$WORK/getavailability.bin"
"$LOAD" call --call grpc.health.v1.Health.Check -d '{}' --dump-request "$WORK/health.bin"
# Check the body answers OK before h2load (which only sees HTTP 200) sends it.
"$LOAD" call --call "$GA_CALL" -d "$GA_DATA" -n 10 -c 1 -O json -o "$WORK/ga-check.json" "127.0.0.1:$PORT"
if [[ $(jget "$WORK/ga-check.json" 'd["statusCodeDistribution"].get("OK", 0)') != 10 ]]; then
    log "the GetAvailability body does not answer OK: $(cat "$WORK/ga-check.json")"
    exit 1
fi
load call-ga call --call "$GA_CALL" -d "$GA_DATA" "${common[@]}"
if [[ $HAVE_H2LOAD == 1 ]]; then
    h2 h2load-ga /inventory.v1.InventoryService/GetAvailability "$WORK/getavailability.bin"
    h2 h2load-health /grpc.health.v1.Health/Check "$WORK/health.bin"
fi
stop_server

# --- async durability -----------------------------------------------------------------
log "async durability"
start_server async
"${LOAD_PIN[@]}" "$LOAD" health -z 1s -c "$CONC" --connections "$CONNS" -O json "127.0.0.1:$PORT" >/dev/null # warm-up
load reserve-async reserve --products 10000 "${common[@]}"
stop_server

# --- a live watcher -------------------------------------------------------------------
# Reserve with one live WatchEvents consumer beside it against without (issue #14). A
# server that has taken a run's holds is slower for the next run (more state, and its
# checkpoints), so each run gets a fresh server, and the order alternates in each pair
# (without-with, then with-without) so that drift over time falls on both sides alike.
WATCH_PAIRS=${SUITE_WATCH_PAIRS:-$([[ "$QUICK" == 1 ]] && echo 1 || echo 4)}
SCALE_PAIRS=${SUITE_SCALE_PAIRS:-$([[ "$QUICK" == 1 ]] && echo 1 || echo 2)}
watch_run() { # DURABILITY PAIR with|without
    start_server "$1"
    "${LOAD_PIN[@]}" "$LOAD" health -z 1s -c "$CONC" --connections "$CONNS" -O json "127.0.0.1:$PORT" >/dev/null # warm-up
    local flag=()
    [[ $3 == with ]] && flag=(--watch)
    load "watch-$1-$2-$3" reserve --products 10000 "${flag[@]}" "${common[@]}"
    stop_server
}
log "a live watcher ($WATCH_PAIRS pairs of fresh servers per durability)"
for mode in sync async; do
    for pair in $(seq 1 "$WATCH_PAIRS"); do
        if ((pair % 2)); then order=(without with); else order=(with without); fi
        for side in "${order[@]}"; do watch_run "$mode" "$pair" "$side"; done
    done
done

# --- the disk's own floor -------------------------------------------------------------
# What one fdatasync of a 4 KiB block costs on the filesystem of the data folders, timed
# alone: no sync-durability reply can be faster than the sync it waits for.
log "disk floor (fdatasync)"
python3 - "$WORK" >"$WORK/fdatasync.json" <<'PY'
import json, os, sys, time
path = os.path.join(sys.argv[1], "fdatasync-probe")
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b"\0" * (8 << 20))
os.fsync(fd)
block, times = b"x" * 4096, []
for i in range(2000):
    os.pwrite(fd, block, (i * 4096) % (8 << 20))
    t = time.perf_counter()
    os.fdatasync(fd)
    times.append(time.perf_counter() - t)
os.close(fd)
os.unlink(path)
times.sort()
q = lambda p: times[min(len(times) - 1, int(p * len(times)))] * 1e3
print(json.dumps({"count": len(times), "p50": q(0.5), "p99": q(0.99), "p999": q(0.999)}))
PY

# --- shard scaling --------------------------------------------------------------------
# The same load at --shards 1 and --shards 8, the server on the same one pinned core: a
# hold contacts only the shards of its lines (issue #12), so more shards must not cost
# throughput. One-line and three-line Reserves (consecutive products: at --shards 8 the
# lines sit on different shards), GetHold of 1,000 existing holds, and the flash sale.
log "shard scaling (--shards 1 and 8)"
MAIN_SHARDS=$SHARDS
GH_CALL=inventory.v1.InventoryService.GetHold
# Alternating fresh servers (1 then 8, then 8 then 1…): a drift of the machine over the
# runs falls on both sides.
for ((PAIR = 1; PAIR <= SCALE_PAIRS; PAIR++)); do
    if ((PAIR % 2)); then ORDER=(1 8); else ORDER=(8 1); fi
    for S in "${ORDER[@]}"; do
        SHARDS=$S
        T="scale$S-p$PAIR"
        start_server sync
        "${LOAD_PIN[@]}" "$LOAD" health -z 1s -c "$CONC" --connections "$CONNS" -O json "127.0.0.1:$PORT" >/dev/null # warm-up
        # Warm-up writes too: each log creates its segments on its first writes.
        "${LOAD_PIN[@]}" "$LOAD" reserve --products 10000 -z 1s -c "$CONC" --connections "$CONNS" -O json "127.0.0.1:$PORT" >/dev/null
        load "$T-reserve1" reserve --products 10000 "${common[@]}"
        load "$T-reserve3" reserve --products 10000 --lines 3 "${common[@]}"
        load "$T-holds" reserve --prefix "gh$S" --products 1000 --lines 3 -n 1000 -c "$CONC" --connections "$CONNS"
        load "$T-gethold" call --call "$GH_CALL" -d "{\"holdRef\":\"gh$S-h{{randomInt 0 1000}}\"}" "${common[@]}"
        load "$T-flash" flash-sale --units "$UNITS" --buyers "$BUYERS" -c "$CONC" --connections "$CONNS"
        stop_server
    done
done
SHARDS=$MAIN_SHARDS

# --- table ----------------------------------------------------------------------------
python3 - "$WORK" "$SECS" "$CONC" "$CONNS" "$STREAMS" "$HAVE_H2LOAD" "$WATCH_PAIRS" "$SCALE_PAIRS" <<'PY'
import json, os, re, statistics, sys

work, secs, conc, conns, streams, have_h2, watch_pairs, scale_pairs = sys.argv[1:9]

def rep(name):
    with open(os.path.join(work, name + ".json")) as f:
        return json.load(f)

def pct(d, p):
    for x in d.get("latencyDistribution", []) + d.get("latencyDistributionExtra", []):
        if abs(x["percentage"] - p) < 1e-9:
            return x["latency"] / 1e6
    return float("nan")

def cpu_seconds(name):
    """The server's CPU over run `name`, in seconds (NaN when unknown)."""
    try:
        ticks, hz = open(os.path.join(work, name + ".cpu")).read().split()
        return int(ticks) / int(hz)
    except (OSError, ValueError):
        return float("nan")

def cpu_us(name):
    """The server's CPU per call of run `name`, in µs (NaN when unknown)."""
    secs, calls = cpu_seconds(name), rep(name)["count"]
    return secs * 1e6 / calls if calls and secs else float("nan")

def errors(d):
    return d["count"] - d["statusCodeDistribution"].get("OK", 0)

def h2load(name):
    path = os.path.join(work, name + ".txt")
    if not os.path.exists(path):
        return None, "not run"
    text = open(path).read()
    m = re.search(r"finished in [^,]+, ([0-9.]+) req/s", text)
    r = re.search(r"requests: .*?(\d+) succeeded, (\d+) failed, (\d+) errored", text)
    if not m:
        return None, "h2load failed: " + text.strip().splitlines()[-1] if text.strip() else "h2load failed"
    note = ""
    if r and (int(r.group(2)) or int(r.group(3))):
        note = f"{r.group(2)} failed, {r.group(3)} errored"
    return float(m.group(1)), note

health, browse, reserve, hot = rep("health"), rep("browse"), rep("reserve"), rep("hot")
openl, flash, checkout, mixed = rep("open"), rep("flash"), rep("checkout"), rep("mixed")
call_ga, reserve_async = rep("call-ga"), rep("reserve-async")
disk = rep("fdatasync")

def row(label, d, rps=None, name=None):
    rps = d["rps"] if rps is None else rps
    err = errors(d)
    note = f"  ({err} errors)" if err else ""
    cpu = f"{cpu_us(name):>9.1f}" if name else f"{'':>9}"
    print(f"  {label:<50} {rps:>10.0f} {pct(d, 50):>9.2f} {pct(d, 99):>9.2f} {pct(d, 99.9):>9.2f} {cpu}{note}")

print(f"Throughput, closed loop, {conc} concurrent callers ({secs} s each); server µs: its CPU per call (seeding included)")
print(f"  {'':<50} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'p99.9 ms':>9} {'server µs':>9}")
row("health       grpc.health.v1.Health/Check", health, name="health")
row("browse       GetAvailability, 3 of 1000 keys", browse, name="browse")
row("reserve      sync, 10,000 products", reserve, name="reserve")
row("reserve      sync, 1 hot product", hot, name="hot")
row("reserve      async, 10,000 products", reserve_async, name="reserve-async")
fs = flash["scenario"]
row(f"flash-sale   sync, {fs['units']} units, {fs['buyers']} buyers", flash, name="flash")
row("checkout     sync, all calls (Reserve, Confirm...)", checkout, name="checkout")
row("mixed        sync, all calls (90% GetAvailability)", mixed, name="mixed")
for method in ("GetAvailability", "Reserve"):
    if method in mixed.get("methods", {}):
        row(f"  mixed: {method} only", mixed["methods"][method])
print()

def ratio(a, b):
    return a / b if b else float("nan")

print("Ratios")
r_browse = ratio(browse["rps"], health["rps"])
r_reserve = ratio(reserve["rps"], health["rps"])
print(f"  browse ÷ health                {r_browse:6.2f}   (goal ≥ 0.90: {'met' if r_browse >= 0.9 else 'NOT met'})")
print(f"  Reserve ÷ health               {r_reserve:6.2f}   (goal ≥ 0.80: {'met' if r_reserve >= 0.8 else 'NOT met'})")
r_flash = ratio(flash['rps'], health['rps'])
print(f"  flash-sale Reserve ÷ health    {r_flash:6.2f}   (goal ≥ 0.90: {'met' if r_flash >= 0.9 else 'NOT met'})")
r_mixed = ratio(mixed['rps'], browse['rps'])
print(f"  mixed ÷ browse                 {r_mixed:6.2f}   (goal ≥ 0.80: {'met' if r_mixed >= 0.8 else 'NOT met'})")
print(f"  sync ÷ async (Reserve)         {ratio(reserve['rps'], reserve_async['rps']):6.2f}")
print(f"  hot ÷ spread (Reserve)         {ratio(hot['rps'], reserve['rps']):6.2f}")
print()

print(f"Reserve with one live watcher ÷ without: {watch_pairs} alternating pairs of {secs} s runs per durability,"
      " each on a fresh server")
for mode in ("sync", "async"):
    pairs, seen, cpu = [], [], {"with": [0.0, 0], "without": [0.0, 0]}
    for i in range(1, int(watch_pairs) + 1):
        w, o = rep(f"watch-{mode}-{i}-with"), rep(f"watch-{mode}-{i}-without")
        pairs.append((w["rps"], o["rps"]))
        seen.append(w.get("watch") or {})
        for side, d in (("with", w), ("without", o)):
            cpu[side][0] += cpu_seconds(f"watch-{mode}-{i}-{side}")
            cpu[side][1] += d["count"]
    r = ratio(sum(p[0] for p in pairs), sum(p[1] for p in pairs))
    each = ", ".join(f"{a / b:.2f}" for a, b in pairs)
    print(f"  {mode:<5} all runs' req/s with ÷ without {r:5.2f}   (goal ≥ 0.95: {'met' if r >= 0.95 else 'NOT met'});"
          f" pair by pair {each}; median {statistics.median(a / b for a, b in pairs):.2f}")
    us = {k: v[0] * 1e6 / v[1] if v[1] else float("nan") for k, v in cpu.items()}
    got = sum(x.get("eventsPerSecond", 0) for x in seen) / len(seen)
    gaps = sum(x.get("gaps", 0) for x in seen)
    ended = [x["ended"] for x in seen if x.get("ended")]
    print(f"        server CPU per Reserve {us['without']:.1f} µs without, {us['with']:.1f} µs with"
          f" (seeding included); the watcher received {got:.0f} events/s, {gaps} missing"
          + (f"; a stream ended: {ended[0]}" if ended else ""))
print()

target = openl["options"]["rps"]
p99 = pct(openl, 99)
print(f"Reserve at 50% of its maximum: open loop, --rps {target} (sync, 10,000 products)")
print(f"  achieved {openl['rps']:.0f} req/s; p50 {pct(openl, 50):.2f} ms, p99 {p99:.2f} ms, "
      f"p99.9 {pct(openl, 99.9):.2f} ms  (goal p99 ≤ 1 ms, p99.9 ≤ 2 ms: "
      f"{'met' if p99 <= 1.0 and pct(openl, 99.9) <= 2.0 else 'NOT met'})"
      + (f"  ({errors(openl)} errors)" if errors(openl) else ""))
late = openl.get("openLoop")
if late:
    print(f"  stockd-load's own error: calls a worker was waiting for started late by p50 "
          f"{late['startedLateP50'] / 1e6:.2f} ms, p99 {late['startedLateP99'] / 1e6:.2f} ms, "
          f"p99.9 {late['startedLateP999'] / 1e6:.2f} ms (included in the latencies above); "
          f"{late.get('noFreeWorker', 0)} calls found all {int(conc) * 4} workers busy")
print(f"  the disk's floor: one fdatasync of 4 KiB alone, {disk['count']} times: p50 {disk['p50']:.2f} ms, "
      f"p99 {disk['p99']:.2f} ms, p99.9 {disk['p999']:.2f} ms")
print()

print(f"Flash sale: {fs['units']} units, {fs['buyers']} buyers, {conc} concurrent")
sold = fs.get("soldOutAfter", 0)
print(f"  sold out after {sold / 1e6:.1f} ms; {fs.get('reserved')} RESERVED, {fs.get('rejected')} REJECTED; "
      f"ATS after {fs.get('atsAfter')}; {'PASS' if fs.get('pass') else 'FAIL'}: {fs.get('check')}")
print()

print(f"Load generator check: same server, same request, {conc} streams ({conns} connections × {streams})")
if have_h2 == "1":
    for label, ours, h2name in (("GetAvailability", call_ga, "h2load-ga"), ("Health/Check", health, "h2load-health")):
        theirs, note = h2load(h2name)
        if theirs is None:
            print(f"  {label:<16} stockd-load {ours['rps']:>9.0f} req/s   h2load: {note}")
        else:
            print(f"  {label:<16} stockd-load {ours['rps']:>9.0f} req/s   h2load {theirs:>9.0f} req/s   "
                  f"stockd-load ÷ h2load {ratio(ours['rps'], theirs):5.2f}" + (f"  (h2load: {note})" if note else ""))
    print("  (goal: stockd-load within 20% of h2load, i.e. ≥ 0.80; below that the load generator is what is measured)")
else:
    print("  h2load not available (apt-get install nghttp2-client): comparison skipped")
print()

print(f"Shard scaling: the same server core, --shards 8 against --shards 1 ({conc} callers, {secs} s each, "
      f"{scale_pairs} pair(s) of fresh servers, alternating)")
print(f"  {'':<34} {'shards 1':>9} {'shards 8':>9} {'8 ÷ 1':>6}  {'CPU µs/call 1 → 8':>18}  pair by pair")
for label, name in (("Reserve, 1 line, 10,000 products", "reserve1"),
                    ("Reserve, 3 lines (3 shards at 8)", "reserve3"),
                    ("GetHold, 3-line holds", "gethold"),
                    ("flash sale, Reserve", "flash")):
    ones = [f"scale1-p{p}-{name}" for p in range(1, int(scale_pairs) + 1)]
    eights = [f"scale8-p{p}-{name}" for p in range(1, int(scale_pairs) + 1)]
    one = statistics.mean(rep(n)["rps"] for n in ones)
    eight = statistics.mean(rep(n)["rps"] for n in eights)
    r = ratio(eight, one)
    pairs = ", ".join(f"{ratio(rep(b)['rps'], rep(a)['rps']):.2f}" for a, b in zip(ones, eights))
    cpu1 = statistics.mean(cpu_us(n) for n in ones)
    cpu8 = statistics.mean(cpu_us(n) for n in eights)
    errs = sum(errors(rep(n)) for n in ones + eights)
    note = f"  ({errs} errors)" if errs else ""
    print(f"  {label:<34} {one:>9.0f} {eight:>9.0f} {r:>6.2f}  {cpu1:>8.1f} → {cpu8:<8.1f}  {pairs}"
          f"   (goal ≥ 0.90: {'met' if r >= 0.9 else 'NOT met'}){note}")
PY

if [[ -s "$WORK/warnings.txt" ]]; then
    echo
    echo "Warnings:"
    sed 's/^/  /' "$WORK/warnings.txt"
fi
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) (other work on the machine skews the figures)"

echo
echo "Commands:"
sed 's/^/  /' "$COMMANDS"

# --- storage figures (benches/storage.sh: reads during a checkpoint, fsync, data folder) ---
if [[ "$QUICK" == 1 ]]; then
    echo
    SUITE_NO_BUILD=1 STORAGE_QUICK=1 bash "$ROOT/benches/storage.sh"
fi
