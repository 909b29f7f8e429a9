"""Orbax checkpoints of a training run: what is saved, where, and how it comes back.

Layout: `WORKDIR/checkpoints/<step>/` with four items, each its own sub-directory:

  params     the model's nnx.Param state as a nested dict of arrays (sharded, OCDBT)
  opt_state  the optax state (sharded like the parameters it mirrors)
  data       each process's data-iterator position (a tf.data checkpoint per process,
             `data-<index>-of-<count>.*`): the stream continues where it stopped
  meta       JSON: step, the run's config, process count, mesh shape, and which process
             held each device of the mesh

Orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it to `<step>` only
once every item of every process is written (on object stores it writes
`commit_success.txt` instead), so a run killed mid-write leaves no directory that
`complete_steps` lists. Arrays are always restored onto the shardings of the *caller's*
arrays, so a checkpoint saved on one mesh or process count restores onto any other.
"""

from __future__ import annotations

import dataclasses
import json
import logging as pylogging
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx

from gato_jax.data import DataIterator
from gato_jax.model import Difference, checkpoint_differences

ITEMS = ('params', 'opt_state', 'data', 'meta')
State = TypeVar('State')  # The trainer's TrainState: a NamedTuple of (params, opt_state).


def checkpoint_dir(workdir: str) -> str:
  """`<workdir>/checkpoints`; a local path made absolute, as Orbax's array writer requires
  (`make demo` passes the relative `runs/demo`)."""
  path = os.path.join(workdir, 'checkpoints')
  return path if '://' in path else os.path.abspath(path)


def step_dir(workdir: str, step: int) -> str:
  return os.path.join(checkpoint_dir(workdir), str(step))


def complete_steps(workdir: str) -> list[int]:
  """Steps with a finalized checkpoint, ascending; a step still being written is never listed.

  Orbax's own test for finalization (no tmp suffix, or `commit_success.txt` on object
  stores) is used, so this agrees with what the CheckpointManager itself would restore.
  """
  directory = checkpoint_dir(workdir)
  if not epath.Path(directory).exists():
    return []
  return sorted(ocp.path.step.checkpoint_steps(directory))


# ----------------------------------------------------------------------------------------
# The data-iterator item: one tf.data checkpoint per process
# ----------------------------------------------------------------------------------------


class DataIteratorHandler(ocp.CheckpointHandler):
  """Saves and restores a DataIterator's position; runs on every process.

  Synchronous on purpose: the position must be captured before the next `next()` moves
  the iterator, and a tf.data checkpoint of a prefetching iterator takes milliseconds.
  """

  def save(self, directory: epath.Path, args: DataSave) -> None:
    args.iterator.save(os.fspath(directory))

  def restore(self, directory: epath.Path, args: DataRestore) -> None:
    args.iterator.restore(os.fspath(directory))


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataSave(ocp.args.CheckpointArgs):
  iterator: DataIterator


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataRestore(ocp.args.CheckpointArgs):
  iterator: DataIterator


