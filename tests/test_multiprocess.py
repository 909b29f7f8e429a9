"""Two training processes on localhost (CPU, gloo) against one process on the same batches.

launch/local_multihost.sh starts 2 processes of 4 CPU devices each: jax.distributed, a data
shard per process, the global batch built from per-process rows, a checkpoint written by
both. The one-process reference reads both shards itself, so that it trains on the very
same global batches; the losses must agree to float rounding.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import tiny_train_config
from flax import nnx

from gato_jax import checkpointing, data, train
from gato_jax.model import from_config

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 4
OVERRIDES = {'total_steps': STEPS, 'checkpoint_every_steps': 2, 'mesh.fsdp': 2}


def tiny_config(**overrides):
  return tiny_train_config.with_overrides(**{**OVERRIDES, **overrides})


def logged(workdir) -> dict[int, dict]:
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return {r['step']: r for r in map(json.loads, lines)}


class BothShards:
  """What processes 0 and 1 of 2 read, side by side: one process sees the 2-process batch."""

  def __init__(self, config, seed=None):
    half = config.batch_size // 2
    self.parts = [data.make_iterator(config, half, i, 2, seed=seed) for i in range(2)]
    self.element_spec = self.parts[0].element_spec

  def __next__(self):
    batches = [next(p) for p in self.parts]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def save(self, directory):
    for part in self.parts:
      part.save(directory)


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('two_processes')
  flags = [f'--config.{k}={v}' for k, v in OVERRIDES.items()]
  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS='4')
  result = subprocess.run(
    [
      'launch/local_multihost.sh',
      '2',
      '--config=tests/tiny_train_config.py',
      f'--workdir={workdir}',
      *flags,
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
  return workdir


def test_two_processes_train_like_one_on_the_same_global_batch(
  two_processes, tmp_path, monkeypatch
):
  monkeypatch.setattr(train, 'make_data', BothShards)
  assert train.train(tiny_config(), str(tmp_path)) == STEPS
  two, one = logged(two_processes), logged(tmp_path)
  assert sorted(two) == sorted(one) == list(range(1, STEPS + 1))
  np.testing.assert_allclose(
    [two[s]['loss'] for s in two], [one[s]['loss'] for s in two], rtol=1e-5
  )
  np.testing.assert_allclose(
    [two[s]['grad_norm'] for s in two], [one[s]['grad_norm'] for s in two], rtol=1e-4
  )

  # Both processes wrote their data position; the parameters restore onto one device and
  # equal the one-process run's.
  step_dir = pathlib.Path(checkpointing.step_dir(str(two_processes), STEPS))
  names = sorted(p.name for p in (step_dir / 'data').glob('data-*.index'))
  assert names == ['data-0-of-2.index', 'data-1-of-2.index']
  assert checkpointing.read_meta(str(two_processes), STEPS)['process_count'] == 2
  finals = []
  for workdir in (two_processes, tmp_path):
    model = from_config(tiny_config(), nnx.Rngs(1))
    checkpointing.restore_params(str(workdir), STEPS, model)
    finals.append(jax.device_get(jax.tree.leaves(nnx.state(model, nnx.Param))))
  for a, b in zip(*finals, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_one_process_resumes_a_two_process_run(two_processes, tmp_path):
  """Another process count: parameters and optimizer carry over, the data stream restarts."""
  workdir = tmp_path / 'copy'
  subprocess.run(['cp', '-r', str(two_processes), str(workdir)], check=True)
  assert train.train(tiny_config(total_steps=STEPS + 2), str(workdir)) == STEPS + 2
  after = logged(workdir)
  assert [s for s in after if s > STEPS] == [STEPS + 1, STEPS + 2]
  assert all(np.isfinite(after[s]['loss']) for s in after)
  meta = checkpointing.read_meta(str(workdir), STEPS + 2)
  assert meta['process_count'] == 1 and meta['mesh'] == {'data': 4, 'fsdp': 2, 'tensor': 1}
