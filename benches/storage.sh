#!/usr/bin/env bash
# The storage figures: what the write-ahead log and the checkpoints cost a running stockd.
#
#   benches/storage.sh                     # the full sizes (about 30 minutes, mostly the folder run)
#   STORAGE_QUICK=1 benches/storage.sh     # small sizes, for CI (about a minute)
#   STORAGE_ONLY="read fsync" benches/storage.sh
#
# Three measurements, each on a fresh stockd (release build, 127.0.0.1, a temporary data
# folder, --shards 1 pinned to CPU 0; stockd-load pinned to CPU 1, like benches/suite.sh):
#   read   GetAvailability p50/p99/p99.9, open loop (--rps), while the shard, holding
#          CK_POSITIONS positions and as many one-unit holds, checkpoints. The state is
#          filled over gRPC first (`stockd-load reserve`: SetStock batches, then one Reserve
#          per hold), then `stockd-load checkpoint-read` reads while a paced SetStock churn
#          changes every position, so the shard's pending entries cross
#          CHECKPOINT_PENDING_MAX and checkpoints of that size are taken during the reads.
#          The checkpoints inside the window are counted from /metrics
#          (stockd_snapshot_duration_seconds: the shard's copy; stockd_checkpoint_*: the
#          write off the shard) and from the server's "checkpoint written" log lines.
#   fsync  fdatasync latency p50/p99 (stockd_wal_fsync_duration_seconds) and changes per
#          group commit (stockd_wal_changes_per_flush) under 50 callers of Reserve.
#   folder data-folder bytes per live position after FOLDER_PAIRS Reserve+Release pairs
#          on FOLDER_POSITIONS positions (after the last checkpoint has finished).
#
# Environment (defaults; quick defaults in brackets):
#   CK_POSITIONS 1000000 [50000]   positions, and one hold on each, for "read"
#   CK_RPS 2000                    GetAvailability per second in the read window
#   CK_SECS 40 [5]                 the read window (twice: without churn, then with it)
#   CK_CHURN_RPS 500 [300]         churn SetStock calls per second (100 positions each)
#   FSYNC_SECS 10 [3]              the Reserve run of "fsync"
#   FOLDER_PAIRS 10000000 [50000], FOLDER_POSITIONS 100000 [5000]
#   FOLDER_RETENTION_SECS          --hold-retention-secs of the folder run (default: stockd's,
#                                  one day, so every released hold is still live state)
#   STORAGE_KEEP=1                 keep the reports and server logs
#   SUITE_NO_BUILD=1               use the binaries already in target/release
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${STORAGE_QUICK:-${SUITE_QUICK:-0}}
q() { if [[ "$QUICK" == 1 ]]; then echo "$2"; else echo "$1"; fi; }
CK_POSITIONS=${CK_POSITIONS:-$(q 1000000 50000)}
CK_RPS=${CK_RPS:-2000}
CK_SECS=${CK_SECS:-$(q 40 5)}
CK_CHURN_RPS=${CK_CHURN_RPS:-$(q 500 300)}
FSYNC_SECS=${FSYNC_SECS:-$(q 10 3)}
FOLDER_PAIRS=${FOLDER_PAIRS:-$(q 10000000 50000)}
FOLDER_POSITIONS=${FOLDER_POSITIONS:-$(q 100000 5000)}
ONLY=${STORAGE_ONLY:-read fsync folder}
STOCKD=$ROOT/target/release/stockd
LOAD=$ROOT/target/release/stockd-load
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stockd-storage.XXXXXX")
SERVER_PID=""
DATA=""

log() { printf '%s\n' "$*" >&2; }

cleanup() {
    stop_server || true
    if [[ "${STORAGE_KEEP:-0}" == 1 ]]; then log "reports kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v python3 >/dev/null || { log "storage.sh needs python3"; exit 2; }
command -v curl >/dev/null || { log "storage.sh needs curl (to read /metrics)"; exit 2; }

SERVER_PIN=()
LOAD_PIN=()
if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then
    SERVER_PIN=(taskset -c 0)
    LOAD_PIN=(taskset -c 1)
fi

if [[ "${SUITE_NO_BUILD:-0}" != 1 ]]; then
    log "building release binaries"
    cargo build --release --quiet --bin stockd --bin stockd-load
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME [FLAGS...]: a fresh stockd with its own data folder and log.
start_server() {
    local name=$1
    shift
    DATA=$WORK/data-$name
    mkdir -p "$DATA"
    PORT=$(free_port)
    METRICS=$(free_port)
    local cmd=("${SERVER_PIN[@]}" "$STOCKD" --grpc-addr "127.0.0.1:$PORT" --metrics-addr "127.0.0.1:$METRICS"
        --data-dir "$DATA" --shards 1 "$@")
    echo "  RUST_LOG=warn,stockd::storage::checkpointer=debug ${cmd[*]}" >>"$WORK/commands.txt"
    RUST_LOG=warn,stockd::storage::checkpointer=debug "${cmd[@]}" >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if "$LOAD" health -n 1 -c 1 -t 1s --connect-timeout 1s -O json "127.0.0.1:$PORT" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "stockd did not start:"
    cat "$WORK/$name.log" >&2
    exit 1
}

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 300); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    if [[ -n "$DATA" ]]; then rm -rf "$DATA"; fi
    DATA=""
}

