"""A pod rehearsal on CPU: 4 hosts preempted by SIGTERM, resumed on 2, checked against 1.

launch/local_multihost.sh starts 4 training processes of 2 fake CPU devices each (8
devices; mesh data=2 x fsdp=4, so every fsdp group spans two processes). Once they train,
the launcher gets SIGTERM and passes it to every process, as a TPU pod's preemption
signals every host. JAX's preemption sync agrees on one step: all four save it, and each
exits 0. Two processes of 2 devices (mesh fsdp=4 across both) then resume the run to its
end: another process count, another mesh, the data stream restarted on a seed derived from
the step. A one-process run resumed from the same checkpoint reads both processes' shards
itself, so it trains on the very same global batches: its losses and final parameters must
equal the 2-process run's to float rounding.

XLA's backend optimization is turned down in the trainer processes: it halves their compile
time (the bulk of this file's runtime) and leaves the numerics alone.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest
import tiny_train_config
from flax import nnx

from gato_jax import checkpointing, data, train
from gato_jax.model import from_config

REPO = pathlib.Path(__file__).resolve().parents[1]
POD_MESH = {'data': 2, 'fsdp': 4, 'tensor': 1}  # 4 processes x 2 devices.
RESUME_MESH = {'data': 1, 'fsdp': 4, 'tensor': 1}  # 2 processes x 2 devices.
MORE_STEPS = 2  # Trained after the resume.


def logged(workdir) -> dict[int, dict]:
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return {r['step']: r for r in map(json.loads, lines)}


def logged_steps(workdir) -> list[int]:
  """Steps in metrics.jsonl so far, in file order (a line being written is skipped)."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  steps = []
  for line in path.read_text().splitlines() if path.exists() else []:
    try:
      steps.append(json.loads(line)['step'])
    except json.JSONDecodeError:
      pass
  return steps


def mesh_flags(mesh: dict[str, int]) -> list[str]:
  return [f'--config.mesh.{axis}={size}' for axis, size in mesh.items()]


def launch(processes: int, workdir, log, *flags) -> subprocess.Popen:
  """local_multihost.sh with 2 devices a process, its output (all processes) into `log`."""
  env = dict(
    os.environ,
    PYTHON=sys.executable,
    DEVICES_PER_PROCESS='2',
    XLA_FLAGS='--xla_backend_optimization_level=0',
  )
  with open(log, 'w') as out:
    return subprocess.Popen(
      [
        'launch/local_multihost.sh',
        str(processes),
        '--config=tests/tiny_train_config.py',
        f'--workdir={workdir}',
        *flags,
      ],
      cwd=REPO,
      env=env,
      stdout=out,
      stderr=subprocess.STDOUT,
      start_new_session=True,  # Its own process group: a failed test kills all of it.
    )


def finish(launcher: subprocess.Popen, log, timeout: float) -> str:
  """Waits for the launcher; its log. On a timeout, kills it and every process it started."""
  try:
    launcher.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait()
    pytest.fail(f'still running after {timeout} s:\n{log.read_text()[-5000:]}')
  return log.read_text()


def exit_codes(text: str) -> dict[int, int]:
  """Each process's exit code, as local_multihost.sh reports it."""
  found = re.findall(r'local_multihost: process (\d+) exited with code (\d+)', text)
  return {int(i): int(rc) for i, rc in found}


@pytest.fixture(scope='module')
def pod(tmp_path_factory):
  """The preempted 4-process run, a copy of it, and its 2-process resume."""
  root = tmp_path_factory.mktemp('pod')
  workdir, log = root / 'run', root / 'pod.log'
  launcher = launch(
    4,
    workdir,
    log,
    *mesh_flags(POD_MESH),
    '--config.total_steps=1000',  # Never reached: only the preemption saves.
    '--config.checkpoint_every_steps=1000',
  )
  # Each step is collective over all 4 processes, so process 0's metrics.jsonl showing
  # step 2 means every process has trained (and JAX's SIGTERM handler is in place).
  deadline = time.monotonic() + 480
  while len(logged_steps(workdir)) < 2:
    if launcher.poll() is not None:
      pytest.fail(f'exited with {launcher.returncode} before step 2:\n{log.read_text()[-5000:]}')
    if time.monotonic() > deadline:
      os.killpg(launcher.pid, signal.SIGKILL)
      pytest.fail(f'no step 2 within 480 s:\n{log.read_text()[-5000:]}')
    time.sleep(0.5)
  signalled_after = max(logged_steps(workdir))
  launcher.send_signal(signal.SIGTERM)  # The launcher sends SIGTERM to every process.
  pod_log = finish(launcher, log, timeout=300)
  pod_rc = launcher.returncode
  saved = checkpointing.complete_steps(str(workdir))
  pod_steps = logged_steps(workdir)

  # The checkpoint as the preempted pod left it, for the one-process reference.
  reference = root / 'reference'
  shutil.copytree(workdir, reference)

  ok = pod_rc == 0 and len(saved) == 1
  resume_log, resume_rc = '', None
  if ok:
    log = root / 'resume.log'
    launcher = launch(
      2,
      workdir,
      log,
      *mesh_flags(RESUME_MESH),
      f'--config.total_steps={saved[0] + MORE_STEPS}',
      '--config.checkpoint_every_steps=1000',
    )
    resume_log = finish(launcher, log, timeout=480)
    resume_rc = launcher.returncode
  return types.SimpleNamespace(
    workdir=workdir,
    reference=reference,
    signalled_after=signalled_after,
    pod_log=pod_log,
    pod_rc=pod_rc,
    pod_steps=pod_steps,
    saved=saved,
    resume_log=resume_log,
    resume_rc=resume_rc,
  )