# ----------------------------------------------------------------------------------------
# The manager a training run holds
# ----------------------------------------------------------------------------------------


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs carrying each array's current sharding: a restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class Checkpoints:
  """The run's CheckpointManager: asynchronous sharded saves, the newest `max_to_keep` kept."""

  def __init__(self, workdir: str, max_to_keep: int, asynchronous: bool = True):
    self.workdir = workdir
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      enable_async_checkpointing=asynchronous,
      cleanup_tmp_directories=True,  # Leftovers of a run killed mid-write.
      create=True,
    )
    self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)
    if jax.process_count() > 1:
      # JAX's preemption sync agrees on one past the furthest step any process has
      # reported (`reached_preemption`), and a process that has reported nothing counts as
      # step 0. A SIGTERM during the restore or the first compile of a run resumed at step
      # S would then be agreed on step 1, which that run never reaches: report S now.
      self.reached_preemption(self.latest_step() or 0)

  def latest_step(self) -> int | None:
    steps = complete_steps(self.workdir)
    return steps[-1] if steps else None

  def save(
    self,
    step: int,
    params: nnx.State,
    opt_state: Any,
    iterator: DataIterator,
    meta: dict[str, Any],
  ) -> None:
    """Starts an asynchronous save; returns once device arrays are copied to host."""
    args = ocp.args.Composite(
      params=ocp.args.StandardSave(nnx.to_pure_dict(params)),
      opt_state=ocp.args.StandardSave(opt_state),
      data=DataSave(iterator),
      meta=ocp.args.JsonSave(meta),
    )
    self.manager.save(step, args=args, force=True)

  def restore(self, step: int, params: nnx.State, opt_state: Any) -> tuple[Any, dict[str, Any]]:
    """(opt_state, meta) of `step`; `params` is updated in place.

    Targets are the caller's arrays, whose shardings (current mesh) the restored arrays
    take. The data item is restored separately (`restore_data`) because it may belong to
    a different process count.
    """
    params_target = abstract_like(nnx.to_pure_dict(params))
    restored = self.manager.restore(
      step,
      args=ocp.args.Composite(
        params=ocp.args.StandardRestore(params_target),
        opt_state=ocp.args.StandardRestore(abstract_like(opt_state)),
        meta=ocp.args.JsonRestore(),
      ),
    )
    nnx.replace_by_pure_dict(params, restored['params'])
    return restored['opt_state'], restored['meta']

  def restore_data(self, step: int, iterator: DataIterator) -> None:
    """Raises FileNotFoundError when the step was saved by a different process count."""
    self.manager.restore(step, args=ocp.args.Composite(data=DataRestore(iterator)))

  def reached_preemption(self, step: int) -> bool:
    """True on every process at the same step once any got SIGTERM (multi-process only).

    Call it with every step, in order, on every process: JAX's distributed runtime catches
    SIGTERM (XLA's PreemptionSyncManager, installed by `jax.distributed.initialize`) and
    agrees on the step after the furthest one any process has passed here. Works the same
    on CPU with gloo (tests/test_multiprocess.py) as on a TPU pod. Always False in a run of
    one process.
    """
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def mesh_processes(mesh: jax.sharding.Mesh) -> list:
  """The index of the process holding each device of `mesh`: nested lists, mesh-shaped.

  With 4 processes of 2 devices and mesh (data=2, fsdp=4, tensor=1) this is
  [[[0], [0], [1], [1]], [[2], [2], [3], [3]]]: each fsdp group spans two processes.
  """
  return np.vectorize(lambda d: d.process_index, otypes=[int])(mesh.devices).tolist()


