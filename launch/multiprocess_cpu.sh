#!/usr/bin/env bash
# N processes on this machine, each with its own CPU devices, joined in one jax.distributed job:
# the multi-host code path (per-process data shares, cross-process collectives over gloo,
# gathered predictions, one writer per file) without a cluster.
#   launch/multiprocess_cpu.sh 2 configs/demo.py [WORKDIR] [--config.seed=1 ...]
# WORKDIR defaults to /tmp/sedjax_multiprocess. Process 0 prints to the terminal; process i
# logs to WORKDIR/logs/process_i.log. If one process fails, the others are stopped (a
# collective would otherwise wait for it): run the same command again to resume.
# Environment: SEDJAX_DEVICES_PER_PROCESS (default 1: one process per device, as on GPU
# nodes), SEDJAX_COORDINATOR_PORT (default: free).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?number of processes}; config=${2:?config file}; shift 2
workdir=/tmp/sedjax_multiprocess
if [[ $# -gt 0 && $1 != --* ]]; then workdir=$1; shift; fi
devices=${SEDJAX_DEVICES_PER_PROCESS:-1}
port=${SEDJAX_COORDINATOR_PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p "$workdir/logs"
flags="$(echo "${XLA_FLAGS:-}" | sed 's/--xla_force_host_platform_device_count=[0-9]*//g')"
pids=()
for ((i = 0; i < n; i++)); do
  env JAX_PLATFORMS=cpu XLA_FLAGS="$flags --xla_force_host_platform_device_count=$devices" \
    SEDJAX_COORDINATOR="127.0.0.1:$port" SEDJAX_NUM_PROCESSES="$n" SEDJAX_PROCESS_ID="$i" \
    python -m sedjax.main --config="$config" --workdir="$workdir" "$@" \
    > >(if ((i == 0)); then cat; else cat > "$workdir/logs/process_$i.log"; fi) 2>&1 &
  pids+=($!)
done
status=0
running=("${pids[@]}")
while ((${#running[@]})); do
  # whichever process ends next; a failure stops the rest
  if wait -n -p ended "${running[@]}"; then :; else status=$?; fi
  rest=(); for p in "${running[@]}"; do [[ $p != "$ended" ]] && rest+=("$p"); done
  running=("${rest[@]}")
  if ((status)) && ((${#running[@]})); then kill "${running[@]}" 2>/dev/null || true; fi
done
wait || true
if ((status)); then echo "multiprocess_cpu.sh: a process failed; logs in $workdir/logs" >&2; fi
exit $status