def test_sigterm_to_a_4_process_pod_saves_one_agreed_step_and_every_process_exits_0(pod):
  assert pod.pod_rc == 0, pod.pod_log[-5000:]
  assert exit_codes(pod.pod_log) == {0: 0, 1: 0, 2: 0, 3: 0}, pod.pod_log[-5000:]

  # Every process's own view of the agreed step, and what each saved.
  agreed = re.findall(r'process (\d) of 4: preemption agreed at step (\d+)', pod.pod_log)
  assert sorted(int(p) for p, _ in agreed) == [0, 1, 2, 3], pod.pod_log[-5000:]
  steps = {int(s) for _, s in agreed}
  assert len(steps) == 1, agreed
  step = steps.pop()
  assert re.findall(r'preempted: saved step (\d+), exiting', pod.pod_log) == [str(step)] * 4
  # Agreed after the SIGTERM, long before total_steps; the only checkpoint is that step.
  assert pod.signalled_after < step < 1000
  assert pod.saved == [step]
  assert pod.pod_steps == list(range(1, step + 1))

  meta = checkpointing.read_meta(str(pod.workdir), step)
  assert meta['step'] == step and meta['process_count'] == 4
  assert meta['mesh'] == POD_MESH
  # The fsdp axis really crosses processes: each fsdp group holds devices of two of them.
  processes = np.array(meta['mesh_processes'])
  assert processes.shape == (2, 4, 1)
  assert sorted(set(processes.ravel())) == [0, 1, 2, 3]
  for row in range(POD_MESH['data']):
    assert len(set(processes[row, :, 0])) == 2, processes
  data_dir = pathlib.Path(checkpointing.step_dir(str(pod.workdir), step)) / 'data'
  names = sorted(p.name for p in data_dir.glob('data-*.index'))
  assert names == [f'data-{i}-of-4.index' for i in range(4)]


def test_2_processes_on_another_mesh_resume_the_saved_step_to_the_end(pod):
  assert pod.pod_rc == 0 and len(pod.saved) == 1, pod.pod_log[-5000:]
  step, total = pod.saved[0], pod.saved[0] + MORE_STEPS
  assert pod.resume_rc == 0, pod.resume_log[-5000:]
  assert exit_codes(pod.resume_log) == {0: 0, 1: 0}, pod.resume_log[-5000:]
  resumed = re.findall(
    r'resumed from step (\d+) \(saved on mesh (.*) by (\d+) processes\)', pod.resume_log
  )
  assert resumed == [(str(step), str(POD_MESH), '4')] * 2, pod.resume_log[-5000:]

  # metrics.jsonl continues right after the saved step, to total_steps, all finite.
  after = logged(pod.workdir)
  assert logged_steps(pod.workdir) == list(range(1, total + 1))
  assert all(np.isfinite(after[s]['loss']) for s in after)

  assert checkpointing.complete_steps(str(pod.workdir))[-1] == total
  meta = checkpointing.read_meta(str(pod.workdir), total)
  assert meta['process_count'] == 2 and meta['mesh'] == RESUME_MESH
  assert meta['mesh_processes'] == [[[0], [0], [1], [1]]]
  data_dir = pathlib.Path(checkpointing.step_dir(str(pod.workdir), total)) / 'data'
  names = sorted(p.name for p in data_dir.glob('data-*.index'))
  assert names == ['data-0-of-2.index', 'data-1-of-2.index']


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

  def restore(self, directory):
    for part in self.parts:
      part.restore(directory)  # FileNotFoundError: the pod's 4 positions are not 2 shards.


def test_one_process_resumed_on_the_same_global_batches_trains_like_the_2_processes(
  pod, monkeypatch
):
  """Another process count again (1), and the multi-process global batch checked."""
  assert pod.resume_rc == 0, pod.resume_log[-5000:]
  step, total = pod.saved[0], pod.saved[0] + MORE_STEPS
  monkeypatch.setattr(train, 'make_data', BothShards)
  config = tiny_train_config.with_overrides(
    total_steps=total, checkpoint_every_steps=1000, **{'mesh.data': 2, 'mesh.fsdp': 4}
  )
  assert train.train(config, str(pod.reference)) == total
  two, one = logged(pod.workdir), logged(pod.reference)
  new = list(range(step + 1, total + 1))
  assert sorted(one) == list(range(1, total + 1))
  np.testing.assert_allclose(
    [two[s]['loss'] for s in new], [one[s]['loss'] for s in new], rtol=1e-5
  )
  np.testing.assert_allclose(
    [two[s]['grad_norm'] for s in new], [one[s]['grad_norm'] for s in new], rtol=1e-4
  )
  finals = []
  for workdir in (pod.workdir, pod.reference):
    model = from_config(config, nnx.Rngs(1))
    checkpointing.restore_params(str(workdir), total, model)
    finals.append(jax.device_get(jax.tree.leaves(nnx.state(model, nnx.Param))))
  for a, b in zip(*finals, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
