#!/usr/bin/env bash
# stockd's metrics against a real Prometheus.
#
# Run from the repository root:   bash .ci/prometheus-check.sh
# Needs: the Rust toolchain, Python 3 (with venv), apt (as root) for Debian's
# `prometheus` package (prometheus + promtool), and PyPI for grpcio/grpcio-tools.
# Everything listens on 127.0.0.1 only, on free ports.
#
# What it does:
#   1. installs prometheus/promtool (apt; the package's own service is never started:
#      Prometheus is run by hand on a free port) and grpcio + grpcio-tools in a venv;
#   2. builds `stockd` (release) and starts it on free ports with a temporary data dir;
#   3. starts Prometheus with a scrape config for that stockd (scrape_interval 1s) and
#      waits for its first successful scrape;
#   4. generates Python stubs from proto/inventory/v1/inventory.proto and drives ~25 s
#      of traffic (.ci/prometheus/drive.py): both channels, every reserve outcome
#      (reserved, partial, rejected) and every hold lifecycle event (created, updated,
#      confirmed, released, expired), while Prometheus scrapes;
#   5. `promtool check metrics` on a /metrics scrape, plus static checks of it
#      (.ci/prometheus/check.py exposition: HELP/TYPE/units, histogram buckets,
#      bounded labels, every metric family of the issue);
#   6. through Prometheus's HTTP API: the Reserve p99 (histogram_quantile over the
#      rpc duration buckets) and the per-channel outcome rates must be non-empty and
#      finite; every panel target of k8s/grafana/stockd-dashboard.json must evaluate
#      without error and, unless it only uses metrics allowed to be empty in a short
#      run, return data (.ci/prometheus/check.py queries);
#   7. prints a summary; exits 0 only if every check passed.
#
# Environment: PROMETHEUS_CHECK_VENV (venv path), PROMETHEUS_CHECK_DURATION (traffic
# seconds, default 25), PROMETHEUS_CHECK_KEEP=1 (keep the temporary folder).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

GRPCIO_VERSION=1.76.0
DURATION="${PROMETHEUS_CHECK_DURATION:-25}"
VENV="${PROMETHEUS_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stockd/prometheus-check-venv}"
DASHBOARD=k8s/grafana/stockd-dashboard.json
PROTO=proto/inventory/v1/inventory.proto
HERE=.ci/prometheus

WORK="$(mktemp -d)"
STOCKD_PID=""
PROM_PID=""
POLICY_RC_CREATED=""

step() { printf '\n==> %s\n' "$*"; }

stop_pid() {
    local pid="$1" i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    stop_pid "$PROM_PID"
    stop_pid "$STOCKD_PID"
    if [[ -n "$POLICY_RC_CREATED" ]]; then rm -f /usr/sbin/policy-rc.d; fi
    if [[ $rc -ne 0 ]]; then
        for log in stockd prometheus; do
            if [[ -s "$WORK/$log.log" ]]; then
                printf '\n--- last lines of %s.log ---\n' "$log"
                tail -n 30 "$WORK/$log.log"
            fi
        done
    fi
    if [[ "${PROMETHEUS_CHECK_KEEP:-}" == 1 ]]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "error: $*" >&2; exit 1; }

# --------------------------------------------------------------------- tools
step "installing prometheus and promtool"
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null \
        || die "prometheus/promtool missing and cannot apt-get install them (need root and apt)"
    # The package's maintainer scripts must not start the prometheus service (it would
    # listen on :9090): deny service starts for the duration of the install, unless a
    # policy is already in place.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if [[ -n "$POLICY_RC_CREATED" ]]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=""; fi
fi
prometheus --version 2>&1 | head -n 1
promtool --version 2>&1 | head -n 1

step "installing grpcio and grpcio-tools $GRPCIO_VERSION into $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 ships venv/ensurepip separately.
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$VENV"
            python3 -m venv "$VENV"
        else
            die "'python3 -m venv' failed; install python3-venv"
        fi
    fi
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --disable-pip-version-check \
    "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION"
"$PY" -c 'import grpc; print("grpcio", grpc.__version__)'

# --------------------------------------------------------------------- build
step "cargo build --release --bin stockd"
cargo build --release --bin stockd
STOCKD=target/release/stockd
[[ -x "$STOCKD" ]] || die "$STOCKD was not built"
T0=$SECONDS

step "generating Python stubs from $PROTO"
mkdir -p "$WORK/stubs"
WKT="$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"
"$PY" -m grpc_tools.protoc -Iproto -I"$WKT" \
    --python_out="$WORK/stubs" --grpc_python_out="$WORK/stubs" "$PROTO"
ls "$WORK/stubs/inventory/v1"

# --------------------------------------------------------------------- stockd
# Free ports on 127.0.0.1, drawn at random below the kernel's ephemeral range (other
# programs' bind(0) and outgoing connections take ports from that range, so a port
# found free there is soon taken again); each is checked bindable. A start that still
# loses its port to another program is retried with new ports.
free_ports() { # count
    python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1])
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
hi = max(low, 12000)
socks, ports = [], []
while len(ports) < n:
    port = random.randrange(10000, hi)
    if port in ports:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    socks.append(s)
    ports.append(port)
print(*ports)
EOF
}

# Waits until pid listens on 127.0.0.1:port. Returns 0 once it answers, 1 if the
# process exited, 2 on timeout.
wait_port() { # name pid port seconds
    local name="$1" pid="$2" port="$3" secs="$4" i
    for i in $(seq 1 $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || { echo "$name exited during start"; return 1; }
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.5).close()" 2>/dev/null; then
            # Still alive a moment later: the answer was not another program's.
            sleep 0.2
            kill -0 "$pid" 2>/dev/null || { echo "$name exited during start"; return 1; }
            echo "$name answers on 127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not listen on 127.0.0.1:$port within ${secs} s"
    return 2
}

