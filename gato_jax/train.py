"""Trains Gato: sharded over a device mesh, on one host or many, resumable at any step.

  python -m gato_jax.train --config=configs/demo.py --workdir=/tmp/gato_demo
  python -m gato_jax.train --config=configs/gato_79m.py --workdir=gs://BUCKET/run \\
      --config.mesh.fsdp=-1 --config.mesh.data=4
  launch/local_multihost.sh 2 --config=configs/demo.py --workdir=/tmp/gato_2proc

The story, top to bottom (`train`): validate the config; lock the workdir
(workdir_lock.py) and check that a resume continues the same model, vocabulary and
mixture; build the mesh; open the input pipeline (each process reads its own shard); lay
out parameters and optimizer state in their shards; jit the update step; restore the
newest complete checkpoint of the workdir or create the state directly in its shards; then
loop: assemble the global batch, update, log, checkpoint. SIGTERM (a preemption,
gato_jax/preemption.py) saves at the next step and exits with code 0; so does a spent
wall-clock budget (`max_train_minutes`); a NaN or inf loss stops the run with an error
naming the step before it can be checkpointed.
docs/training.md has the user's view: resuming, changing topology, metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_flags

from gato_jax import (
  checkpointing,
  cli,
  data,
  distributed,
  fingerprint,
  metrics,
  optimizer,
  preemption,
  profiling,
  sharding,
  tokenizer,
  workdir_lock,
)
from gato_jax.model import ModelOptions, from_config
from gato_jax.model import loss as loss_lib

KIND_NAMES = tuple(k.name.lower() for k in loss_lib.METRIC_KINDS)
LOSS_NORMALIZATIONS = ('tokens', 'sequences')

# ----------------------------------------------------------------------------------------
# Config: checked once, before any device work, with errors that name the key
# ----------------------------------------------------------------------------------------


def validate_config(
  config: ml_collections.ConfigDict,
  num_devices: int | None = None,
  process_count: int | None = None,
) -> None:
  """Raises ValueError naming the first bad key; the mesh and batch against the devices.

  `num_devices` and `process_count` default to this run's; gato_jax.aot passes a TPU
  slice's, so nothing here needs the hardware.
  """
  for key in ('total_steps', 'batch_size', 'grad_accum_steps', 'checkpoint_every_steps',
              'keep_checkpoints', 'log_every_steps'):
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f'config key {key} must be a positive int, got {value!r}')
  if config.batch_size % config.grad_accum_steps:
    raise ValueError(
      f'config key batch_size ({config.batch_size}) must be a multiple of '
      f'grad_accum_steps ({config.grad_accum_steps})'
    )
  budget = config.get('max_train_minutes', 0.0)
  if isinstance(budget, bool) or not isinstance(budget, int | float) or budget < 0:
    raise ValueError(f'config key max_train_minutes must be a number >= 0 (0 = no budget), '
                     f'got {budget!r}')
  if config.get('loss_normalization') not in LOSS_NORMALIZATIONS:
    raise ValueError(
      f'config key loss_normalization must be one of {LOSS_NORMALIZATIONS}, got '
      f'{config.get("loss_normalization")!r}'
    )
  profiling.profile_steps(config)  # Raises naming profile_steps.
  if 'data' not in config or 'source' not in config.data:
    raise ValueError('config key data.source is missing (see gato_jax/data/__init__.py)')
  if 'mesh' not in config:
    raise ValueError('config key mesh is missing (mesh.data, mesh.fsdp, mesh.tensor)')
  ModelOptions.from_config(config)  # Raises naming model.* keys.
  optimizer.validate_config(config)
  num_devices = jax.device_count() if num_devices is None else num_devices
  mesh = sharding.abstract_mesh(config, num_devices)  # Raises naming mesh.* keys.
  rules = config.axis_rules
  distributed.check_batch_divides(config.batch_size, mesh, rules, process_count)
  micro = config.batch_size // config.grad_accum_steps
  try:
    distributed.check_batch_divides(micro, mesh, rules, process_count)
  except ValueError as e:
    raise ValueError(
      f'with config key grad_accum_steps={config.grad_accum_steps}, each '
      f'micro-batch has {micro} sequences: {e}'
    ) from None


# ----------------------------------------------------------------------------------------
# Input pipeline
# ----------------------------------------------------------------------------------------


def make_data(config: ml_collections.ConfigDict, seed: int | None = None) -> data.DataIterator:
  """This process's iterator over its shard; `batch_size / process_count` rows a step."""
  return data.make_iterator(
    config,
    batch_size=config.batch_size // jax.process_count(),
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    seed=seed,
  )


