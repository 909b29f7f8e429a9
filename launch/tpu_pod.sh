#!/usr/bin/env bash
# Gato on a Cloud TPU VM slice, from your workstation: create, install, train, evaluate.
#
#   launch/tpu_pod.sh create                      # the slice (or a queued resource: QUEUED=1)
#   launch/tpu_pod.sh install                     # copy this checkout, pip install on all workers
#   launch/tpu_pod.sh preflight                   # every worker: WORKDIR writable, same checkout
#   launch/tpu_pod.sh train [train flags...]      # preflight, cleanup, then the trainer on all
#                                                 # workers in the background
#   launch/tpu_pod.sh smoke [train flags...]      # synthetic data: save, stop, resume; PASS/FAIL
#   launch/tpu_pod.sh logs                        # follow worker 0's train.log
#   launch/tpu_pod.sh stop                        # SIGTERM: every host saves one step, exits 0;
#                                                 # returns once every trainer has exited
#   launch/tpu_pod.sh cleanup                     # kill leftover TPU processes, libtpu lock file
#   launch/tpu_pod.sh eval-create | eval-install  # a one-host TPU VM for the evaluator
#   launch/tpu_pod.sh evaluate [evaluator flags...]  # watch WORKDIR's checkpoints, score them
#   launch/tpu_pod.sh delete                      # the slice, its queued resource, the eval VM
#
# Environment (defaults in brackets):
#   WORKDIR           gs://BUCKET/RUN: checkpoints, TensorBoard (required for train, evaluate)
#   CONFIG            [configs/gato_1b2.py:<ACCELERATOR_TYPE's slice preset> when there is one]
#   TPU_NAME          [gato-$USER]          ZONE [us-east5-a]     PROJECT [gcloud's default]
#   ACCELERATOR_TYPE  [v5p-32]              RUNTIME_VERSION [v2-alpha-tpuv5]
#   QUEUED=1          create through a queued resource named TPU_NAME (waits until ACTIVE)
#   SPOT=1            spot capacity: see "Spot" below
#   EVAL_NAME [$TPU_NAME-eval]  EVAL_ZONE [$ZONE]  EVAL_ACCELERATOR_TYPE [v5litepod-1]
#   EVAL_RUNTIME_VERSION [v2-alpha-tpuv5-lite]  (v5e is not offered in every zone)
#   REMOTE_DIR        [gato-jax] the checkout's directory in each worker's home
#   PYTHON_VERSION    [3.12] installed with apt on the workers if missing (jax 0.12 needs >= 3.12;
#                     Ubuntu 22.04 images get it from the deadsnakes PPA)
#   SMOKE_STEPS       [10] smoke: checkpoint interval and steps after the resume
#   SMOKE_TIMEOUT     [3600] smoke: seconds to wait for the first checkpoint
#   STOP_TIMEOUT      [900] stop: seconds each worker waits for its trainer to save and exit
#   DRY_RUN=1         print the gcloud commands instead of running them
# Training flags go to launch/tpu_worker.sh (libtpu flags per TPU generation) and then to
# `python -m gato_jax.train`; e.g. --config.mesh.data=1 --config.mesh.fsdp=-1. The hosts
# find each other through jax.distributed.initialize()'s own Cloud TPU detection.
# docs/scaling.md chooses the mesh per slice.
#
# Spot: a spot TPU VM created with gcloud is deleted when Google reclaims it, and nothing
# restarts the run. The trainer saves on SIGTERM only if the VM gets notice and enough time
# to write the checkpoint, so plan on resuming from the last periodic one
# (checkpoint_every_steps). To continue: `delete`, `create`, `install`, `train` with the
# same WORKDIR: the trainer resumes from the newest complete checkpoint there. Automatic
# restarts need GKE (launch/gke_xpk.md, --max-restarts).
set -euo pipefail