def meta(step: int, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """The `meta` item: enough to tell what wrote a checkpoint, and its config to rebuild it."""
  return {
    'step': step,
    'config': json.loads(config.to_json_best_effort()),
    'process_count': jax.process_count(),
    'mesh': dict(mesh.shape),
    'mesh_processes': mesh_processes(mesh),
  }


# ----------------------------------------------------------------------------------------
# What the trainer calls: restore or init, maybe save
# ----------------------------------------------------------------------------------------


def check_resumable(
  config: ml_collections.ConfigDict, workdir: str, allowed: frozenset[str] = frozenset()
) -> None:
  """Refuses to continue a run as another model, vocabulary or mixture than its checkpoints'.

  Settings of how the step runs (model.EXECUTION_KEYS: remat, kernels, dtype, ...) may
  change on resume, as the mesh may; what the model computes, its tokens and its data may
  not (`config_differences`), unless a key is in `allowed` (--allow_config_change): each
  allowed change, of any key, is logged with both values. A checkpoint newer than
  config.total_steps is an error too: that run cannot end at total_steps. The trainer runs
  it before anything is built, so that the refusal is the run's one error.
  """
  steps = complete_steps(workdir)
  if not steps:
    return
  step = steps[-1]
  if step > config.total_steps:
    raise ValueError(
      f'{workdir} holds checkpoint {step}, past config key total_steps={config.total_steps}: '
      f'set --config.total_steps above {step} to continue this run, or use a new --workdir'
    )
  saved = saved_config(workdir, step)
  if saved is None:
    return
  differ = [d for d in config_differences(saved, config) if not is_allowed(d.key, allowed)]
  if differ:
    settings = '; '.join(map(str, differ))
    raise ValueError(
      f'{workdir} holds a run of another model, vocabulary or mixture (checkpoint {step}): '
      f'{settings}. Use a new --workdir, the run\'s own settings to resume it, or '
      f'--allow_config_change={",".join(d.key for d in differ)} to change them on purpose'
    )
  log_allowed_changes(saved, config, allowed, f'resuming checkpoint {step}')
  if config.total_steps == step:
    logging.warning('checkpoint %d is already at config key total_steps=%d: nothing to train',
                    step, config.total_steps)


# Config keys outside model.* and tokenizer.* that a checkpoint's run is held to.
RUN_KEYS = ('data.mixture',)


def _get(tree: Any, key: str) -> tuple[bool, Any]:
  """(found, value) of a dotted key in a nested dict or ConfigDict."""
  node = tree
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return False, None
    node = node[part]
  return True, node


def _json(value: Any) -> Any:
  """A config value as a checkpoint's meta records it (tuples become lists)."""
  if hasattr(value, 'to_json_best_effort'):
    return json.loads(value.to_json_best_effort())
  return json.loads(json.dumps(value, default=str))


def config_differences(saved: Any, config: ml_collections.ConfigDict) -> list[Difference]:
  """The fingerprint of a run: where `config` differs from the config `saved` recorded.

  model.* (but EXECUTION_KEYS) and tokenizer.* (model.checkpoint_differences), and
  RUN_KEYS. Keys a checkpoint does not record (older ones) are not compared, and are
  named in a log line.
  """
  differ = checkpoint_differences(saved, config)
  current = _json(config)
  unrecorded = []
  for key in RUN_KEYS:
    found, value = _get(current, key)
    if not found:
      continue
    was_recorded, old = _get(saved, key)
    if not was_recorded:
      unrecorded.append(key)
    elif old != value:
      differ.append(Difference(key, old, value))
  for section in ('model', 'tokenizer'):
    unrecorded += [f'{section}.{k}' for k in current.get(section) or {}
                   if not _get(saved, f'{section}.{k}')[0]]
  if unrecorded:
    logging.warning('the checkpoint does not record %s (written before they were compared); '
                    'they are not checked', ', '.join(unrecorded))
  return differ


def parse_allowed(text: str | Sequence[str], config: ml_collections.ConfigDict) -> frozenset[str]:
  """The keys of --allow_config_change (comma-separated); a key `config` lacks is an error.

  A section ('tokenizer') allows every key under it.
  """
  keys = [k.strip() for k in text.split(',')] if isinstance(text, str) else list(text)
  keys = [k for k in keys if k]
  current = _json(config)
  for key in keys:
    if not _get(current, key)[0]:
      raise ValueError(f'--allow_config_change names {key!r}, which is not a config key')
  return frozenset(keys)


def is_allowed(key: str, allowed: frozenset[str]) -> bool:
  return any(key == a or key.startswith(a + '.') for a in allowed)


def allowed_changes(
  saved: Any, config: ml_collections.ConfigDict, allowed: frozenset[str]
) -> list[Difference]:
  """Each leaf under an allowed key whose value differs from the checkpoint's."""
  current = _json(config)
  out = []

  def walk(key: str, old: Any, new: Any) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
      for k in sorted(set(old) | set(new)):
        walk(f'{key}.{k}', old.get(k), new.get(k))
    elif old != new:
      out.append(Difference(key, old, new))

  for key in sorted(allowed):
    walk(key, _get(saved, key)[1], _get(current, key)[1])
  return out


def log_allowed_changes(
  saved: Any, config: ml_collections.ConfigDict, allowed: frozenset[str], where: str
) -> list[Difference]:
  """Logs every change --allow_config_change let through: key, checkpoint's value, new value."""
  changes = allowed_changes(saved, config, allowed)
  for d in changes:
    logging.warning('%s: %s changes from %r to %r (--allow_config_change)',
                    where, d.key, d.checkpoint, d.config)
  return changes


def reseeded(seed: int, step: int) -> int:
  """A fresh data seed for a run that cannot continue the saved stream."""
  return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] % 2**31)