# ----------------------------------------------------------------------------------------
# Model and optimizer: the training state, born sharded
# ----------------------------------------------------------------------------------------


class TrainState(NamedTuple):
  """What an update changes; a pytree. The step is a pure function of it and the batch."""

  params: nnx.State  # The model's nnx.Param state.
  opt_state: Any  # The optax state; moments mirror the parameters' structure.


@dataclasses.dataclass(frozen=True)
class StateLayout:
  """The training state's structure and where each leaf lives, known before any device work.

  Built once from `jax.eval_shape`, so the trainer (which then fills it with values) and
  gato_jax.aot (which compiles against it for a TPU slice it does not have) read the same
  shapes, dtypes and shardings.
  """

  graphdef: nnx.GraphDef  # The model's structure; `nnx.merge(graphdef, params)` rebuilds it.
  abstract: TrainState  # ShapeDtypeStructs carrying their shardings: a restore target.
  shardings: TrainState  # The NamedSharding of every leaf.


def abstract_train_state(
  config: ml_collections.ConfigDict, mesh: Mesh, tx: optax.GradientTransformation
) -> StateLayout:
  """Shapes and shardings of parameters and optimizer state; checks the splits. No device."""
  model = nnx.eval_shape(lambda: from_config(config, nnx.Rngs(config.seed)))
  # Parameters are the whole state: the step is a pure function of them, so nothing
  # concrete is closed over. A model that gained other state (batch statistics, RNG
  # counters) would make flax refuse this split, naming it.
  graphdef, params = nnx.split(model, nnx.Param)
  sharding.check_fsdp(params, mesh, config)
  sharding.check_tensor(params, mesh, config)
  param_shardings = sharding.state_shardings(params, mesh, config.axis_rules)
  # optax's step counts and other non-parameter leaves are replicated; moments mirror
  # their parameter's sharding.
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract_opt = jax.eval_shape(tx.init, params)
  opt_shardings = optax.tree_map_params(
    tx, lambda _, s: s, abstract_opt, param_shardings, transform_non_params=lambda _: replicated)
  if config.optimizer.host_offload:
    # Adam's moments (2/3 of the state per chip) live in host memory between steps.
    opt_shardings = jax.tree.map(lambda s: s.with_memory_kind('pinned_host'), opt_shardings)
  shardings = TrainState(param_shardings, opt_shardings)
  abstract = jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
    TrainState(params, abstract_opt),
    shardings,
  )
  return StateLayout(graphdef=graphdef, abstract=abstract, shardings=shardings)


def init_train_state(
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  tx: optax.GradientTransformation,
  layout: StateLayout,
) -> TrainState:
  """Parameters and optimizer state, each leaf created directly in its layout's shards.

  Initialization runs inside a jit whose outputs are placed shard by shard, so a model
  larger than one device's memory initializes fine.
  """
  with sharding.axis_rules(mesh, config.axis_rules):
    params = jax.jit(
      lambda: nnx.split(from_config(config, nnx.Rngs(config.seed)), nnx.Param)[1],
      out_shardings=layout.shardings.params,
    )()
  opt_state = jax.jit(tx.init, out_shardings=layout.shardings.opt_state)(params)
  return TrainState(params, opt_state)


# ----------------------------------------------------------------------------------------
# The update step
# ----------------------------------------------------------------------------------------


