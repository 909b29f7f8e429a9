#!/usr/bin/env bash
# N training processes on this machine: the multi-host code path (jax.distributed, one data
# shard per process, a global batch from per-process rows) on CPU with gloo collectives.
#
#   launch/local_multihost.sh 2 --config=configs/demo.py --workdir=/tmp/gato_2proc
#
# Every argument after N goes to `python -m gato_jax.train`. Environment:
#   DEVICES_PER_PROCESS  fake CPU devices per process (default 4: 2 processes = 8 devices)
#   PORT                 the coordinator's port on 127.0.0.1 (default: a random free one)
#   PYTHON               the interpreter (default .venv/bin/python, else python3)
# All processes share this terminal; process 0 writes metrics.jsonl and TensorBoard.
set -euo pipefail

N=${1:?usage: launch/local_multihost.sh N [train flags...]}
shift
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}"
export JAX_PLATFORMS=cpu
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

pids=()
for ((i = 0; i < N; i++)); do
  "$PYTHON" -m gato_jax.train "$@" \
    --coordinator_address="127.0.0.1:${PORT}" --num_processes="$N" --process_id="$i" &
  pids+=($!)
done
# A SIGTERM to this script is a preemption of every process: each saves and exits 0.
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT
status=0
for pid in "${pids[@]}"; do
  while true; do
    wait "$pid" && break
    rc=$?
    # 128+n means wait itself was interrupted by a trapped signal: the child still runs.
    if kill -0 "$pid" 2>/dev/null; then continue; fi
    status=$rc
    break
  done
done
exit "$status"
