#!/usr/bin/env bash
# Gato on a Cloud TPU VM slice, from your workstation: create, install, train, evaluate.
#
#   launch/tpu_pod.sh create                      # the slice (or a queued resource: QUEUED=1)
#   launch/tpu_pod.sh install                     # copy this checkout, pip install on all workers
#   launch/tpu_pod.sh train [train flags...]      # the trainer on all workers, in the background
#   launch/tpu_pod.sh logs                        # follow worker 0's train.log
#   launch/tpu_pod.sh stop                        # SIGTERM: every host saves one step, exits 0
#   launch/tpu_pod.sh eval-create | eval-install  # a one-host TPU VM for the evaluator
#   launch/tpu_pod.sh evaluate [evaluator flags...]  # watch WORKDIR's checkpoints, score them
#   launch/tpu_pod.sh delete                      # the slice, its queued resource, the eval VM
#
# Environment (defaults in brackets):
#   WORKDIR           gs://BUCKET/RUN: checkpoints, TensorBoard (required for train, evaluate)
#   CONFIG            [configs/gato_1b2.py]
#   TPU_NAME          [gato-$USER]          ZONE [us-east5-a]     PROJECT [gcloud's default]
#   ACCELERATOR_TYPE  [v5p-32]              RUNTIME_VERSION [v2-alpha-tpuv5]
#   QUEUED=1          create through a queued resource named TPU_NAME (waits until ACTIVE)
#   SPOT=1            spot capacity (preemptible: the run saves on SIGTERM and resumes)
#   EVAL_NAME [$TPU_NAME-eval]  EVAL_ACCELERATOR_TYPE [v5litepod-1]
#   EVAL_RUNTIME_VERSION [v2-alpha-tpuv5-lite]
#   REMOTE_DIR        [gato-jax] the checkout's directory in each worker's home
#   PYTHON_VERSION    [3.11] installed with apt on the workers if missing
#   DRY_RUN=1         print the gcloud commands instead of running them
# Training flags go to launch/tpu_worker.sh (libtpu flags, cluster from metadata) and then
# to `python -m gato_jax.train`; e.g. --config.mesh.data=1 --config.mesh.fsdp=-1.
# docs/scaling.md chooses the mesh per slice.
set -euo pipefail

usage() {
  sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
}

COMMAND=${1:-}
if [[ -z "$COMMAND" ]]; then
  usage
  exit 2
fi
shift
if [[ "$COMMAND" == "-h" || "$COMMAND" == "--help" ]]; then
  usage
  exit 0
fi

TPU_NAME=${TPU_NAME:-gato-${USER:-user}}
ZONE=${ZONE:-us-east5-a}
PROJECT=${PROJECT:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5p-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-v2-alpha-tpuv5}
QUEUED=${QUEUED:-0}
SPOT=${SPOT:-0}
CONFIG=${CONFIG:-configs/gato_1b2.py}
WORKDIR=${WORKDIR:-}
EVAL_NAME=${EVAL_NAME:-${TPU_NAME}-eval}
EVAL_ACCELERATOR_TYPE=${EVAL_ACCELERATOR_TYPE:-v5litepod-1}
EVAL_RUNTIME_VERSION=${EVAL_RUNTIME_VERSION:-v2-alpha-tpuv5-lite}
REMOTE_DIR=${REMOTE_DIR:-gato-jax}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
DRY_RUN=${DRY_RUN:-0}

cd "$(dirname "$0")/.."

scope=(--zone="$ZONE")
if [[ -n "$PROJECT" ]]; then
  scope+=(--project="$PROJECT")
fi

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