def make_train_step(
  config: ml_collections.ConfigDict,
  graphdef: nnx.GraphDef,
  tx: optax.GradientTransformation,
):
  """One optimizer update on a global batch, split into `grad_accum_steps` micro-batches:
  (state, batch, step) -> (state, metrics).

  Micro-batch gradients are of summed (not mean) cross-entropy, divided once by the total
  number of targets, so accumulation gives the gradient of the whole batch's mean loss.
  With `loss_normalization='sequences'` the sum is of each sequence's mean cross-entropy,
  divided by the number of sequences with targets: every sequence weighs the same, however
  few targets it has (T5X's per-sequence normalization); in packed rows (data.pack) a
  sequence is a segment, not a row. The logged `loss` is the per-token mean either way.
  """
  accum = config.grad_accum_steps
  per_sequence = config.loss_normalization == 'sequences'
  packed = bool(config.data.get('pack', False))
  chunks = config.model.loss_chunks
  offload = config.optimizer.host_offload

  def summed_loss(params, batch, key):
    model = nnx.merge(graphdef, params)
    # Packed rows (data.pack): the model keeps each segment to itself and the loss counts
    # segments as sequences. Unpacked, the ids (1 on every real token) would change
    # nothing, so the step leaves them out and stays the program it was without them.
    segments = batch.get('segment_ids') if packed else None
    batch = {k: v for k, v in batch.items() if k != 'segment_ids'}
    if segments is not None:
      batch['segment_ids'] = segments
    targets, target_kinds, weights = loss_lib.shifted_targets(
      batch['tokens'], batch['kinds'], batch.get('loss_mask'), segments)
    if chunks == 1:
      nll, correct = loss_lib.token_stats(model(batch, key=key), targets)
    else:
      nll, correct = loss_lib.chunked_token_stats(
        model.hidden(batch, key=key), model.logits, targets, chunks)
    loss, m = loss_lib.loss_from_stats(nll, correct, target_kinds, weights, segments)
    sums = {
      'nll': loss * m['targets'],
      'targets': m['targets'],
      'correct': m['accuracy'] * m['targets'],
    }
    if per_sequence:
      sums['objective'], sums['normalizer'] = m['sequence_nll'], m['sequences']
    else:
      sums['objective'], sums['normalizer'] = sums['nll'], sums['targets']
    for kind in KIND_NAMES:
      for stat in ('nll', 'correct', 'count'):
        sums[f'{stat}/{kind}'] = m[f'{stat}/{kind}']
    return sums['objective'], sums

  grad_fn = jax.grad(summed_loss, has_aux=True)

  def step_fn(state: TrainState, batch, step):
    params, opt_state = state
    # Made inside the step: a key built outside would be a concrete array, which cannot
    # exist on a TPU slice's compile-only devices (gato_jax.aot).
    key = jax.random.fold_in(jax.random.key(config.seed), step)
    if accum == 1:
      grads, sums = grad_fn(params, batch, key)
    else:
      # Rows i, i + accum, ... form micro-batch i: each stays spread over every data shard.
      def split(x):
        x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
        return x

      micro = jax.tree.map(split, batch)

      def body(carry, inputs):
        index, mb = inputs
        mb = {k: sharding.constrain(v, ('batch',) + (None,) * (v.ndim - 1)) for k, v in mb.items()}
        g, s = grad_fn(params, mb, jax.random.fold_in(key, index))
        return jax.tree.map(jnp.add, carry, (g, s)), None

      zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, batch, key))
      (grads, sums), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
    targets = jnp.maximum(sums['targets'], 1.0)
    normalizer = jnp.maximum(sums['normalizer'], 1.0)
    grads = jax.tree.map(lambda g: g / normalizer, grads)
    if offload:
      # Brought to the device for the update; out_shardings send the result back.
      opt_state = jax.device_put(opt_state, jax.memory.Space.Device)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    out = {
      'loss': sums['nll'] / targets,
      'accuracy': sums['correct'] / targets,
      'grad_norm': optax.tree.norm(grads),
      'targets': sums['targets'],
    }
    for kind in KIND_NAMES:
      count = sums[f'count/{kind}']
      out[f'loss/{kind}'] = sums[f'nll/{kind}'] / jnp.maximum(count, 1.0)
      out[f'accuracy/{kind}'] = sums[f'correct/{kind}'] / jnp.maximum(count, 1.0)
      out[f'count/{kind}'] = count
    return TrainState(params, opt_state), out

  return step_fn


def jit_train_step(
  config: ml_collections.ConfigDict,
  mesh: Mesh,
  layout: StateLayout,
  tx: optax.GradientTransformation,
  batch: dict[str, Any],
):
  """The trainer's jitted step: shardings and donation in one place, for train and aot.

  `batch` maps each input array's name to anything with `.shape` (numpy, a tf TensorSpec,
  a ShapeDtypeStruct); only its rank matters for the sharding.
  """
  rules = config.axis_rules
  batch_shardings = {
    k: distributed.batch_sharding(mesh, rules, len(spec.shape)) for k, spec in batch.items()
  }
  return jax.jit(
    make_train_step(config, layout.graphdef, tx),
    in_shardings=(layout.shardings, batch_shardings, None),
    out_shardings=(layout.shardings, NamedSharding(mesh, PartitionSpec())),
    donate_argnums=0,
  )


