#!/usr/bin/env bash
#SBATCH --job-name=gato
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --exclusive
#SBATCH --output=gato-%j.out
#SBATCH --signal=TERM@120
#
# Gato on NVIDIA GPUs across SLURM nodes: one training process per GPU (the default) or per
# node, the coordinator on the job's first node.
#
#   sbatch --nodes=1 launch/slurm_gpu.sh --config=configs/gato_1b2.py:h100-8 \
#     --workdir=/shared/runs/1b2
#   (the h100-8 preset was compiled for one node of 8 H100s; for more nodes, check a mesh first
#   with python -m gato_jax.aot --config=configs/gato_1b2.py:h100-8 --topology=h100-32 ...)
#   PROCS_PER_NODE=1 sbatch --ntasks-per-node=1 launch/slurm_gpu.sh --config=... --workdir=...
#
# Every argument goes to `python -m gato_jax.train`. The workdir must be on a file system
# every node sees (or gs://). Environment (defaults in brackets):
#   PYTHON          the interpreter on the nodes [.venv/bin/python, installed with '.[cuda]']
#   PROCS_PER_NODE  [8] 8: one process per GPU; 1: one process owns all of its node's GPUs.
#                   Must match --ntasks-per-node.
#   GPUS_PER_NODE   [8]
#   PORT            the coordinator's port [a fixed function of the job id]
#   XLA_FLAGS       replaces the pinned XLA flags below when set
# `--signal=TERM@120` asks SLURM to send SIGTERM 2 minutes before the time limit: every
# process saves the same step and exits 0; resubmit the same command to continue.
set -euo pipefail

usage() {
  sed -n '11,29p' "$0" | sed 's/^# \{0,1\}//'
}
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  usage
  exit 0
fi
if [[ -z "${SLURM_JOB_ID:-}" || $# -eq 0 ]]; then
  echo "submit with sbatch, with train flags:" >&2
  usage >&2
  exit 2
fi

PYTHON=${PYTHON:-.venv/bin/python}
PROCS_PER_NODE=${PROCS_PER_NODE:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
PORT=${PORT:-$(( 20000 + SLURM_JOB_ID % 10000 ))}

# The coordinator is process 0, which SLURM places on the first node of the allocation.
# sed reads the whole list: `head -n 1` may exit first, and under pipefail scontrol's
# SIGPIPE (exit 141) would stop the script, more often the larger the allocation.
COORDINATOR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)
NUM_PROCESSES=$(( SLURM_JOB_NUM_NODES * PROCS_PER_NODE ))

# XLA flags for GPU training, each known to the pinned jaxlib (tests/test_launch.py starts
# JAX with them, and XLA aborts on a flag it does not know):
#   --xla_gpu_enable_latency_hiding_scheduler=true  schedule collectives to overlap compute
#   --xla_gpu_enable_triton_gemm=false              cuBLAS for matmuls (JAX's GPU
#                                                   performance tips recommend it for LLMs)
#   --xla_gpu_enable_pipelined_all_gather=true      prefetch the next layer's FSDP weights
#   --xla_gpu_enable_pipelined_reduce_scatter=true  ... and overlap its gradient scatter
#   --xla_gpu_enable_pipelined_all_reduce=true      ... and data-parallel all-reduces
#   --xla_gpu_enable_while_loop_double_buffering=true  lets the above cross scan iterations
#   --xla_gpu_all_gather_combine_threshold_bytes, _reduce_scatter_, _all_reduce_ (128 MiB):
#                                                   fewer, larger collectives
DEFAULT_XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true \
--xla_gpu_enable_triton_gemm=false \
--xla_gpu_enable_pipelined_all_gather=true \
--xla_gpu_enable_pipelined_reduce_scatter=true \
--xla_gpu_enable_pipelined_all_reduce=true \
--xla_gpu_enable_while_loop_double_buffering=true \
--xla_gpu_all_gather_combine_threshold_bytes=134217728 \
--xla_gpu_reduce_scatter_combine_threshold_bytes=134217728 \
--xla_gpu_all_reduce_combine_threshold_bytes=134217728"
export XLA_FLAGS=${XLA_FLAGS:-$DEFAULT_XLA_FLAGS}
# JAX takes 75% of GPU memory up front by default; leave less unused.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
if [[ "$PROCS_PER_NODE" == 1 ]]; then
  # Under SLURM, jax.distributed gives each process the one GPU numbered SLURM_LOCALID
  # unless told otherwise: a process per node must claim all of them.
  JAX_LOCAL_DEVICE_IDS=$(seq -s, 0 $(( GPUS_PER_NODE - 1 )))
  export JAX_LOCAL_DEVICE_IDS
fi

echo "job ${SLURM_JOB_ID}: ${NUM_PROCESSES} processes on ${SLURM_JOB_NUM_NODES} nodes," \
  "coordinator ${COORDINATOR}:${PORT}"

# jax.distributed.initialize() would also find all of this in SLURM's variables by itself;
# passing it explicitly keeps the port and the process numbering visible in the log.
# SLURM_PROCID is read by each task's own shell, hence the single quotes.
# shellcheck disable=SC2016
srun --ntasks="$NUM_PROCESSES" --ntasks-per-node="$PROCS_PER_NODE" --kill-on-bad-exit=1 \
  bash -c 'coordinator=$1 count=$2; shift 2; exec "$0" -m gato_jax.train "$@" \
    --coordinator_address="$coordinator" --num_processes="$count" --process_id="$SLURM_PROCID"' \
  "$PYTHON" "${COORDINATOR}:${PORT}" "$NUM_PROCESSES" "$@"
