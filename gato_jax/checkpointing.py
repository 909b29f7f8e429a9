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

Integrity: process 0 writes `<step>/checksums.json` (the size and sha256 of every file of
the four items) inside the tmp directory, after every process's writes and before Orbax's
rename, so a step is complete only with its checksums. Restores verify them first: a step
with a flipped byte, a truncated or a missing file is named and skipped, and the trainer
resumes from the newest step that verifies (`restore_or_init`), moving the damaged one to
`WORKDIR/damaged_checkpoints/`. A step saved before checksums were written restores with a
warning that it is unverified. A failed asynchronous save (a full disk) stops the run at the
next step, naming the step and the cause (`Checkpoints.check`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging as pylogging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from gato_jax.data import DataIterator

ITEMS = ('params', 'opt_state', 'data', 'meta')
CHECKSUMS = 'checksums.json'  # In each step directory: {'files': {path: {size, sha256}}}.
DAMAGED = 'damaged_checkpoints'  # WORKDIR/<this>/<step>: steps the trainer set aside.
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
# Integrity: checksums written at save time, verified before a restore
# ----------------------------------------------------------------------------------------


class DamagedCheckpoint(ValueError):
  """A step whose files differ from the checksums recorded when it was saved."""


def _files(directory: epath.Path, items: tuple[str, ...]) -> list[str]:
  """Every file under `directory`'s item sub-directories, as sorted relative paths."""
  found = []

  def walk(path: epath.Path, relative: str) -> None:
    for child in path.iterdir():
      name = f'{relative}/{child.name}'
      if child.is_dir():
        walk(child, name)
      else:
        found.append(name)

  for item in items:
    if (directory / item).is_dir():
      walk(directory / item, item)
  return sorted(found)


def file_sha256(path: epath.Path) -> str:
  """Streamed in 4 MiB blocks: hashlib releases the GIL, so the train loop runs on meanwhile."""
  digest = hashlib.sha256()
  with path.open('rb') as f:
    while block := f.read(4 << 20):
      digest.update(block)
  return digest.hexdigest()


def write_checksums(directory: epath.PathLike) -> None:
  """Records size and sha256 of every file of the step's items in `directory/checksums.json`.

  Orbax's own metadata files (`_CHECKPOINT_METADATA`, `commit_success.txt`) are left out:
  Orbax may rewrite them when it commits the step.
  """
  directory = epath.Path(directory)
  files = {
    name: {'size': (directory / name).stat().length, 'sha256': file_sha256(directory / name)}
    for name in _files(directory, ITEMS)
  }
  (directory / CHECKSUMS).write_text(json.dumps({'algorithm': 'sha256', 'files': files}))


_UNVERIFIED: set[str] = set()


def verify_step(workdir: str, step: int, items: tuple[str, ...] = ITEMS) -> bool:
  """True when `items` of `step` match their checksums; False (warned) when it has none.

  Raises DamagedCheckpoint naming the step and the first file that is missing, of another
  size (truncated) or of other bytes (corrupt) than when it was saved. A step saved before
  checksums were written has no `checksums.json`: it is restored, unverified, with a
  warning, so that old runs still resume and score.
  """
  directory = epath.Path(step_dir(workdir, step))
  path = directory / CHECKSUMS
  if not path.exists():
    if os.fspath(path) not in _UNVERIFIED:  # Once per step, however often it is read.
      _UNVERIFIED.add(os.fspath(path))
      logging.warning('checkpoint %d has no %s (saved before checksums were written): '
                      'restoring it unverified', step, path)
    return False
  try:
    files = json.loads(path.read_text())['files']
  except (ValueError, KeyError) as e:
    raise DamagedCheckpoint(f'checkpoint {step} is damaged: {path} is unreadable ({e})') from e
  for name, saved in files.items():
    if name.split('/')[0] not in items:
      continue
    file = directory / name
    if not file.exists():
      problem = 'is missing'
    elif (size := file.stat().length) != saved['size']:
      problem = f'has {size} bytes, {saved["size"]} when saved (truncated or overwritten)'
    elif file_sha256(file) != saved['sha256']:
      problem = 'differs from the bytes saved (its sha256 does not match checksums.json)'
    else:
      continue
    raise DamagedCheckpoint(f'checkpoint {step} is damaged: {file} {problem}')
  return True


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
  """The run's CheckpointManager: asynchronous sharded saves, the newest `max_to_keep` kept.

  Orbax's writer is always the asynchronous one, because only it runs a hook on process 0
  after every process has written and before the step is committed: that hook writes
  `checksums.json`. `asynchronous=False` waits for each save before `save` returns.
  """

  def __init__(self, workdir: str, max_to_keep: int, asynchronous: bool = True):
    self.workdir = workdir
    self.asynchronous = asynchronous
    self._writing: int | None = None  # The step the commit hook is writing checksums of.
    self._in_flight: int | None = None  # The step saved and not yet checked for errors.
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      enable_async_checkpointing=True,
      async_options=ocp.AsyncOptions(post_finalization_callback=self._write_checksums),
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
    self._finish(step)  # The previous save's failure, if any, is reported first.
    args = ocp.args.Composite(
      params=ocp.args.StandardSave(nnx.to_pure_dict(params)),
      opt_state=ocp.args.StandardSave(opt_state),
      data=DataSave(iterator),
      meta=ocp.args.JsonSave(meta),
    )
    self._writing = step
    try:
      self.manager.save(step, args=args, force=True)
    except Exception as e:
      raise RuntimeError(self._failure(step, step, e)) from e
    self._in_flight = step
    if not self.asynchronous:
      self._finish(step)

  def _write_checksums(self) -> None:
    """Orbax's post-finalization hook: process 0 only, every process's files written.

    The step is still in its tmp directory (`<step>.orbax-checkpoint-tmp`) on a local
    disk, or in `<step>` without `commit_success.txt` on an object store: either way the
    checksums are in place before the step counts as complete. An error here (a full
    disk) fails the save like any other write.
    """
    directory = epath.Path(checkpoint_dir(self.workdir))
    pending = list(directory.glob(f'{self._writing}{ocp.path.step.TMP_DIR_SUFFIX}*'))
    write_checksums(pending[0] if len(pending) == 1 else directory / str(self._writing))

  def check(self, step: int) -> None:
    """Raises RuntimeError once the last asynchronous save has failed; call it every step.

    Orbax keeps a failed background save's error until the next save waits for it, many
    steps later; this looks after every step instead, without waiting on a save in flight,
    so that a full disk stops the run at the step after the failure.
    """
    if self._in_flight is not None and not self.manager.is_saving_in_progress():
      self._finish(step)

  def _finish(self, now: int | None) -> None:
    """Waits for the save in flight; a failure raises RuntimeError naming step and cause."""
    saving, self._in_flight = self._in_flight, None
    if saving is None:
      return
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      raise RuntimeError(self._failure(saving, now, e)) from e

  def _failure(self, saving: int, now: int | None, error: Exception) -> str:
    when = f' (found at step {now})' if now is not None and now != saving else ''
    good = [s for s in complete_steps(self.workdir) if s != saving]
    last = (f'the last complete checkpoint is step {good[-1]}, which a restart resumes from'
            if good else 'no complete checkpoint is left: a restart begins at step 0')
    return (f'saving checkpoint {saving} to {step_dir(self.workdir, saving)} failed{when}: '
            f'{type(error).__name__}: {error}. Stopping; {last}')

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
    self._finish(None)
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the save in flight (its failure raises, naming it), then closes Orbax."""
    try:
      self._finish(None)
    finally:
      self.manager.close()

  def verify(self, step: int) -> str | None:
    """None when `step` verifies (or is an unverified old one); else what is damaged.

    Process 0 reads the files and tells the others, so that every process of a pod takes
    the same decision and the bytes are read once.
    """
    problem = ''
    if jax.process_index() == 0:
      try:
        verify_step(self.workdir, step)
      except DamagedCheckpoint as e:
        problem = str(e)
    if jax.process_count() > 1:
      damaged = multihost_utils.broadcast_one_to_all(np.int32(bool(problem)))
      problem = problem or ('damaged (process 0 logged the file)' if damaged else '')
    return problem or None

  def set_aside(self, step: int) -> str:
    """Moves a damaged step to WORKDIR/damaged_checkpoints/, where it is kept to inspect.

    The run then saves that step afresh instead of Orbax refusing a step that exists.
    """
    target = epath.Path(self.workdir) / DAMAGED / str(step)
    if target.exists():
      target = target.parent / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      epath.Path(step_dir(self.workdir, step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'gato_jax set aside checkpoint {step}')
    self.manager.reload()
    return os.fspath(target)


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

  The newest step is the newest that verifies (`newest_good_step`): a damaged one is
  logged, named and set aside. `abstract` is the state's ShapeDtypeStructs with the
  *current* mesh's shardings: the restored arrays are read straight into those shards,
  and nothing is initialized first.
  The data stream continues where it stopped when the process count is the saving run's;
  otherwise (other processes read other shards) it restarts from `make_iterator(seed)`
  with a seed drawn from `seed` and the step.
  """
  step = newest_good_step(checkpoints)
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


def newest_verified_step(workdir: str, items: tuple[str, ...]) -> int | None:
  """The newest complete step whose `items` verify, reading only; damaged ones are logged.

  The resume check reads the `meta` of the step the trainer will restore, and the
  evaluator's --step=-1 scores this step; the trainer itself (`newest_good_step`) also
  sets damaged steps aside.
  """
  for step in reversed(complete_steps(workdir)):
    try:
      verify_step(workdir, step, items)
    except DamagedCheckpoint as e:
      logging.error('%s; skipping it', e)
      continue
    return step
  return None


def newest_good_step(checkpoints: Checkpoints) -> int | None:
  """The newest complete step that verifies; damaged newer ones are logged and set aside.

  None for a workdir without checkpoints. When every step is damaged this raises instead
  of starting afresh: a run never silently restarts from step 0 beside its checkpoints.
  """
  steps = complete_steps(checkpoints.workdir)
  skipped = []
  for step in reversed(steps):
    problem = checkpoints.verify(step)
    if problem is None:
      if skipped:
        logging.warning('resuming from checkpoint %d, the newest that verifies (skipped %s)',
                        step, ', '.join(map(str, skipped)))
      return step
    target = checkpoints.set_aside(step)
    logging.error('%s; skipping it (moved to %s)', problem, target)
    skipped.append(f'{step}: {problem}')
  if skipped:
    raise DamagedCheckpoint(
      f'every checkpoint in {checkpoint_dir(checkpoints.workdir)} is damaged, so the run '
      f'cannot resume (they are in {os.path.join(checkpoints.workdir, DAMAGED)}): '
      + '; '.join(skipped)
    )
  return None


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
  the model's parameter already has. Only the `params` item is read, once its bytes (and
  the `meta` item's) match the step's checksums (`verify_step`).
  """
  path = _item_dir(workdir, step, 'params')
  verify_step(workdir, step, ('params', 'meta'))  # Damaged: DamagedCheckpoint, naming the file.
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


def read_config(workdir: str, step: int) -> ml_collections.ConfigDict:
  """The config the run that wrote `step` used (JSON round trip: tuples become lists)."""
  return ml_collections.ConfigDict(read_meta(workdir, step)['config'])