def check_finite(
  step: int, loss: float, last_checkpoint: int | None, resumed_from: int | None = None
) -> None:
  """Stops at a non-finite loss, naming the checkpoint a restart will resume from.

  Nothing after the last finite step is saved (metrics are flushed before every save), so
  the restart point is `last_checkpoint`. When that is the step this run resumed from, the
  same data and settings diverge the same way again: the message says so rather than let
  a restart loop on it.
  """
  if np.isfinite(loss):
    return
  if last_checkpoint is None:
    restart = 'No checkpoint was saved: a restart begins at step 0'
  else:
    restart = f'The last good checkpoint is step {last_checkpoint}, which a restart resumes from'
    if last_checkpoint == resumed_from:
      restart += (' (this run started from it too: with the same config it diverges again '
                  f'by step {step}; change the config, e.g. the learning rate, first)')
  raise FloatingPointError(f'loss is {loss} at step {step}; stopping. {restart}. Nothing '
                           'after the last finite step was saved')


def out_of_time(deadline: float | None) -> bool:
  """Whether the wall-clock budget (`max_train_minutes`) is spent.

  Process 0's clock decides for every process, so that all of them save the same step and
  stop together. It is asked only at logged steps, where the loop syncs with the host
  anyway, so the per-step pipeline never waits on this collective.
  """
  if deadline is None:
    return False
  spent = time.monotonic() >= deadline
  if jax.process_count() > 1:
    spent = bool(multihost_utils.broadcast_one_to_all(np.asarray(spent)))
  return spent


# ----------------------------------------------------------------------------------------
# The train loop
# ----------------------------------------------------------------------------------------


