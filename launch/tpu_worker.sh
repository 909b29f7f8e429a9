#!/usr/bin/env bash
# Runs on every worker of a Cloud TPU VM slice (launch/tpu_pod.sh starts it with
# --worker=all, xpk in the image): pins the libtpu flags, then becomes the trainer.
#
#   launch/tpu_worker.sh --config=configs/gato_1b2.py --workdir=gs://BUCKET/gato_1b2 [flags...]
#   launch/tpu_worker.sh stop                   # SIGTERM the trainer started here; wait for it
#   launch/tpu_worker.sh cleanup                # free the chips a crashed run still holds
#   launch/tpu_worker.sh preflight WORKDIR CONFIG  # WORKDIR writable? print this checkout's hash
#   launch/tpu_worker.sh fingerprint            # the checkout's hash alone (also on a workstation)
#
# Train flags go to `python -m gato_jax.train`. Environment:
#   PYTHON            the interpreter (default .venv/bin/python)
#   LIBTPU_INIT_ARGS  replaces the per-generation libtpu flags below when set and non-empty
#   ACCELERATOR_TYPE  e.g. v5p-32, v5litepod-16: picks the flags (default: TPU_ACCELERATOR_TYPE,
#                     else the TPU VM's metadata `accelerator-type`)
#   PID_FILE          where the trainer's pid goes, for `stop` (default ~/train.pid)
#   STOP_TIMEOUT      seconds `stop` waits for the checkpoint and exit (default 900)
#   FORCE=1           `cleanup` kills a trainer that is still running too
#   SKIP_METADATA=1   never ask the GCE metadata server (GKE, tests)
#
# The cluster: gato_jax/distributed.py calls jax.distributed.initialize() with no arguments
# on any Cloud TPU VM, and JAX reads the workers from the metadata server (gcloud TPU VMs,
# queued resources, multislice) or from TPU_WORKER_HOSTNAMES (GKE) itself. This script no
# longer reads the cluster; JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, if
# you export them, still win. The metadata server is read here only for the accelerator type.
set -euo pipefail

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
}
if [[ $# -eq 0 || "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  usage
  exit $(( $# == 0 ? 2 : 0 ))
fi

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PID_FILE=${PID_FILE:-$HOME/train.pid}
STOP_TIMEOUT=${STOP_TIMEOUT:-900}
WORKER=$(hostname)

metadata() {  # KEY: an instance attribute of this TPU VM, or nothing.
  if [[ "${SKIP_METADATA:-0}" != 1 ]]; then
    curl -sf -m 10 -H 'Metadata-Flavor: Google' \
      "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1" || true
  fi
}

# The trainer's pid when it is alive. A zombie or a recycled pid has another (or an empty)
# command line, so the match on the module name is the liveness test.
running_trainer() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && grep -qa 'gato_jax[.]train' "/proc/$pid/cmdline" 2>/dev/null \
    && echo "$pid"
}

stop_trainer() {
  local pid waited=0
  if ! pid=$(running_trainer); then
    echo "${WORKER}: no trainer running (pid file ${PID_FILE})"
    return 0
  fi
  # One SIGTERM: the trainer saves at its next step (all hosts agree on which) and exits 0.
  kill -TERM "$pid"
  echo "${WORKER}: SIGTERM sent to trainer ${pid}; waiting up to ${STOP_TIMEOUT}s for its checkpoint"
  while running_trainer >/dev/null; do
    if (( waited >= STOP_TIMEOUT )); then
      echo "${WORKER}: trainer ${pid} still running after ${STOP_TIMEOUT}s" \
        "(a large checkpoint may still be writing; 'cleanup' with FORCE=1 kills it)" >&2
      return 1
    fi
    sleep 1
    waited=$(( waited + 1 ))
  done
  echo "${WORKER}: trainer ${pid} exited after ${waited}s"
}

# What a crashed or orphaned run leaves behind: trainer processes, other processes holding
# the TPU device files (/dev/accel* on v4/v5p, /dev/vfio/N on v5e/v6e), and libtpu's lock
# file, any of which makes the next start fail with "TPU in use".
cleanup_chips() {
  local pid holders devices=()
  if pid=$(running_trainer) && [[ "${FORCE:-0}" != 1 ]]; then
    echo "${WORKER}: trainer ${pid} is running; 'stop' it first (it saves), or FORCE=1" >&2
    return 1
  fi
  # The bracket keeps this pattern from matching the shell that runs this very command.
  sudo pkill -KILL -f 'gato_jax[.]train' || true
  shopt -s nullglob
  devices=(/dev/accel* /dev/vfio/[0-9]*)
  shopt -u nullglob
  if (( ${#devices[@]} )); then
    holders=$(sudo lsof -t -w "${devices[@]}" 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [[ -n "${holders// /}" ]]; then
      echo "${WORKER}: killing processes holding the TPU: ${holders}"
      # shellcheck disable=SC2086  # One pid per word.
      sudo kill -9 $holders || true
    fi
  fi
  sudo rm -f /tmp/libtpu_lockfile
  echo "${WORKER}: TPU free"
}

# A hash of the code a run executes (Python, shell, package metadata), the same on a
# workstation as on a worker after `install`: the tarball leaves out the same directories.
fingerprint() {
  local sum=(sha256sum)
  command -v sha256sum >/dev/null || sum=(shasum -a 256)
  find . \( -path ./.venv -o -path ./.git -o -path ./data -o -path ./runs -o -path ./build \
    -o -name __pycache__ -o -name '*.egg-info' \) -prune -o -type f \
    \( -name '*.py' -o -name '*.sh' -o -name '*.toml' -o -name '*.cfg' \) -print \
    | LC_ALL=C sort | tr '\n' '\0' | xargs -0 "${sum[@]}" | "${sum[@]}" | cut -c1-16
}

# One line the workstation parses: "preflight: worker ID of COUNT ok checkout HASH".
preflight() {
  local workdir=${1:?preflight WORKDIR CONFIG} config=${2:?preflight WORKDIR CONFIG}
  local id count endpoints hash probe
  id=$(metadata agent-worker-number)
  endpoints=$(metadata worker-network-endpoints)
  id=${id:-$WORKER}
  count=$(( $(tr -cd ',' <<< "$endpoints" | wc -c) + 1 ))
  # A slice preset rides after the file name: configs/gato_1b2.py:v5e-16.
  if [[ ! -f "${config%%:*}" ]]; then
    echo "preflight: worker ${id} FAIL: no config file ${config%%:*} in $(pwd)"
    return 1
  fi
  hash=$(fingerprint)
  probe="${workdir%/}/.preflight/${WORKER}-$$"
  # The trainer's own file API and credentials (the VM's service account), not gsutil's.
  if ! "$PYTHON" - "$probe" "$hash" <<'EOF'
import sys
import tensorflow as tf
path, text = sys.argv[1:]
with tf.io.gfile.GFile(path, 'w') as f:
  f.write(text)
with tf.io.gfile.GFile(path) as f:
  back = f.read()
tf.io.gfile.remove(path)
if back != text:
  sys.exit(f'read back {back!r}, wrote {text!r}')
EOF
  then
    echo "preflight: worker ${id} FAIL: cannot write and read back ${probe}"
    return 1
  fi
  echo "preflight: worker ${id} of ${count} ok checkout ${hash}"
}

case "$1" in
  stop) stop_trainer; exit ;;
  cleanup) cleanup_chips; exit ;;
  preflight) shift; preflight "$@"; exit ;;
  fingerprint) fingerprint; exit ;;
esac

# libtpu flags per TPU generation, each set taken from MaxText's recipes for that generation
# (MaxText/configs/v5e/*.sh, v5p/*.sh). They have not been measured on this model (see
# docs/scaling.md). libtpu rejects a flag it does not know at start-up, so a set that does
# not belong to a chip fails loudly at best; hence no set at all for a generation without a
# recipe (v4, v6e, unknown): pass LIBTPU_INIT_ARGS yourself there.
# v5e (and the shared part of v5p), each letting XLA overlap a collective with compute:
#   --xla_tpu_enable_data_parallel_all_reduce_opt=true   pipeline the gradient all-reduce
#   --xla_tpu_data_parallel_opt_different_sized_ops=true ... also across differently sized arrays
#   --xla_tpu_enable_async_collective_fusion=true        run fused collectives asynchronously
#   --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true  ... including FSDP all-gathers
#   --xla_tpu_enable_async_collective_fusion_multiple_steps=true   ... spread over several steps
#   --xla_tpu_overlap_compute_collective_tc=true         overlap them with TensorCore compute
#   --xla_enable_async_all_gather=true                   async all-gather (FSDP weights)
V5E_LIBTPU_INIT_ARGS="--xla_tpu_enable_data_parallel_all_reduce_opt=true \
--xla_tpu_data_parallel_opt_different_sized_ops=true \
--xla_tpu_enable_async_collective_fusion=true \
--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true \
--xla_tpu_enable_async_collective_fusion_multiple_steps=true \
--xla_tpu_overlap_compute_collective_tc=true \
--xla_enable_async_all_gather=true"
# v5p: the above plus three that only MaxText's v5p recipes set:
#   --xla_tpu_megacore_fusion_allow_ags=false   keep all-gathers out of megacore fusions (a v5p
#                                               chip is one megacore of two TensorCores), so
#                                               they stay asynchronous
#   --xla_enable_async_collective_permute=true  collective-permutes asynchronous too
#   --xla_tpu_enable_ag_backward_pipelining=true  prefetch FSDP weights in the backward pass
V5P_LIBTPU_INIT_ARGS="$V5E_LIBTPU_INIT_ARGS \
--xla_tpu_megacore_fusion_allow_ags=false \
--xla_enable_async_collective_permute=true \
--xla_tpu_enable_ag_backward_pipelining=true"

ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-${TPU_ACCELERATOR_TYPE:-}}
if [[ -z "$ACCELERATOR_TYPE" ]]; then
  ACCELERATOR_TYPE=$(metadata accelerator-type)
fi
if [[ -n "${LIBTPU_INIT_ARGS:-}" ]]; then
  echo "libtpu flags: yours (LIBTPU_INIT_ARGS)" >&2
else
  case "$ACCELERATOR_TYPE" in
    v5litepod-* | v5e-*) LIBTPU_INIT_ARGS=$V5E_LIBTPU_INIT_ARGS ;;
    v5p-*) LIBTPU_INIT_ARGS=$V5P_LIBTPU_INIT_ARGS ;;
    *) LIBTPU_INIT_ARGS='' ;;
  esac
  if [[ -n "$LIBTPU_INIT_ARGS" ]]; then
    echo "libtpu flags: the set pinned for ${ACCELERATOR_TYPE}" >&2
  else
    echo "libtpu flags: none pinned for accelerator type '${ACCELERATOR_TYPE:-unknown}';" \
      "libtpu defaults (set LIBTPU_INIT_ARGS to choose)" >&2
  fi
fi
export LIBTPU_INIT_ARGS
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

# exec keeps this pid, so the pid file names the trainer itself, whatever started this
# script (nohup, setsid, a subshell of `cd ... && ...`, a container's entry point).
mkdir -p "$(dirname "$PID_FILE")"
echo $$ > "$PID_FILE"
exec "$PYTHON" -m gato_jax.train "$@"