usage() {
  sed -n '2,43p' "$0" | sed 's/^# \{0,1\}//'
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
# The default config is gato_1b2 with the slice preset of ACCELERATOR_TYPE (configs/slices.py;
# v5litepod-N is preset v5e-N), compiled and shown to fit there by python -m gato_jax.aot.
preset=${ACCELERATOR_TYPE/#v5litepod-/v5e-}
if grep -q "^  '${preset}':" "$(dirname "$0")/../configs/slices.py" 2>/dev/null; then
  CONFIG=${CONFIG:-configs/gato_1b2.py:${preset}}
else
  CONFIG=${CONFIG:-configs/gato_1b2.py}
fi
WORKDIR=${WORKDIR:-}
EVAL_NAME=${EVAL_NAME:-${TPU_NAME}-eval}
EVAL_ZONE=${EVAL_ZONE:-$ZONE}
EVAL_ACCELERATOR_TYPE=${EVAL_ACCELERATOR_TYPE:-v5litepod-1}
EVAL_RUNTIME_VERSION=${EVAL_RUNTIME_VERSION:-v2-alpha-tpuv5-lite}
REMOTE_DIR=${REMOTE_DIR:-gato-jax}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
SMOKE_STEPS=${SMOKE_STEPS:-10}
SMOKE_TIMEOUT=${SMOKE_TIMEOUT:-3600}
STOP_TIMEOUT=${STOP_TIMEOUT:-900}
DRY_RUN=${DRY_RUN:-0}

cd "$(dirname "$0")/.."

scope() {  # NAME: the --zone/--project flags of that VM, one per line.
  local zone=$ZONE
  if [[ "$1" == "$EVAL_NAME" ]]; then
    zone=$EVAL_ZONE
  fi
  echo "--zone=$zone"
  if [[ -n "$PROJECT" ]]; then
    echo "--project=$PROJECT"
  fi
}

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

tpu_ssh() {  # NAME WORKER COMMAND: the command on one worker of NAME, or on all at once.
  local flags
  mapfile -t flags < <(scope "$1")
  run gcloud compute tpus tpu-vm ssh "$1" "${flags[@]}" --worker="$2" --command="$3"
}

ssh_all() {  # NAME COMMAND
  tpu_ssh "$1" all "$2"
}

on_workers() {  # tpu_worker.sh SUBCOMMAND [ARGS...] in the checkout on every training worker.
  ssh_all "$TPU_NAME" "cd $REMOTE_DIR && $(quoted env "STOP_TIMEOUT=$STOP_TIMEOUT" \
    "FORCE=${FORCE:-0}" launch/tpu_worker.sh "$@")"
}

create_vm() {  # NAME ACCELERATOR_TYPE RUNTIME_VERSION
  local spot=() flags
  mapfile -t flags < <(scope "$1")
  if [[ "$SPOT" == 1 ]]; then
    spot=(--spot)
  fi
  if [[ "$QUEUED" == 1 ]]; then
    run gcloud compute tpus queued-resources create "$1" "${flags[@]}" --node-id="$1" \
      --accelerator-type="$2" --runtime-version="$3" "${spot[@]}"
    if [[ "$DRY_RUN" != 1 ]]; then
      local state=''
      until [[ "$state" == ACTIVE ]]; do
        sleep 30
        state=$(gcloud compute tpus queued-resources describe "$1" "${flags[@]}" \
          --format='value(state.state)')
        echo "queued resource $1: ${state}"
        if [[ "$state" == FAILED || "$state" == SUSPENDED ]]; then
          exit 1
        fi
      done
    fi
  else
    run gcloud compute tpus tpu-vm create "$1" "${flags[@]}" \
      --accelerator-type="$2" --version="$3" "${spot[@]}"
  fi
}

install_on() {  # NAME EXTRAS: this checkout (without .venv, data, runs) on every worker.
  local archive flags
  mapfile -t flags < <(scope "$1")
  archive=$(mktemp -t gato-jax.XXXXXX.tar.gz)
  tar czf "$archive" --exclude=./.venv --exclude=./.git --exclude=./data \
    --exclude=./runs --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ .
  run gcloud compute tpus tpu-vm scp "$archive" "$1:gato-jax.tar.gz" "${flags[@]}" --worker=all
  rm -f "$archive"
  local py="python${PYTHON_VERSION}"
  ssh_all "$1" "set -e
command -v $py >/dev/null || { sudo apt-get update -q && { sudo apt-get install -yq $py $py-venv || { sudo add-apt-repository -y ppa:deadsnakes/ppa && sudo apt-get update -q && sudo apt-get install -yq $py $py-venv; }; }; }
mkdir -p $REMOTE_DIR && tar xzf gato-jax.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR
test -x .venv/bin/python || $py -m venv .venv
.venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[$2]'
.venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)'"
}

# Every worker writes and reads back an object under WORKDIR with the trainer's file API and
# reports a hash of its checkout; all must answer, and with one hash. Exits 1 otherwise.
preflight() {  # WORKDIR
  local out status=0 expected ok hashes mine
  out=$(on_workers preflight "$1" "$CONFIG" 2>&1 | tr -d '\r') || status=$?
  printf '%s\n' "$out"
  if [[ "$DRY_RUN" == 1 ]]; then
    return 0
  fi
  ok=$(grep -E '^preflight: worker [^ ]+ of [0-9]+ ok checkout [0-9a-f]+$' <<< "$out" || true)
  expected=$(awk '{print $5}' <<< "$ok" | sort -u)
  hashes=$(awk '{print $NF}' <<< "$ok" | sort -u)
  if [[ -z "$ok" || $(grep -c . <<< "$ok") != "$expected" ]]; then
    echo "preflight: FAIL: $(grep -c . <<< "$ok") of ${expected:-?} workers passed" \
      "(gcloud exit status ${status}); see their lines above" >&2
    return 1
  fi
  if [[ $(grep -c . <<< "$hashes") != 1 ]]; then
    echo "preflight: FAIL: the workers run different checkouts (${hashes//$'\n'/ });" \
      "run install again" >&2
    return 1
  fi
  mine=$(launch/tpu_worker.sh fingerprint)
  if [[ "$hashes" != "$mine" ]]; then
    echo "preflight: note: the workers' checkout (${hashes}) differs from this one (${mine});" \
      "'install' copies yours"
  fi
  echo "preflight: PASS: ${expected} workers can write ${1} and run checkout ${hashes}"
}

# tpu_worker.sh writes its own pid (it execs Python) to ~/train.pid for `stop`; setsid and
# nohup keep it alive when the ssh session ends; stdin from /dev/null lets ssh return.
start_trainer() {  # WORKDIR [train flags...]
  local workdir=$1 forward=''
  shift
  if [[ -n "${LIBTPU_INIT_ARGS:-}" ]]; then
    forward="LIBTPU_INIT_ARGS=$(printf '%q' "$LIBTPU_INIT_ARGS") "
  fi
  ssh_all "$TPU_NAME" "cd $REMOTE_DIR || exit 1; ${forward}setsid nohup launch/tpu_worker.sh \
$(quoted "--config=$CONFIG" "--workdir=$workdir" "$@")> ~/train.log 2>&1 < /dev/null & \
echo \"\$(hostname): trainer started, log in ~/train.log\""
}

worker0() {  # COMMAND: its output on worker 0 (nothing in a dry run).
  tpu_ssh "$TPU_NAME" 0 "$1"
}

smoke() {  # [train flags...]: the whole life of a run, on synthetic data, in WORKDIR/smoke-*.
  local dir flags waited=0 saved resumed_to
  dir="${WORKDIR%/}/smoke-$(date -u +%Y%m%d-%H%M%S)"
  flags=(--config.data.source=synthetic "--config.checkpoint_every_steps=$SMOKE_STEPS"
    --config.log_every_steps=1 "$@")
  fail() {
    echo "smoke: FAIL: $*" >&2
    exit 1
  }
  echo "smoke: run in ${dir}"
  preflight "$dir" || fail 'preflight'
  on_workers cleanup || fail 'cleanup'
  # 1. Train far past the first checkpoint, then stop it as a preemption would.
  start_trainer "$dir" "${flags[@]}" --config.total_steps=1000000
  if [[ "$DRY_RUN" != 1 ]]; then
    until worker0 "grep -q 'step $(( SMOKE_STEPS + 1 ))/' ~/train.log" 2>/dev/null; do
      if worker0 "! pgrep -f 'gato_jax[.]train' >/dev/null" 2>/dev/null; then
        worker0 'tail -n 30 ~/train.log' || true
        fail 'the trainer exited before its first checkpoint'
      fi
      (( waited < SMOKE_TIMEOUT )) || fail "no step after the first checkpoint in ${SMOKE_TIMEOUT}s"
      sleep 30
      waited=$(( waited + 30 ))
    done
  fi
  on_workers stop || fail 'stop: a trainer did not exit'
  if [[ "$DRY_RUN" == 1 ]]; then
    saved=$(( SMOKE_STEPS + 1 ))
  else
    saved=$(worker0 "grep -o 'preempted: saved step [0-9]*' ~/train.log | tail -n 1" \
      | grep -o '[0-9]*$' || true)
    [[ -n "$saved" ]] || fail "worker 0's log has no 'preempted: saved step'"
  fi
  # 2. Resume in the foreground for SMOKE_STEPS more steps: it must start from the save.
  resumed_to=$(( saved + SMOKE_STEPS ))
  ssh_all "$TPU_NAME" "cd $REMOTE_DIR && launch/tpu_worker.sh $(quoted "--config=$CONFIG" \
    "--workdir=$dir" "${flags[@]}" "--config.total_steps=$resumed_to") > ~/train.log 2>&1" \
    || { worker0 'tail -n 30 ~/train.log' || true; fail 'the resumed run failed'; }
  if [[ "$DRY_RUN" != 1 ]]; then
    worker0 "grep -q 'resumed from step $saved ' ~/train.log" \
      || fail "the second run did not resume from step ${saved}"
    worker0 "grep -q 'step $resumed_to/$resumed_to' ~/train.log" \
      || fail "the second run did not reach step ${resumed_to}"
    run gcloud storage ls "${dir}/checkpoints/${resumed_to}/" >/dev/null \
      || fail "no checkpoint ${dir}/checkpoints/${resumed_to}/"
  fi
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "smoke: dry run: the commands above, nothing checked"
  else
    echo "smoke: PASS: saved at ${saved} on SIGTERM, resumed, saved at ${resumed_to} in ${dir}"
  fi
}

case "$COMMAND" in
  create)
    create_vm "$TPU_NAME" "$ACCELERATOR_TYPE" "$RUNTIME_VERSION"
    ;;
  install)
    install_on "$TPU_NAME" tpu
    ;;
  preflight)
    need_workdir
    preflight "$WORKDIR"
    ;;
  train)
    need_workdir
    preflight "$WORKDIR"
    on_workers cleanup
    start_trainer "$WORKDIR" "$@"
    ;;
  smoke)
    need_workdir
    smoke "$@"
    ;;
  logs)
    tpu_ssh "$TPU_NAME" 0 'tail -n 100 -f ~/train.log'
    ;;
  stop)
    on_workers stop
    ;;
  cleanup)
    on_workers cleanup
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
gato_jax.evaluator $(quoted "--config=$CONFIG" "--workdir=$WORKDIR" "$@")> ~/eval.log 2>&1 \
< /dev/null &"
    ;;
  delete)
    mapfile -t train_scope < <(scope "$TPU_NAME")
    mapfile -t eval_scope < <(scope "$EVAL_NAME")
    if [[ "$QUEUED" == 1 ]]; then
      run gcloud compute tpus queued-resources delete "$TPU_NAME" "${train_scope[@]}" --force --quiet
    else
      run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${train_scope[@]}" --quiet
    fi
    run gcloud compute tpus tpu-vm delete "$EVAL_NAME" "${eval_scope[@]}" --quiet || true
    ;;
  *)
    echo "unknown command '$COMMAND'" >&2
    usage >&2
    exit 2
    ;;
esac