# load NAME ARGS...: stockd-load pinned, JSON report in $WORK/NAME.json.
load() {
    local name=$1
    shift
    local cmd=("${LOAD_PIN[@]}" "$LOAD" "$@" -O json -o "$WORK/$name.json" "127.0.0.1:$PORT")
    echo "  ${cmd[*]}" >>"$WORK/commands.txt"
    log "  $name: ${cmd[*]}"
    local status=0
    "${cmd[@]}" || status=$?
    if [[ $status -ne 0 ]]; then log "stockd-load failed ($status)"; exit 1; fi
}

scrape() { curl -sf "http://127.0.0.1:$METRICS/metrics" >"$WORK/$1.prom"; }

# metric FILE NAME: the value of an unlabelled sample (0 when absent).
metric() {
    awk -v n="$2" '$1 == n { v = $2 } END { print (v == "" ? 0 : v) }' "$1"
}

# Waits until every checkpoint the shard started has been written (at most 10 minutes).
wait_checkpoints() {
    for _ in $(seq 1 1200); do
        scrape quiet
        local started written
        started=$(metric "$WORK/quiet.prom" stockd_snapshot_duration_seconds_count)
        written=$(metric "$WORK/quiet.prom" stockd_checkpoint_duration_seconds_count)
        if [[ "$started" == "$written" ]]; then return 0; fi
        sleep 0.5
    done
    log "checkpoints still running after 10 minutes"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

echo "stockd storage benchmarks"
echo "  date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "  machine:  $(nproc) cores, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
echo "  commit:   $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
echo "  load avg: $(loadavg) at start; stockd on CPU 0 (--shards 1), stockd-load on CPU 1"
echo

# --- read: GetAvailability while a large shard checkpoints ----------------------------
if [[ " $ONLY " == *" read "* ]]; then
    log "read: fill $CK_POSITIONS positions and holds, then read while the shard checkpoints"
    # A checkpoint every CK_POSITIONS/100 records: the churn's SetStocks of 100 positions
    # make that many records, so at least one checkpoint falls inside the window, and
    # CHECKPOINT_PENDING_MAX (500,000 entries) cuts a larger churn into several.
    start_server read --snapshot-every-records "$((CK_POSITIONS / 100))"
    t0=$(date +%s.%N)
    load fill reserve --prefix ck --products "$CK_POSITIONS" -n "$CK_POSITIONS" --stock 10 -c 50 --connections 5
    fill_secs=$(python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.0f}')" "$t0")
    wait_checkpoints
    # The same reads with no churn (so no checkpoint), for the ratio on this machine now.
    scrape base-before
    load read-base checkpoint-read --prefix ck --products "$CK_POSITIONS" --churn-positions 0 \
        --rps "$CK_RPS" -c 200 --connections 5 -z "${CK_SECS}s"
    scrape base-after
    scrape before
    : >"$WORK/read.window"
    lines_before=$(wc -l <"$WORK/read.log")
    load_before=$(loadavg)
    load read checkpoint-read --prefix ck --products "$CK_POSITIONS" --churn-positions "$CK_POSITIONS" \
        --churn-rps "$CK_CHURN_RPS" --rps "$CK_RPS" -c 200 --connections 5 -z "${CK_SECS}s"
    load_after=$(loadavg)
    scrape after
    tail -n +"$((lines_before + 1))" "$WORK/read.log" | grep 'checkpoint written' >"$WORK/read.window" || true
    python3 - "$WORK" "$CK_POSITIONS" "$fill_secs" "$load_before" "$load_after" <<'PY'
import json, re, sys
work, positions, fill_secs, lb, la = sys.argv[1:6]

def prom(name):
    out = {}
    for line in open(f"{work}/{name}.prom"):
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out

b, a = prom("before"), prom("after")
d = lambda k: a.get(k, 0.0) - b.get(k, 0.0)
def pcts(r):
    return {x["percentage"]: x["latency"] / 1e6 for x in r.get("latencyDistribution", []) + r.get("latencyDistributionExtra", [])}

r = json.load(open(f"{work}/read.json"))
pct = pcts(r)
base = json.load(open(f"{work}/read-base.json"))
bp = pcts(base)
bb, ba = prom("base-before"), prom("base-after")
base_ck = ba.get("stockd_snapshot_duration_seconds_count", 0) - bb.get("stockd_snapshot_duration_seconds_count", 0)
ok = r["statusCodeDistribution"].get("OK", 0)
fill = json.load(open(f"{work}/fill.json"))
holds = sum(v for k, v in a.items() if k.startswith("stockd_active_holds{"))
pos = sum(v for k, v in a.items() if k.startswith("stockd_positions{"))
started = d("stockd_snapshot_duration_seconds_count")
written = d("stockd_checkpoint_duration_seconds_count")
copy_s = d("stockd_snapshot_duration_seconds_sum")
entries = d("stockd_checkpoint_entries_sum")
ck_s = d("stockd_checkpoint_duration_seconds_sum")
p999 = pct.get(99.9, float("nan"))
sc = r.get("scenario", {})
print(f"read: GetAvailability, open loop --rps {r['options']['rps']}, during {r['total']/1e9:.0f} s")
print(f"  shard state: {pos:.0f} positions, {holds:.0f} active holds (filled in {fill_secs} s at {fill['rps']:.0f} Reserve/s)")
print(f"  reads: {ok} OK of {r['count']} ({r['rps']:.0f}/s); p50 {pct.get(50, 0):.2f} ms, p99 {pct.get(99, 0):.2f} ms, "
      f"p99.9 {p999:.2f} ms, max {r['slowest']/1e6:.2f} ms")
print(f"  same reads, no churn, {base_ck:.0f} checkpoints: p50 {bp.get(50, 0):.2f} ms, p99 {bp.get(99, 0):.2f} ms, "
      f"p99.9 {bp.get(99.9, 0):.2f} ms, max {base['slowest']/1e6:.2f} ms; "
      f"p99.9 while checkpointing / without: {p999 / bp.get(99.9, float('nan')):.2f}")
print(f"  churn: {sc.get('churnPositions')} positions in {sc.get('churnCalls')} SetStocks ({sc.get('churnFailed')} failed), "
      f"done after {sc.get('churnDoneAfterMs', 0)/1e3:.1f} s, slowest {sc.get('churnMaxMs', 0):.1f} ms")
print(f"  checkpoints in the window: {started:.0f} taken, {written:.0f} written, {entries:.0f} entries written, "
      f"shard copy {copy_s*1e3:.1f} ms in all, writing {ck_s:.1f} s in all")
def fsync_quantile(before, after, q):
    name = "stockd_wal_fsync_duration_seconds"
    buckets = sorted((float("inf") if k.split('"')[1] == "+Inf" else float(k.split('"')[1]), v - before.get(k, 0.0))
                     for k, v in after.items() if k.startswith(name + "_bucket{"))
    total = buckets[-1][1] if buckets else 0
    lo = prev = 0.0
    for le, c in buckets:
        if total and c >= q * total:
            return lo if le == float("inf") else lo + (le - lo) * ((q * total - prev) / (c - prev) if c > prev else 0)
        lo, prev = le, c
    return float("nan")

print(f"  log fdatasync in the window: p50 {fsync_quantile(b, a, 0.5)*1e3:.2f} ms, p99 {fsync_quantile(b, a, 0.99)*1e3:.2f} ms")
for line in open(f"{work}/read.window"):
    print("    log: " + re.sub(r"\x1b\[[0-9;]*m", "", line).strip()[:160])
print(f"  load average {lb} before, {la} after")
verdict = "met" if p999 <= 2.0 and started >= 1 else "NOT met"
print(f"  goal p99.9 <= 2 ms while checkpointing: {verdict}")
PY
    stop_server
    echo
fi

# --- fsync: fdatasync latency and changes per group under 50 callers ------------------
if [[ " $ONLY " == *" fsync "* ]]; then
    log "fsync: Reserve, 50 callers"
    start_server fsync
    load warm health -z 1s -c 50 --connections 5
    scrape before
    load_before=$(loadavg)
    load fsync reserve --prefix fs --products 10000 -c 50 --connections 5 -z "${FSYNC_SECS}s"
    scrape after
    python3 - "$WORK" "$load_before" "$(loadavg)" <<'PY'
import json, re, sys
work, lb, la = sys.argv[1:4]

def prom(name):
    out = {}
    for line in open(f"{work}/{name}.prom"):
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out

b, a = prom("before"), prom("after")

def hist(name):
    buckets = []
    for k, v in a.items():
        m = re.fullmatch(name + r'_bucket\{le="([^"]+)"\}', k)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, v - b.get(k, 0.0)))
    buckets.sort()
    count = a.get(name + "_count", 0) - b.get(name + "_count", 0)
    total = a.get(name + "_sum", 0) - b.get(name + "_sum", 0)
    return buckets, count, total