def train(
  config: ml_collections.ConfigDict,
  workdir: str,
  allow_config_change: str | Sequence[str] = (),
  lock_stale_seconds: float = workdir_lock.STALE_SECONDS,
) -> int:
  """Trains to `config.total_steps`, resuming from `workdir`; returns the last step done.

  With `max_train_minutes` > 0 the run also stops once that much wall clock has passed
  since its first step (compilation included; this process's start-up and restore are
  not): it saves the step it reached and returns it. The clock is this process's, so a
  resumed run gets the whole budget again. The learning rate follows the schedule of
  `optimizer.decay_steps` regardless: a run the budget stops early ends at a learning rate
  above `final_learning_rate`, as a full run would have at that step.

  The workdir is locked for the run (gato_jax/workdir_lock.py: a second trainer exits
  naming this one). `allow_config_change` names config keys that may differ from the
  checkpoint's on resume (fingerprint.check_resumable); each change is logged.
  """
  validate_config(config)
  allowed = fingerprint.parse_allowed(allow_config_change, config)
  with workdir_lock.hold(workdir, lock_stale_seconds):
    fingerprint.check_resumable(config, workdir, allowed)
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> int:
  """The run itself, once its config is checked and its workdir locked."""

  # Mesh: every device of every process, (data, fsdp, tensor) as config.mesh says.
  mesh = sharding.make_mesh(config)
  rules = config.axis_rules
  logging.info('mesh %s over %d devices, %d processes',
               dict(mesh.shape), jax.device_count(), jax.process_count())

  # Input: each process reads its own shard; global_batch assembles the global array.
  iterator = make_data(config)

  # Model and optimizer: shapes and shardings first, so no value is ever created whole.
  tx = optimizer.make_optimizer(config)
  schedule = optimizer.learning_rate_schedule(config)
  layout = abstract_train_state(config, mesh, tx)
  logging.info('%s parameters', f'{sum(x.size for x in jax.tree.leaves(layout.abstract.params)):,}')

  # Update step: compiled on first call; the state's buffers are donated to the next one.
  train_step = jit_train_step(config, mesh, layout, tx, iterator.element_spec)

  # Restore: the newest complete checkpoint onto this mesh, or a fresh state.
  checkpoints = checkpointing.Checkpoints(workdir, config.keep_checkpoints,
                                          asynchronous=config.async_checkpointing)
  state, step, iterator = checkpointing.restore_or_init(
    checkpoints, layout.abstract, lambda: init_train_state(config, mesh, tx, layout),
    iterator, lambda seed: make_data(config, seed=seed), config.seed)

  # Loop: metrics are fetched only when logged or before a save, so steps stay queued.
  options = ModelOptions.from_config(config)
  tokens_per_step = config.batch_size * options.max_length
  vocab_size = tokenizer.layout_from_config(config).vocab_size
  flops = metrics.flops_per_token(options, options.max_length, vocab_size)['total']
  peak = metrics.peak_flops(config.peak_flops)
  writer = metrics.MetricWriter(workdir, config.total_steps, step)
  preempt = preemption.Preemption(checkpoints)
  profiler = profiling.Profiler(config, workdir)
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  last_saved = resumed_from = step or None
  interval_start, interval_steps = time.perf_counter(), 0
  minutes = float(config.get('max_train_minutes', 0.0))
  deadline = time.monotonic() + 60 * minutes if minutes > 0 else None

  def flush() -> None:
    """Fetches the pending steps' metrics: every loss checked, logged steps written."""
    nonlocal interval_start, interval_steps
    fetched = jax.device_get(pending)
    pending.clear()
    seconds = (time.perf_counter() - interval_start) / max(interval_steps, 1)
    interval_start, interval_steps = time.perf_counter(), 0
    for s, m in fetched:
      check_finite(s, float(m['loss']), last_saved, resumed_from)
      if s % config.log_every_steps and s != config.total_steps:
        continue
      scalars = {k: m[k] for k in ('loss', 'accuracy', 'grad_norm')}
      scalars.update(learning_rate=schedule(s - 1), step_time_s=seconds,
                     tokens_per_s=tokens_per_step / seconds)
      if peak:
        scalars['mfu'] = tokens_per_step * flops / seconds / peak
      for kind in KIND_NAMES:
        if m[f'count/{kind}'] > 0:
          scalars[f'loss/{kind}'] = m[f'loss/{kind}']
          scalars[f'accuracy/{kind}'] = m[f'accuracy/{kind}']
      writer.write(s, scalars)

  try:
    with sharding.axis_rules(mesh, rules):
      while step < config.total_steps:
        batch = distributed.global_batch(next(iterator), mesh, rules)
        profiler.before(step + 1)
        state, step_metrics = train_step(state, batch, step)
        step += 1
        checkpoints.check(step)  # A failed background save stops the run here, naming it.
        profiler.after(step, (state, step_metrics))
        interval_steps += 1
        pending.append((step, step_metrics))
        preempted = preempt.reached(step)
        # Checked at logged steps only: a host sync happens there anyway (flush).
        spent = step % config.log_every_steps == 0 and out_of_time(deadline)
        stop = preempted or spent
        if checkpointing.save_due(step, config, stop) or step % config.log_every_steps == 0:
          flush()  # Before a save, so that a NaN step is never checkpointed.
        if checkpointing.maybe_save(checkpoints, step, state, iterator, config, mesh, stop):
          last_saved = step
        if preempted:
          logging.warning('preempted: saved step %d, exiting', step)
          break
        if spent and step < config.total_steps:
          logging.warning('stopped at step %d of total_steps=%d: max_train_minutes=%g is '
                          'spent; saved step %d', step, config.total_steps, minutes, step)
          break
      flush()
  finally:
    profiler.stop()  # A run that ends inside the window still leaves its trace.
    checkpoints.close()  # Waits for an in-flight save: the last good checkpoint completes.
    writer.close()
    preempt.close()
  return step


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  checkpointing.quiet_orbax_logs()
  f = flags.FLAGS
  distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
  # One process: a SIGTERM before training starts says so (preemption.py's handler takes
  # over at the first step). Several: JAX's preemption handler is already in charge.
  startup = (cli.sigterm_during_startup('the trainer, before its first step')
             if jax.process_count() == 1 else contextlib.nullcontext())
  with startup:
    train(f.config, f.workdir, f.allow_config_change, f.lock_stale_seconds)


def define_flags() -> None:
  """Only when run as a program: modules that import the trainer keep their own flags."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config (configs/*.py).')
  flags.DEFINE_string('workdir', None, 'Checkpoints, metrics and TensorBoard go here.')
  flags.DEFINE_string(
    'coordinator_address', '', 'host:port of process 0, for clusters JAX does not detect.'
  )
  flags.DEFINE_integer('num_processes', 0, 'Processes in the run (with the above).')
  flags.DEFINE_integer('process_id', -1, "This process's index (with the above).")
  flags.DEFINE_list(
    'allow_config_change', [],
    'Config keys (comma-separated) that may differ from the checkpoint\'s on resume, e.g. '
    'optimizer.learning_rate,tokenizer.vocabulary; each change is logged with both values.',
  )
  flags.DEFINE_float(
    'lock_stale_seconds', workdir_lock.STALE_SECONDS,
    'A workdir lock held from another host whose heartbeat is older than this is taken '
    'over (on this host, a lock whose pid is gone is taken over at once).',
  )
  flags.mark_flags_as_required(['config', 'workdir'])


if __name__ == '__main__':
  define_flags()
  cli.run(main)
