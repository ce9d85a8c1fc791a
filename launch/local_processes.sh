#!/usr/bin/env bash
# Several JAX processes on this machine, each with its own forced CPU devices, as a multi-host run
# has them (one process per host): a rehearsal of launch/tpu_pod.sh or launch/slurm_gpu.sbatch.
#   launch/local_processes.sh PROCESSES DEVICES_PER_PROCESS CONFIG WORKDIR [extra flags...]
#   launch/local_processes.sh 2 4 configs/tiny.py /tmp/clipmed_two
# Process 0 starts the coordinator on localhost (a free port, or $PORT). Ctrl-C or SIGTERM reaches
# every process: they save the same step and stop; rerun the same command to resume. The exit
# status is the first non-zero one of the processes.
set -euo pipefail
processes=${1:?usage: launch/local_processes.sh PROCESSES DEVICES_PER_PROCESS CONFIG WORKDIR [flags...]}
devices=${2:?devices per process}
config=${3:?config}
workdir=${4:?workdir}
shift 4
cd "$(dirname "$0")/.."
port=${PORT:-$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < processes; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$devices" \
    .venv/bin/python -m clipmed.main --config="$config" --workdir="$workdir" --distributed \
    --coordinator_address="localhost:$port" --num_processes="$processes" --process_id="$i" "$@" &
  pids+=("$!")
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do
  until wait "$pid"; do
    code=$?
    if kill -0 "$pid" 2>/dev/null; then continue; fi  # the trap interrupted `wait`; still running
    [ "$status" -ne 0 ] || status=$code
    break
  done
done
exit "$status"