def quantile(buckets, q):
    # As Prometheus' histogram_quantile: linear within the bucket.
    count = buckets[-1][1] if buckets else 0
    rank, lo, prev = q * count, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * ((rank - prev) / (c - prev) if c > prev else 0)
        lo, prev = le, c
    return float("nan")

r = json.load(open(f"{work}/fsync.json"))
fb, fc, fs = hist("stockd_wal_fsync_duration_seconds")
cb, cc, cs = hist("stockd_wal_changes_per_flush")
secs = r["total"] / 1e9
print(f"fsync: Reserve, 50 callers, {secs:.0f} s: {r['rps']:.0f} Reserve/s, {fc:.0f} fdatasyncs ({fc/secs:.0f}/s)")
print(f"  fdatasync p50 {quantile(fb, 0.5)*1e3:.3f} ms, p99 {quantile(fb, 0.99)*1e3:.3f} ms, mean {fs/max(fc,1)*1e3:.3f} ms "
      "(from the histogram's buckets: 0.5-0.75-1-2.5-5 ms near these values)")
print(f"  changes per group: mean {cs/max(cc,1):.1f}, p50 {quantile(cb, 0.5):.0f}, p99 {quantile(cb, 0.99):.0f} (buckets 1,2,4..4096)")
print(f"  load average {lb} before, {la} after")
PY
    stop_server
    echo
