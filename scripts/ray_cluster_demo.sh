#!/usr/bin/env bash
# The Ray cluster path on one machine: a head and a second node started by `ray start` (loopback
# only), unirl workers placed on both nodes (shown by the node id each worker reports), a
# `unirl train --address` run on the cluster, then `ray stop`.
#
# Usage: scripts/ray_cluster_demo.sh            (from the repository root; uses .venv if present)
# Its own temp dir keeps other Ray users on this machine from finding this cluster.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
[ -x "$BIN/python" ] || BIN=$(dirname "$(command -v python)")
PORT=${RAY_DEMO_PORT:-6391}
TMP=${RAY_DEMO_TMP:-/tmp/unirl_ray_demo}
ADDRESS=127.0.0.1:$PORT
export RAY_USAGE_STATS_ENABLED=0
# Loopback only, so the demo turns off token authentication (a real cluster keeps it: see docs/backends.md).
export RAY_AUTH_MODE=disabled

# `ray stop` ends every Ray process on the machine, other people's sessions included; on a shared
# machine this stops only this demo's processes: those that inherited UNIRL_RAY_DEMO (below) or
# that run from or write into the demo's temp dir (Ray's agents keep log files open there).
# On a machine of your own, `ray stop` does the same.
export UNIRL_RAY_DEMO="demo-$$-$RANDOM"
demo_pids() {
    local d pid ppid
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$pid" = "$$" ] && continue
        # Skip this script's own helpers (descendants of $$); Ray's daemons are reparented to init.
        ppid=$pid
        while [ -n "$ppid" ] && [ "$ppid" -gt 1 ] && [ "$ppid" != "$$" ]; do
            ppid=$(awk '{print $4}' "/proc/$ppid/stat" 2>/dev/null)
        done
        [ "$ppid" = "$$" ] && continue
        if grep -qz "^UNIRL_RAY_DEMO=$UNIRL_RAY_DEMO\$" "$d/environ" 2>/dev/null \
            || { tr '\0' ' ' < "$d/cmdline"; } 2>/dev/null | grep -q -- "$TMP" \
            || ls -l "$d/fd" 2>/dev/null | grep -q -- "-> $TMP/"; then
            echo "$pid"
        fi
    done
}
stop_demo_cluster() {
    local pids
    pids=$(demo_pids)
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    for _ in $(seq 50); do
        pids=$(demo_pids)
        [ -z "$pids" ] && return 0
        sleep 0.2
    done
    kill -9 $pids 2>/dev/null || true
}
cleanup() {
    stop_demo_cluster
}
trap cleanup EXIT

echo "== starting the head node (1 CPU) on $ADDRESS"
"$BIN/ray" start --head --node-ip-address=127.0.0.1 --port="$PORT" --num-cpus=1 --include-dashboard=false \
    --temp-dir="$TMP" --disable-usage-stats >/dev/null
echo "== starting a second node (1 CPU) that joins it"
"$BIN/ray" start --address="$ADDRESS" --node-ip-address=127.0.0.1 --num-cpus=1 >/dev/null

echo "== two workers, one CPU each: Ray must place them on different nodes"
"$BIN/python" - "$ADDRESS" <<'EOF'
import sys

import ray

from unirl.backends import get_backend
from unirl.conformance.workers import Echo

backend = get_backend("ray", address=sys.argv[1], num_cpus_per_worker=1)
try:
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    print(f"cluster nodes: {nodes}")
    workers = backend.spawn(Echo, [(i,) for i in range(2)])
    placed = backend.worker_nodes()
    for i, node in enumerate(placed):
        pid, host = backend.get(backend.call(workers[i], "whereami"))
        print(f"worker {i}: node {node} (pid {pid} on {host})")
    assert len(nodes) == 2, "expected two nodes in the cluster"
    assert set(placed) == set(nodes), "expected one worker on each node"
    print("OK: the workers run on both nodes")
finally:
    backend.shutdown()
EOF

rm -rf "$TMP/run"
echo "== unirl train --backend=ray --address=$ADDRESS (2 workers, 1 CPU each)"
"$BIN/unirl" train --backend=ray --address="$ADDRESS" --quiet --evaluation-episodes 0 \
    --config='{"num_workers": 2, "num_envs_per_worker": 4, "train_batch_size": 256, "backend_options": {"num_cpus_per_worker": 1}}' \
    --stop='{"training_iteration": 3}' --output "$TMP/run"
echo "result lines: $(wc -l < "$TMP/run/result.json")"

echo "== stopping the cluster (ray stop, limited to this demo's processes)"
stop_demo_cluster
trap - EXIT
left=$(demo_pids | tr '\n' ' ')
echo "processes of the demo cluster left: ${left:-none}"
echo "done"
