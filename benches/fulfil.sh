#!/usr/bin/env bash
# Issue #15's throughput figure bound by the server's CPU: GetFulfilmentOptions (5 lines
# over 50 locations) against GetAvailability of 5 keys on the same server.
#
# Each round starts a fresh `stockd --shards 2` pinned to CPU 0 on 127.0.0.1, drives it from
# CPU 1 with `stockd-load fulfil` (keys, fulfil, keys, fulfil, keys; DUR each, -c 16, the
# same 50 locations through --prefix), and prints req/s and the server's CPU per request
# from /proc/PID/stat. With two build folders the rounds alternate between them, so both
# see the same machine. Bounded: ROUNDS rounds of 5 runs of DUR.
#
#   bash benches/fulfil.sh                         # target/release, 3 rounds
#   ROUNDS=6 DUR=4s bash benches/fulfil.sh /tmp/before target/release
#
# A build folder holds `stockd` and `stockd-load` (cargo build --release --workspace).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROUNDS="${ROUNDS:-3}"
DUR="${DUR:-4s}"
[ $# -gt 0 ] || set -- target/release
TICK_US=$((1000000 / $(getconf CLK_TCK)))

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

round() {
  local bin=$1 port=$((50000 + RANDOM % 10000)) dir
  dir=$(mktemp -d)
  taskset -c 0 "$bin/stockd" --grpc-addr "127.0.0.1:$port" --metrics-addr "127.0.0.1:$((port + 1))" \
    --data-dir "$dir/d" --shards 2 >"$dir/log" 2>&1 &
  local pid=$! keys_us=0
  sleep 1.5
  for read in keys fulfil keys fulfil keys; do
    local c0 c1 out count rps us
    c0=$(cpu_ticks $pid)
    out=$(taskset -c 1 "$bin/stockd-load" fulfil --prefix net --read $read --locations 50 \
      --lines 5 --products 200 -c 16 -z "$DUR" "127.0.0.1:$port" 2>&1)
    c1=$(cpu_ticks $pid)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2; exit}')
    count=$(echo "$out" | awk '/Count:/ {print $2; exit}')
    us=$(awk -v t=$((c1 - c0)) -v n="$count" -v u=$TICK_US 'BEGIN {printf "%.1f", t * u / n}')
    if [ $read = keys ]; then
      keys_us=$us
      echo "$bin keys   $rps req/s  $us us/req"
    else
      echo "$bin fulfil $rps req/s  $us us/req  keys/fulfil by CPU $(awk -v k="$keys_us" -v f="$us" 'BEGIN {printf "%.3f", k / f}')"
    fi
  done
  kill $pid
  wait $pid 2>/dev/null || true
  rm -rf "$dir"
}

for _ in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do round "$bin"; done
done