port_taken() { # log
    grep -qiE 'address already in use|bind: address' "$1"
}

# --------------------------------------------------------------------- stockd
for attempt in 1 2 3; do
    read -r GRPC_PORT METRICS_PORT < <(free_ports 2)
    GRPC_ADDR="127.0.0.1:$GRPC_PORT"
    METRICS_ADDR="127.0.0.1:$METRICS_PORT"
    step "starting stockd (gRPC $GRPC_ADDR, metrics $METRICS_ADDR), attempt $attempt"
    rm -rf "$WORK/data"
    # Snapshots every 2000 log records, so the snapshot metrics have data in a short run.
    "$STOCKD" serve --grpc-addr "$GRPC_ADDR" --metrics-addr "$METRICS_ADDR" \
        --data-dir "$WORK/data" --snapshot-every-records 2000 >"$WORK/stockd.log" 2>&1 &
    STOCKD_PID=$!
    rc=0
    wait_port stockd "$STOCKD_PID" "$GRPC_PORT" 30 || rc=$?
    [[ $rc -eq 0 ]] && { wait_port "stockd metrics" "$STOCKD_PID" "$METRICS_PORT" 10 || rc=$?; }
    [[ $rc -eq 0 ]] && break
    stop_pid "$STOCKD_PID"
    STOCKD_PID=""
    if [[ $attempt -lt 3 ]] && port_taken "$WORK/stockd.log"; then
        echo "a port was taken by another program; retrying with new ports"
        continue
    fi
    die "stockd did not start (see stockd.log below)"
done

# ----------------------------------------------------------------- prometheus
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: stockd
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    static_configs:
      - targets: ["$METRICS_ADDR"]
EOF
promtool check config "$WORK/prometheus.yml"
for attempt in 1 2 3; do
    read -r PROM_PORT < <(free_ports 1)
    PROM_URL="http://127.0.0.1:$PROM_PORT"
    step "starting Prometheus on $PROM_URL, attempt $attempt"
    rm -rf "$WORK/tsdb"
    prometheus --config.file="$WORK/prometheus.yml" \
        --storage.tsdb.path="$WORK/tsdb" \
        --web.listen-address="127.0.0.1:$PROM_PORT" \
        --log.level=warn >"$WORK/prometheus.log" 2>&1 &
    PROM_PID=$!
    rc=0
    wait_port prometheus "$PROM_PID" "$PROM_PORT" 30 || rc=$?
    [[ $rc -eq 0 ]] && break
    stop_pid "$PROM_PID"
    PROM_PID=""
    if [[ $attempt -lt 3 ]] && port_taken "$WORK/prometheus.log"; then
        echo "the port was taken by another program; retrying with a new port"
        continue
    fi
    die "Prometheus did not start (see prometheus.log below)"
done
"$PY" "$HERE/check.py" wait-target --prom "$PROM_URL" --timeout 30

# -------------------------------------------------------------------- traffic
step "driving traffic for ${DURATION} s"
"$PY" "$HERE/drive.py" --target "$GRPC_ADDR" --stubs "$WORK/stubs" --duration "$DURATION"
kill -0 "$STOCKD_PID" 2>/dev/null || die "stockd died under traffic"
# Two more scrapes after the last call, so Prometheus holds the final counts.
sleep 2

# --------------------------------------------------------------------- checks
declare -a RESULTS=()
FAILED=0
record() { # name rc
    if [[ "$2" -eq 0 ]]; then RESULTS+=("PASS  $1"); else RESULTS+=("FAIL  $1"); FAILED=1; fi
}

step "promtool check metrics on http://$METRICS_ADDR/metrics"
"$PY" - "$METRICS_ADDR" "$WORK/metrics.txt" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10) as r:
    body = r.read()
open(sys.argv[2], "wb").write(body)
print(len(body), "bytes,", body.count(b"\n"), "lines")
EOF
rc=0
promtool check metrics <"$WORK/metrics.txt" >"$WORK/promtool.out" 2>&1 || rc=$?
if [[ -s "$WORK/promtool.out" ]]; then sed 's/^/  promtool: /' "$WORK/promtool.out"; else echo "  promtool: no problems reported"; fi
echo "promtool check metrics exit code: $rc"
record "promtool check metrics (exit $rc)" "$rc"

step "static checks of the exposition"
rc=0
"$PY" "$HERE/check.py" exposition "$WORK/metrics.txt" || rc=$?
record "exposition: HELP/TYPE/units, buckets, bounded labels, all families, all outcomes/events" "$rc"

step "queries through Prometheus's HTTP API and every dashboard panel"
rc=0
"$PY" "$HERE/check.py" queries --prom "$PROM_URL" --dashboard "$DASHBOARD" --timeout 30 || rc=$?
record "Prometheus: Reserve p99, outcome rates, every panel of $DASHBOARD" "$rc"

kill -0 "$STOCKD_PID" 2>/dev/null || { RESULTS+=("FAIL  stockd still running at the end"); FAILED=1; }

step "summary (${DURATION} s of traffic; $((SECONDS - T0)) s after the build)"
printf '  %s\n' "${RESULTS[@]}"
if [[ $FAILED -ne 0 ]]; then
    echo "prometheus-check: FAILED"
    exit 1
fi
echo "prometheus-check: all passed"