fi

# --- folder: bytes per live position after many Reserve+Release pairs -----------------
if [[ " $ONLY " == *" folder "* ]]; then
    log "folder: $FOLDER_PAIRS Reserve+Release pairs on $FOLDER_POSITIONS positions"
    retention=()
    if [[ -n "${FOLDER_RETENTION_SECS:-}" ]]; then retention=(--hold-retention-secs "$FOLDER_RETENTION_SECS"); fi
    # Checkpoints every 10,000 records in the quick run too (stockd's default is 100,000).
    start_server folder --snapshot-every-records "$(q 100000 10000)" "${retention[@]}"
    load_before=$(loadavg)
    load folder reserve --release --prefix fo --products "$FOLDER_POSITIONS" -n "$FOLDER_PAIRS" -c 50 --connections 5
    wait_checkpoints
    scrape after
    logs=$(du -sb "$DATA/log" | cut -f1)
    total=$(du -sb "$DATA" | cut -f1)
    python3 - "$WORK" "$FOLDER_POSITIONS" "$FOLDER_PAIRS" "$total" "$logs" "$load_before" "$(loadavg)" <<'PY'
import json, sys
work, positions, pairs, total, logs, lb, la = sys.argv[1:8]
positions, pairs, total, logs = int(positions), int(pairs), int(total), int(logs)
r = json.load(open(f"{work}/folder.json"))
a = {}
for line in open(f"{work}/after.prom"):
    if not line.startswith("#") and line.strip():
        k, _, v = line.rpartition(" ")
        a[k] = float(v)
sc = r.get("scenario", {})
print(f"folder: {pairs} Reserve+Release pairs on {positions} positions in {r['total']/1e9:.0f} s "
      f"({sc.get('reserved')} reserved, {sc.get('rejected')} rejected, {r['rps']:.0f} calls/s)")
print(f"  data folder {total/2**20:.1f} MiB: log {logs/2**20:.1f} MiB (preallocated segments), checkpoints and the rest "
      f"{(total-logs)/2**20:.1f} MiB")
print(f"  {total/positions:.0f} bytes per live position ({(total-logs)/positions:.0f} without the log's preallocated segments); "
      "finished holds are kept --hold-retention-secs (one day by default), so they are live state too")
print(f"  load average {lb} before, {la} after")
PY
    stop_server
    echo
fi

echo "Commands:"
cat "$WORK/commands.txt"