def restore_or_init(
  checkpoints: Checkpoints,
  abstract: State,
  init: Callable[[], State],
  iterator: DataIterator,
  make_iterator: Callable[[int], DataIterator],
  seed: int,
) -> tuple[State, int, DataIterator]:
  """(state, step, iterator) of the newest complete checkpoint, or `init()` at step 0.

  `abstract` is the state's ShapeDtypeStructs with the *current* mesh's shardings: the
  restored arrays are read straight into those shards, and nothing is initialized first.
  The data stream continues where it stopped when the process count is the saving run's;
  otherwise (other processes read other shards) it restarts from `make_iterator(seed)`
  with a seed drawn from `seed` and the step.
  """
  step = checkpoints.latest_step()
  if step is None:
    return init(), 0, iterator
  params = jax.tree.map(lambda x: x, abstract.params)  # A copy that restore fills in.
  opt_state, saved = checkpoints.restore(step, params, abstract.opt_state)
  try:
    checkpoints.restore_data(step, iterator)
  except FileNotFoundError as e:
    new_seed = reseeded(seed, step)
    logging.warning('cannot continue the data stream (%s); restarting it with seed %d. '
                    'Resume is exact only on the same process count.', e, new_seed)
    iterator = make_iterator(new_seed)
  logging.info('resumed from step %d (saved on mesh %s by %d processes)',
               step, saved['mesh'], saved['process_count'])
  return abstract._replace(params=params, opt_state=opt_state), step, iterator


def save_due(step: int, config: ml_collections.ConfigDict, preempted: bool = False) -> bool:
  """Every `checkpoint_every_steps`, the last step, and the step a preemption stops at."""
  return step % config.checkpoint_every_steps == 0 or step == config.total_steps or preempted


def maybe_save(
  checkpoints: Checkpoints,
  step: int,
  state: Any,
  iterator: DataIterator,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  preempted: bool = False,
) -> bool:
  """Starts saving `step` when `save_due`; True when it did."""
  if not save_due(step, config, preempted):
    return False
  checkpoints.save(step, state.params, state.opt_state, iterator, meta(step, config, mesh))
  return True


class _QuietOrbax:
  """Drops Orbax's INFO records (several per save) so that the progress line stays readable."""

  def filter(self, record) -> bool:
    return record.levelno > pylogging.INFO or '/orbax/' not in record.pathname


def quiet_orbax_logs() -> None:
  logging.get_absl_handler().addFilter(_QuietOrbax())


# ----------------------------------------------------------------------------------------
# Read-only access for the evaluator and other tools
# ----------------------------------------------------------------------------------------


def _item_dir(workdir: str, step: int, item: str) -> epath.Path:
  path = epath.Path(step_dir(workdir, step)) / item
  if step not in complete_steps(workdir):
    raise FileNotFoundError(
      f'no complete checkpoint for step {step} in {checkpoint_dir(workdir)} '
      f'(complete: {complete_steps(workdir)})'
    )
  if not path.exists():
    raise FileNotFoundError(f'checkpoint {step_dir(workdir, step)} has no {item!r} item: {path}')
  return path


def restore_params(workdir: str, step: int, model: nnx.Module) -> None:
  """Loads the checkpoint's parameters into `model` in place, onto its current shardings.

  Whatever mesh or process count saved them: each array is read straight into the shards
  the model's parameter already has. Only the `params` item is read.
  """
  path = _item_dir(workdir, step, 'params')
  state = nnx.state(model, nnx.Param)
  target = abstract_like(nnx.to_pure_dict(state))
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(path, target)
  nnx.replace_by_pure_dict(state, restored)
  nnx.update(model, state)
  logging.info('restored parameters of step %d from %s', step, path)


def read_meta(workdir: str, step: int) -> dict[str, Any]:
  """The `meta` item: {'step', 'config', 'process_count', 'mesh', 'mesh_processes'}.

  Checkpoints written before `mesh_processes` was recorded lack that key.
  """
  path = _item_dir(workdir, step, 'meta')
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    return checkpointer.restore(path)


def saved_config(workdir: str, step: int) -> dict[str, Any] | None:
  """The config checkpoint `step` recorded, as JSON; None (logged) without a `meta` item."""
  try:
    return read_meta(workdir, step)['config']
  except FileNotFoundError:
    logging.warning('checkpoint %d has no meta item; its model settings are not checked', step)
    return None


def model_differences(
  config: ml_collections.ConfigDict, workdir: str, step: int
) -> list[Difference]:
  """Where `config` describes another model, vocabulary or mixture than checkpoint `step`.

  The rule is config_differences; the trainer's resume and the evaluator use it.

  Empty when they agree, or when the checkpoint has no `meta` item (logged).
  """
  saved = saved_config(workdir, step)
  return [] if saved is None else config_differences(saved, config)


def read_config(workdir: str, step: int) -> ml_collections.ConfigDict:
  """The config the run that wrote `step` used (JSON round trip: tuples become lists)."""
  return ml_collections.ConfigDict(read_meta(workdir, step)['config'])
