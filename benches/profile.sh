#!/usr/bin/env bash
# Where one request's server CPU goes: perf of a pinned stockd under one kind of load.
#
#   benches/profile.sh reserve reserve --products 10000   # Reserve, sync durability
#   benches/profile.sh health health                       # the health check, for comparison
#
# Starts target/release/stockd on CPU 0 with one shard (like benches/suite.sh), warms it up,
# drives it with stockd-load on CPU 1 (50 callers over 5 connections), records the server
# with `perf record -g --call-graph dwarf` for PROFILE_SECONDS (default 4) in the middle of
# the run, and prints the throughput and the CPU by bucket (benches/perf_buckets.py: HTTP/2,
# tonic, tokio, tracing, metrics, engine, log writer, allocation, kernel), self and children.
# Needs perf (apt-get install linux-perf) and release binaries (cargo build --release).
# STOCKD_EXTRA adds server flags; PROFILE_KEEP=1 keeps perf.data in $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1
shift
R=$PWD/target/release
PERF=$(command -v perf || ls /usr/bin/perf_* 2>/dev/null | head -1)
[[ -n "$PERF" ]] || { echo "perf missing: apt-get install -y linux-perf" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stockd-profile.XXXXXX")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(port)
METRICS=$(port)
# shellcheck disable=SC2086
RUST_LOG=warn taskset -c 0 "$R/stockd" --grpc-addr "127.0.0.1:$PORT" --metrics-addr "127.0.0.1:$METRICS" \
    --data-dir "$WORK/data" --durability sync --shards 1 ${STOCKD_EXTRA:-} >"$WORK/stockd.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; [[ "${PROFILE_KEEP:-0}" == 1 ]] || rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
    "$R/stockd-load" health -n 1 -c 1 -t 1s -O json "127.0.0.1:$PORT" >/dev/null 2>&1 && break
    sleep 0.1
done
taskset -c 1 "$R/stockd-load" health -z 1s -c 50 --connections 5 -O json "127.0.0.1:$PORT" >/dev/null
SECS=${PROFILE_SECONDS:-4}
taskset -c 1 "$R/stockd-load" "$@" -c 50 --connections 5 -z "$((SECS + 3))s" -O json -o "$WORK/load.json" "127.0.0.1:$PORT" &
LOAD=$!
sleep 1
"$PERF" record -F 999 -g --call-graph dwarf,16384 -p "$SERVER" -o "$WORK/perf.data" -- sleep "$SECS" >/dev/null 2>&1
wait $LOAD
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"{sys.argv[2]}: {d['rps']:.0f} req/s under perf, {d['statusCodeDistribution']}\")" "$WORK/load.json" "$NAME"
"$PERF" script -i "$WORK/perf.data" -F comm,tid,ip,sym,dso --no-inline 2>/dev/null >"$WORK/perf.txt"
python3 benches/perf_buckets.py "$WORK/perf.txt"