need_workdir() {
  if [[ "$WORKDIR" != gs://* ]]; then
    echo "WORKDIR must be a gs:// path that every host can reach, got '${WORKDIR}'" >&2
    exit 2
  fi
}

# One shell line, each argument quoted for the remote shell.
quoted() {
  printf '%q ' "$@"
}

ssh_all() {  # NAME COMMAND: the command on every worker of NAME, at once.
  run gcloud compute tpus tpu-vm ssh "$1" "${scope[@]}" --worker=all --command="$2"
}

create_vm() {  # NAME ACCELERATOR_TYPE RUNTIME_VERSION
  local spot=()
  if [[ "$SPOT" == 1 ]]; then
    spot=(--spot)
  fi
  if [[ "$QUEUED" == 1 ]]; then
    run gcloud compute tpus queued-resources create "$1" "${scope[@]}" --node-id="$1" \
      --accelerator-type="$2" --runtime-version="$3" "${spot[@]}"
    if [[ "$DRY_RUN" != 1 ]]; then
      local state=''
      until [[ "$state" == ACTIVE ]]; do
        sleep 30
        state=$(gcloud compute tpus queued-resources describe "$1" "${scope[@]}" \
          --format='value(state.state)')
        echo "queued resource $1: ${state}"
        if [[ "$state" == FAILED || "$state" == SUSPENDED ]]; then
          exit 1
        fi
      done
    fi
  else
    run gcloud compute tpus tpu-vm create "$1" "${scope[@]}" \
      --accelerator-type="$2" --version="$3" "${spot[@]}"
  fi
}

install_on() {  # NAME EXTRAS: this checkout (without .venv, data, runs) on every worker.
  local archive
  archive=$(mktemp -t gato-jax.XXXXXX.tar.gz)
  tar czf "$archive" --exclude=./.venv --exclude=./.git --exclude=./data \
    --exclude=./runs --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ .
  run gcloud compute tpus tpu-vm scp "$archive" "$1:gato-jax.tar.gz" "${scope[@]}" --worker=all
  rm -f "$archive"
  local py="python${PYTHON_VERSION}"
  ssh_all "$1" "set -e
command -v $py >/dev/null || { sudo apt-get update -q && sudo apt-get install -yq $py $py-venv; }
mkdir -p $REMOTE_DIR && tar xzf gato-jax.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR
test -x .venv/bin/python || $py -m venv .venv
.venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[$2]'
.venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)'"
}

case "$COMMAND" in
  create)
    create_vm "$TPU_NAME" "$ACCELERATOR_TYPE" "$RUNTIME_VERSION"
    ;;
  install)
    install_on "$TPU_NAME" tpu
    ;;
  train)
    need_workdir
    # nohup + pid file: the run outlives the ssh session, and `stop` can signal it. The
    # worker script execs Python, so the pid is the trainer's own.
    forward=''
    if [[ -n "${LIBTPU_INIT_ARGS:-}" ]]; then
      forward="LIBTPU_INIT_ARGS=$(printf '%q' "$LIBTPU_INIT_ARGS") "
    fi
    ssh_all "$TPU_NAME" "cd $REMOTE_DIR && ${forward}nohup launch/tpu_worker.sh \
$(quoted "--config=$CONFIG" "--workdir=$WORKDIR" "$@")> ~/train.log 2>&1 & echo \$! > ~/train.pid"
    ;;
  logs)
    run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${scope[@]}" --worker=0 \
      --command='tail -n 100 -f ~/train.log'
    ;;
  stop)
    # shellcheck disable=SC2016  # Expanded on each worker.
    ssh_all "$TPU_NAME" 'kill -TERM "$(cat ~/train.pid)" || true'
    ;;
  eval-create)
    QUEUED=0 create_vm "$EVAL_NAME" "$EVAL_ACCELERATOR_TYPE" "$EVAL_RUNTIME_VERSION"
    ;;
  eval-install)
    install_on "$EVAL_NAME" 'envs,tpu'
    ;;
  evaluate)
    need_workdir
    # MUJOCO_GL=egl renders DM Control pixels headless (docs/installation.md).
    ssh_all "$EVAL_NAME" "cd $REMOTE_DIR && MUJOCO_GL=egl nohup .venv/bin/python -m \
gato_jax.evaluator $(quoted "--config=$CONFIG" "--workdir=$WORKDIR" "$@")> ~/eval.log 2>&1 &"
    ;;
  delete)
    if [[ "$QUEUED" == 1 ]]; then
      run gcloud compute tpus queued-resources delete "$TPU_NAME" "${scope[@]}" --force --quiet
    else
      run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${scope[@]}" --quiet
    fi
    run gcloud compute tpus tpu-vm delete "$EVAL_NAME" "${scope[@]}" --quiet || true
    ;;
  *)
    echo "unknown command '$COMMAND'" >&2
    usage >&2
    exit 2
    ;;
esac
