#!/usr/bin/env bash
# Runs a command with every vCPU kept awake, to tell this machine's wake-up latency apart
# from stockd's own.
#
#   bash benches/awake.sh bash benches/suite.sh
#   bash benches/awake.sh stockd-load health -c 1 -z 10s 127.0.0.1:50051
#
# Why: this project's VMs boot with `haltpoll.guest_halt_poll_ns=0` (see /proc/cmdline), so
# an idle vCPU halts at once and waking it goes through the host. At low load every call
# waits for one or two such wake-ups (the server's core, then the client's): a health
# check at one caller has a p99 of 3–4 ms that way, and 0.26 ms with the vCPUs kept awake
# (2026-12-02, README "Latency and the machine's idle vCPUs").
#
# How: one spinner per core at SCHED_IDLE (`chrt -i 0`), the lowest priority Linux has:
# any other thread preempts it at once, so it takes only time nothing else wants, and the
# vCPU never halts. It burns the host's CPU while it runs, so it is for diagnosis runs, not
# for CI. The spinners stop when the command ends, and after AWAKE_MAX_SECS (default 3600)
# in any case.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: bash benches/awake.sh COMMAND [ARGS...]" >&2
    exit 2
fi
command -v chrt >/dev/null || { echo "awake.sh needs chrt (util-linux)" >&2; exit 2; }

MAX=${AWAKE_MAX_SECS:-3600}
SPINNERS=()
stop() {
    if [[ ${#SPINNERS[@]} -gt 0 ]]; then
        kill "${SPINNERS[@]}" 2>/dev/null || true
        wait "${SPINNERS[@]}" 2>/dev/null || true
    fi
}
trap stop EXIT
trap 'exit 130' INT TERM

for cpu in $(seq 0 $(($(nproc) - 1))); do
    chrt -i 0 taskset -c "$cpu" timeout "$MAX" sh -c 'while :; do :; done' &
    SPINNERS+=($!)
done
echo "awake.sh: ${#SPINNERS[@]} SCHED_IDLE spinners (one per core, at most ${MAX} s)" >&2
status=0
"$@" || status=$?
exit "$status"
