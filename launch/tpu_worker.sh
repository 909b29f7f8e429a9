#!/usr/bin/env bash
# Runs on every worker of a Cloud TPU VM slice (launch/tpu_pod.sh starts it with
# --worker=all): joins the JAX cluster, pins the libtpu flags, then becomes the trainer.
#
#   launch/tpu_worker.sh --config=configs/gato_1b2.py --workdir=gs://BUCKET/gato_1b2 [flags...]
#
# Every argument goes to `python -m gato_jax.train`. Environment:
#   PYTHON            the interpreter (default .venv/bin/python)
#   LIBTPU_INIT_ARGS  replaces the pinned libtpu flags below when set
#   COORDINATOR_PORT  the jax.distributed coordinator's port on worker 0 (default 8482,
#                     the port JAX itself picks on Cloud TPU)
#   SKIP_METADATA=1   do not read the cluster from the metadata server (GKE, or tests)
#
# Why the cluster comes from the metadata server: gato_jax/distributed.py calls
# jax.distributed.initialize() when it sees a cluster in the environment
# (TPU_WORKER_HOSTNAMES on GKE), but a TPU VM created with gcloud announces its workers
# only through the GCE metadata server. This script reads the same two keys JAX's own
# GceTpuCluster reads (agent-worker-number, worker-network-endpoints) and hands them to
# the trainer as JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID. Without
# the distributed client training still runs (libtpu connects the chips), but the
# preemption sync point (SIGTERM -> every host saves the same step) does not exist.
# One slice only: multislice (MEGASCALE_*) numbering is JAX's job; use xpk for it.
set -euo pipefail

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}
if [[ $# -eq 0 || "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  usage
  exit $(( $# == 0 ? 2 : 0 ))
fi

PYTHON=${PYTHON:-.venv/bin/python}
COORDINATOR_PORT=${COORDINATOR_PORT:-8482}

# libtpu flags, the set MaxText's TPU recipes pin for FSDP/data-parallel training. Each
# lets XLA overlap a collective with compute instead of waiting for it:
#   --xla_tpu_enable_data_parallel_all_reduce_opt=true   pipeline the gradient all-reduce
#   --xla_tpu_data_parallel_opt_different_sized_ops=true ... also across differently sized arrays
#   --xla_tpu_enable_async_collective_fusion=true        run fused collectives asynchronously
#   --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true  ... including FSDP all-gathers
#   --xla_tpu_enable_async_collective_fusion_multiple_steps=true   ... spread over several steps
#   --xla_tpu_overlap_compute_collective_tc=true         overlap them with TensorCore compute
#   --xla_enable_async_all_gather=true                   async all-gather (FSDP weights)
# libtpu rejects a flag it does not know at start-up, so a libtpu that dropped one fails
# loudly rather than silently. They are taken from MaxText's scripts and have not been
# measured on this model: see docs/scaling.md.
DEFAULT_LIBTPU_INIT_ARGS="--xla_tpu_enable_data_parallel_all_reduce_opt=true \
--xla_tpu_data_parallel_opt_different_sized_ops=true \
--xla_tpu_enable_async_collective_fusion=true \
--xla_tpu_enable_async_collective_fusion_fuse_all_gather=true \
--xla_tpu_enable_async_collective_fusion_multiple_steps=true \
--xla_tpu_overlap_compute_collective_tc=true \
--xla_enable_async_all_gather=true"
export LIBTPU_INIT_ARGS=${LIBTPU_INIT_ARGS:-$DEFAULT_LIBTPU_INIT_ARGS}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

metadata() {
  curl -sf -H 'Metadata-Flavor: Google' \
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1"
}

if [[ "${SKIP_METADATA:-0}" != 1 && -z "${JAX_COORDINATOR_ADDRESS:-}" ]]; then
  endpoints=$(metadata worker-network-endpoints)
  # Entries are either hostnames or name:id:ip triples; the address is the last part.
  first=${endpoints%%,*}
  IFS=',' read -r -a workers <<< "$endpoints"
  export JAX_COORDINATOR_ADDRESS="${first##*:}:${COORDINATOR_PORT}"
  export JAX_NUM_PROCESSES=${#workers[@]}
  JAX_PROCESS_ID=$(metadata agent-worker-number)
  export JAX_PROCESS_ID
  echo "worker ${JAX_PROCESS_ID} of ${JAX_NUM_PROCESSES}, coordinator ${JAX_COORDINATOR_ADDRESS}"
fi

exec "$PYTHON" -m gato_jax.train "$@"
