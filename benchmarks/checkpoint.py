"""Checkpoint cost: the training time an asynchronous save adds, and how long restores take.

  python -m benchmarks.checkpoint --config=configs/demo.py
  python -m benchmarks.checkpoint --config=configs/gato_79m.py --batch_size=8 \\
      --config.model.max_length=256 --json_out=benchmarks/results/checkpoint_gato_79m.json

The trainer's own pieces (gato_jax/train.py) on synthetic batches. First the steady-state
step time without saves; then `--saves` rounds of one asynchronous save followed by steps
the same number of steps with a save before them, waiting for its commit at the end: the
difference is what a save costs the run (the blocking device-to-host copy, any slowdown
from the background write, and the part of the write that outlasts the steps). Restores
read the newest checkpoint back onto the same shardings: the whole training state (the
trainer's resume) and the parameters alone (the evaluator's).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import time

import jax
import ml_collections
from absl import flags
from flax import nnx
from ml_collections import config_flags

from benchmarks import report
from gato_jax import checkpointing, cli, distributed, optimizer, sharding, train
from gato_jax.model import from_config

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/demo.py', 'Experiment config.')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Global sequences per step.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed plain steps for the baseline.')
_SAVES = flags.DEFINE_integer('saves', 3, 'Timed asynchronous saves.')
_WORKDIR = flags.DEFINE_string('workdir', '', 'Where to write checkpoints; default a tmp dir.')
_JSON = flags.DEFINE_string('json_out', '', 'Default benchmarks/results/checkpoint_<config>.json.')


def measure(config: ml_collections.ConfigDict, workdir: str, steps: int, saves: int) -> dict:
  config.data = ml_collections.ConfigDict({'source': 'synthetic'})
  train.validate_config(config)
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  layout = train.abstract_train_state(config, mesh, tx)
  iterator = train.make_data(config)
  step_fn = train.jit_train_step(config, mesh, layout, tx, iterator.element_spec)
  with sharding.axis_rules(mesh, config.axis_rules):
    batch = distributed.global_batch(next(iterator), mesh, config.axis_rules)
    state = [train.init_train_state(config, mesh, tx, layout)]

    def run(n: int, first: int) -> float:
      start = time.perf_counter()
      for i in range(n):
        state[0], m = step_fn(state[0], batch, first + i)
      jax.block_until_ready(m['loss'])
      return time.perf_counter() - start

    run(2, 0)  # Compiles.
    step_s = run(steps, 2) / steps
    checkpoints = checkpointing.Checkpoints(workdir, max_to_keep=2)
    meta = checkpointing.meta(0, config, mesh)
    # The first save also compiles Orbax's device-to-host slicing; not what a run pays later.
    checkpoints.save(1, state[0].params, state[0].opt_state, iterator, meta)
    checkpoints.wait()
    # Each round: `steps` plain steps, then a save and the same steps, waiting for the
    # commit at the end; the difference is what the save cost the run.
    blocking, added, commit = [], [], []
    for r in range(saves):
      plain = run(steps, 100)
      start = time.perf_counter()
      checkpoints.save(10 + r, state[0].params, state[0].opt_state, iterator, meta)
      blocking.append(time.perf_counter() - start)
      run(steps, 100)
      checkpoints.wait()
      commit.append(time.perf_counter() - start)
      added.append(commit[-1] - plain)
    checkpoints.close()

  last = checkpointing.complete_steps(workdir)[-1]
  size = sum(
    f.stat().st_size
    for f in pathlib.Path(checkpointing.step_dir(workdir, last)).rglob('*')
    if f.is_file()
  )
  restore = checkpointing.Checkpoints(workdir, max_to_keep=2)
  start = time.perf_counter()
  restored_opt, _ = restore.restore(last, state[0].params, state[0].opt_state)
  jax.block_until_ready((state[0].params, restored_opt))
  restore_s = time.perf_counter() - start
  restore.close()
  model = sharding.create_sharded(lambda: from_config(config, nnx.Rngs(1)), mesh, config.axis_rules)
  jax.block_until_ready(nnx.state(model, nnx.Param))  # Initialization is not restore time.
  start = time.perf_counter()
  checkpointing.restore_params(workdir, last, model)
  jax.block_until_ready(nnx.state(model, nnx.Param))
  params_s = time.perf_counter() - start
  return {
    'params': sum(x.size for x in jax.tree.leaves(state[0].params)),
    'checkpoint_mb': size / 2**20,
    'mesh': dict(mesh.shape),
    'step_s': step_s,
    'save_blocking_s': min(blocking),
    'save_added_s': sorted(added)[len(added) // 2],
    'save_commit_s': sorted(commit)[len(commit) // 2],
    'restore_state_s': restore_s,
    'restore_params_s': params_s,
  }


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  config.batch_size = _BATCH.value
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix='gato_checkpoint_bench_')
  try:
    result = measure(config, workdir, _STEPS.value, _SAVES.value)
  finally:
    if not _WORKDIR.value:
      shutil.rmtree(workdir, ignore_errors=True)
  name = pathlib.Path(config_flags.get_config_filename(flags.FLAGS['config'])).stem
  rows = [
    ('parameters', f'{result["params"]:,}'),
    ('checkpoint size', f'{result["checkpoint_mb"]:.1f} MiB'),
    ('mesh', str(result['mesh'])),
    ('train step (no save)', f'{result["step_s"] * 1e3:.1f} ms'),
    ('save: blocking part', f'{result["save_blocking_s"] * 1e3:.1f} ms'),
    ('save: time added to the run', f'{result["save_added_s"] * 1e3:.1f} ms'),
    ('save: until committed', f'{result["save_commit_s"] * 1e3:.1f} ms'),
    ('restore: params + optimizer', f'{result["restore_state_s"] * 1e3:.1f} ms'),
    ('restore: params only', f'{result["restore_params_s"] * 1e3:.1f} ms'),
  ]
  table = [{'metric': m, 'value': v} for m, v in rows]
  out = _JSON.value or f'benchmarks/results/checkpoint_{name}.json'
  report.emit(
    'checkpoint',
    f'checkpoint benchmark: configs/{name}.py',
    table,
    out,
    backend=jax.default_backend(),
    devices=jax.device_count(),
    cpu_count=os.cpu_count(),
    batch_size=config.batch_size,
    **result,
  )


if __name__ == '__main__':
  cli.run(main)
