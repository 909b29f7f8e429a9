#!/usr/bin/env bash
# N training processes on this machine: the multi-host code path (jax.distributed, one data
# shard per process, a global batch from per-process rows) on CPU with gloo collectives.
#
#   python -m data_pipelines.prepare --config=configs/demo.py   # the datasets, once
#   launch/local_multihost.sh 2 --config=configs/demo.py --workdir=/tmp/gato_2proc
#   DEVICES_PER_PROCESS=2 launch/local_multihost.sh 4 --config=configs/demo.py \
#       --workdir=/tmp/gato_pod --config.mesh.data=2 --config.mesh.fsdp=4   # a 4-host "pod"
#
# Every argument after N goes to `python -m gato_jax.train`. Environment:
#   DEVICES_PER_PROCESS  fake CPU devices per process (default 4: 2 processes = 8 devices)
#   PORT                 the coordinator's port on 127.0.0.1 (default: a random free one)
#   PYTHON               the interpreter (default .venv/bin/python, else python3)
#   XLA_FLAGS            passed on, with the device count replaced by DEVICES_PER_PROCESS
# All processes share this terminal; process 0 writes metrics.jsonl and TensorBoard.
#
# Preemption: a SIGTERM (or Ctrl-C) to this script is passed to every process as SIGTERM,
# as a TPU pod's maintenance or spot preemption signals every host; a SIGTERM sent straight
# to any one process works too. The processes agree on one step, all save it, and each
# exits 0. The script prints each process's exit code and exits with the first non-zero
# one (0 when all are 0).
set -euo pipefail

N=${1:?usage: launch/local_multihost.sh N [train flags...]}
shift
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
xla_flags=$(sed -E 's/--xla_force_host_platform_device_count=[^ ]*//g' <<<"${XLA_FLAGS:-}")
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}${xla_flags:+ $xla_flags}"
export JAX_PLATFORMS=cpu
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

pids=()
trap 'echo "local_multihost: SIGTERM to every process" >&2; kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT
for ((i = 0; i < N; i++)); do
  "$PYTHON" -m gato_jax.train "$@" \
    --coordinator_address="127.0.0.1:${PORT}" --num_processes="$N" --process_id="$i" &
  pids+=($!)
  echo "local_multihost: process $i is pid $!" >&2
done

# Sets rc to the exit code of child $1. A trapped signal interrupts `wait` with 128+n while
# the child still runs (wait again); a child that ended meanwhile keeps its status for a
# second `wait`, which answers 127 only when the 128+n above was the child's own status.
exit_code() {
  local pid=$1 again
  while true; do
    rc=0
    wait "$pid" || rc=$?
    ((rc > 128)) || break
    kill -0 "$pid" 2>/dev/null && continue
    again=0
    wait "$pid" 2>/dev/null || again=$?
    ((again == 127)) || rc=$again
    break
  done
}

status=0
for ((i = 0; i < N; i++)); do
  exit_code "${pids[i]}"  # Not in $(...): a subshell cannot wait for this shell's children.
  echo "local_multihost: process $i exited with code $rc" >&2
  if ((status == 0)); then status=$rc; fi
done
exit "$status"
