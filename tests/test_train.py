"""The trainer: config errors, sharded state, accumulation, NaN stop, metrics, resume, SIGTERM.

Runs that a signal must interrupt are real processes (`python -m gato_jax.train`); the rest
train in this process. Every run is tests/tiny_train_config.py: the demo model at length 32
on synthetic batches, a few seconds of steps after compilation.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tiny_train_config
from flax import nnx

from gato_jax import (
  checkpointing,
  evaluator,
  optimizer,
  sharding,
  tokenizer,
  train,
  workdir_lock,
)
from gato_jax.model import from_config
from gato_jax.model.batch import synthetic_batch

REPO = pathlib.Path(__file__).resolve().parents[1]


tiny_config = tiny_train_config.with_overrides


def logged_losses(workdir) -> dict[int, float]:
  """step -> loss from metrics.jsonl; a step logged again after a restart: the later line."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return {}
  out = {}
  for line in path.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      out[record['step']] = record['loss']
  return out


def start_training(workdir, log_path, *flags) -> subprocess.Popen:
  """`python -m gato_jax.train` on the tiny config, with the suite's XLA flags and cache."""
  env = dict(
    os.environ,
    TF_CPP_MIN_LOG_LEVEL='2',
    JAX_PLATFORMS='cpu',
  )
  with open(log_path, 'a') as log:
    return subprocess.Popen(
      [
        sys.executable,
        '-m',
        'gato_jax.train',
        '--config=tests/tiny_train_config.py',
        f'--workdir={workdir}',
        *flags,
      ],
      cwd=REPO,
      env=env,
      stdout=log,
      stderr=subprocess.STDOUT,
    )


def wait_for(condition, process: subprocess.Popen, log_path, timeout=300) -> None:
  """Polls until `condition()`; fails with the log if training exits or time runs out."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if condition():
      return
    if process.poll() is not None:
      pytest.fail(
        f'training exited early ({process.returncode}):\n'
        f'{pathlib.Path(log_path).read_text()[-3000:]}'
      )
    time.sleep(0.02)
  process.kill()
  pytest.fail(f'timed out:\n{pathlib.Path(log_path).read_text()[-3000:]}')


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted 10-step run: (workdir, {step: loss})."""
  workdir = tmp_path_factory.mktemp('reference')
  assert train.train(tiny_config(), str(workdir)) == 10
  return workdir, logged_losses(workdir)


# ----------------------------------------------------------------------------------------
# Config validation
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  'overrides, key',
  [
    ({'mesh.data': 3}, 'mesh.data'),
    ({'mesh.fsdp': 3, 'mesh.data': -1}, 'mesh.data=-1'),
    ({'batch_size': 4}, 'batch_size'),
    ({'grad_accum_steps': 2}, 'grad_accum_steps'),
    ({'total_steps': 0}, 'total_steps'),
    ({'checkpoint_every_steps': -5}, 'checkpoint_every_steps'),
    ({'optimizer.b2': 1.0}, 'optimizer.b2'),
    ({'optimizer.learning_rate': 0.0}, 'optimizer.learning_rate'),
    ({'model.num_layers': 0}, 'model.num_layers'),
    ({'loss_normalization': 'rows'}, 'loss_normalization'),
    ({'profile_steps': '3'}, 'profile_steps'),
    ({'profile_steps': '5,2'}, 'profile_steps'),
    ({'profile_steps': '2,11'}, 'profile_steps'),
    ({'max_train_minutes': -1.0}, 'max_train_minutes'),
  ],
)
def test_config_errors_name_the_key(overrides, key):
  config = tiny_config(**overrides)
  with pytest.raises(ValueError, match=key.replace('.', r'\.')):
    train.validate_config(config)


def test_tiny_config_is_valid():
  train.validate_config(tiny_config())
  train.validate_config(tiny_config(**{'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2}))


# ----------------------------------------------------------------------------------------
# Sharded state
# ----------------------------------------------------------------------------------------


def test_state_is_born_sharded_and_fsdp_mistakes_fail_loudly():
  config = tiny_config(**{'mesh.data': 2, 'mesh.fsdp': 4})
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  layout = train.abstract_train_state(config, mesh, tx)
  params, opt_state = train.init_train_state(config, mesh, tx, layout)
  assert layout.shardings.params['embedder']['tokens'].get_value().spec[1] == 'fsdp'
  table = params['embedder']['tokens'].get_value()
  assert table.sharding.spec[1] == 'fsdp'
  assert table.addressable_shards[0].data.shape == (table.shape[0], table.shape[1] // 4)
  # Adam's moments follow their parameter; the step count is replicated.
  moments = [x for x in jax.tree.leaves(opt_state) if x.shape == table.shape]
  assert moments and all(m.sharding.spec == table.sharding.spec for m in moments)
  counts = [x for x in jax.tree.leaves(opt_state) if x.ndim == 0]
  assert counts and all(c.sharding.is_fully_replicated for c in counts)

  # A rules table that never uses fsdp leaves every parameter whole on every device.
  rules = tuple((name, None if name == 'embed' else axes) for name, axes in config.axis_rules)
  config.axis_rules = rules
  config.fsdp_min_param_size = 1000
  with pytest.raises(ValueError, match='mesh.fsdp=4 but .* replicated'):
    train.abstract_train_state(config, mesh, tx)


@pytest.mark.parametrize('normalization', ['tokens', 'sequences'])
def test_gradient_accumulation_matches_one_big_batch(normalization):
  """Micro-batch gradients of summed losses, divided once: the same update as one batch."""
  config = tiny_config(**{'model.dropout_rate': 0.0, 'loss_normalization': normalization})
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  batch = synthetic_batch(8, 32, 700, seed=3)
  # One-bucket patch intervals: the training-time position sampling has nothing to draw.
  image = (batch['kinds'] == tokenizer.TokenKind.IMAGE)[..., None]
  batch['patch_positions'] = np.where(image, [3, 4, 5, 6], 0).astype(np.int32)
  batch['loss_mask'] = (np.arange(32) % 3 > 0).astype(np.int32)[None].repeat(8, 0)
  layout = train.abstract_train_state(config, mesh, tx)
  state = train.init_train_state(config, mesh, tx, layout)
  with sharding.axis_rules(mesh, config.axis_rules):
    placed = sharding.shard_batch(batch, mesh, config.axis_rules)
    results = []
    for accum in (1, 4):
      config.grad_accum_steps = accum
      step = jax.jit(train.make_train_step(config, layout.graphdef, tx))
      new_state, m = step(state, placed, 0)
      results.append((jax.device_get(nnx.to_pure_dict(new_state.params)), jax.device_get(m)))
  (p1, m1), (p4, m4) = results
  np.testing.assert_allclose(m4['loss'], m1['loss'], rtol=1e-5)
  np.testing.assert_allclose(m4['grad_norm'], m1['grad_norm'], rtol=1e-4)
  assert m4['targets'] == m1['targets'] > 0
  for a, b in zip(jax.tree.leaves(p4), jax.tree.leaves(p1), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------------------
# What the user watches, and a run that goes bad
# ----------------------------------------------------------------------------------------


def test_metrics_jsonl_and_tensorboard(reference):
  import tensorflow as tf

  workdir, losses = reference
  assert sorted(losses) == list(range(1, 11))
  assert all(np.isfinite(v) and v > 0 for v in losses.values())
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  for key in (
    'step',
    'loss',
    'accuracy',
    'learning_rate',
    'grad_norm',
    'tokens_per_s',
    'mfu',
    'step_time_s',
    'loss/text',
    'accuracy/text',
    'loss/action_continuous',
  ):
    assert key in records[-1], key
  schedule = optimizer.learning_rate_schedule(tiny_config())
  np.testing.assert_allclose(
    [r['learning_rate'] for r in records], [schedule(s - 1) for s in range(1, 11)], rtol=1e-6
  )
  # TensorBoard holds the same values.
  events = list((workdir / 'tensorboard').glob('events.out.tfevents.*'))
  board = {}
  for event in tf.compat.v1.train.summary_iterator(str(events[0])):
    for value in event.summary.value:
      if value.tag == 'loss':
        board[event.step] = float(tf.make_ndarray(value.tensor))
  assert board == pytest.approx(losses, rel=1e-6)
  assert checkpointing.complete_steps(str(workdir)) == [6, 9, 10]  # Keeps the newest 3.


def test_max_train_minutes_saves_and_stops_before_total_steps(tmp_path, reference, caplog):
  # A 1-second budget: steps 1..k as the uninterrupted run, k saved, logged and returned.
  _, expected = reference
  config = tiny_config(total_steps=100_000, checkpoint_every_steps=100_000,
                       max_train_minutes=1 / 60, log_every_steps=2)
  with caplog.at_level('WARNING'):
    last = train.train(config, str(tmp_path))
  assert 2 <= last < 100_000 and last % 2 == 0
  assert checkpointing.complete_steps(str(tmp_path)) == [last]
  assert max(logged_losses(tmp_path)) == last
  assert f'stopped at step {last} of total_steps=100000: max_train_minutes' in caplog.text
  losses = logged_losses(tmp_path)
  common = [s for s in losses if s in expected]
  assert common and all(losses[s] == expected[s] for s in common)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  # A learning rate this large overflows the parameters after the first update.
  config = tiny_config(
    **{
      'optimizer.learning_rate': 1e36,
      'optimizer.warmup_steps': 0,
      'optimizer.grad_clip_norm': 0.0,
      'checkpoint_every_steps': 1,
    }
  )
  with pytest.raises(FloatingPointError, match=r'at step (\d+)') as error:
    train.train(config, str(tmp_path))
  bad = int(re.search(r'at step (\d+)', str(error.value)).group(1))
  assert bad >= 2
  steps = checkpointing.complete_steps(str(tmp_path))
  assert steps and steps[-1] == bad - 1
  assert f'last good checkpoint is step {bad - 1}' in str(error.value)


# ----------------------------------------------------------------------------------------
# Interrupted runs: SIGKILL resumes exactly, SIGTERM saves and exits 0
# ----------------------------------------------------------------------------------------


def test_sigkill_then_restart_logs_the_same_losses(tmp_path, reference):
  _, expected = reference
  workdir, log = tmp_path / 'run', tmp_path / 'train.log'
  process = start_training(workdir, log)

  # Killed some steps after its first complete checkpoint, wherever the next save is.
  def checkpointed_and_moved_on():
    steps = checkpointing.complete_steps(str(workdir))
    return steps and max(logged_losses(workdir)) >= steps[0] + 2

  wait_for(checkpointed_and_moved_on, process, log)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL
  killed_after = max(logged_losses(workdir))
  assert killed_after < 10, 'the run finished before it could be killed'
  lines_before = len((workdir / 'metrics.jsonl').read_text().splitlines())
  resumed_from = checkpointing.complete_steps(str(workdir))[-1]
  assert 3 <= resumed_from < killed_after

  process = start_training(workdir, log)
  assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
  after = [
    json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()[lines_before:]
  ]
  assert [r['step'] for r in after] == list(range(resumed_from + 1, 11))
  for record in after:
    assert record['loss'] == expected[record['step']], record['step']


def test_sigterm_saves_at_the_next_step_and_exits_zero(tmp_path, reference):
  _, expected = reference
  workdir, log = tmp_path / 'run', tmp_path / 'train.log'
  process = start_training(
    workdir, log, '--config.total_steps=100000', '--config.checkpoint_every_steps=100000'
  )
  wait_for(lambda: max(logged_losses(workdir), default=0) >= 3, process, log)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
  losses = logged_losses(workdir)
  last = max(losses)
  assert 3 <= last < 100000
  assert checkpointing.complete_steps(str(workdir)) == [last]
  assert checkpointing.read_meta(str(workdir), last)['step'] == last
  common = [s for s in losses if s in expected]
  assert common and all(losses[s] == expected[s] for s in common)


def test_resume_on_another_mesh_continues_the_run(tmp_path, reference):
  """Half the steps on (8, 1, 1), the rest on (2, 2, 2): the same run within float error."""
  reference_dir, expected = reference
  assert train.train(tiny_config(total_steps=5), str(tmp_path)) == 5
  mesh = {'mesh.data': 2, 'mesh.fsdp': 2, 'mesh.tensor': 2}
  assert train.train(tiny_config(**mesh), str(tmp_path)) == 10
  losses = logged_losses(tmp_path)
  np.testing.assert_allclose(
    [losses[s] for s in range(1, 11)], [expected[s] for s in range(1, 11)], rtol=2e-5
  )
  meta = checkpointing.read_meta(str(tmp_path), 10)
  assert meta['mesh'] == {'data': 2, 'fsdp': 2, 'tensor': 2} and meta['step'] == 10
  model_config = checkpointing.read_config(str(tmp_path), 10).model
  assert model_config.max_length == 32
  # Both runs end with the same parameters, read back onto one device.
  finals = []
  for workdir in (tmp_path, reference_dir):
    model = from_config(tiny_config(), nnx.Rngs(1))
    checkpointing.restore_params(str(workdir), 10, model)
    finals.append(jax.device_get(jax.tree.leaves(nnx.state(model, nnx.Param))))
  for a, b in zip(*finals, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_resume_may_change_how_the_step_runs_but_not_the_model(tmp_path):
  """A run continues with other remat, layer unrolling or loss chunks, never as another model.

  Changing the positions a model uses loads fine (no parameter changes shape) and computes
  something else: the trainer refuses it, naming the key, and the evaluator scores the
  checkpoint as the model it was trained as.
  """
  assert train.train(tiny_config(total_steps=3), str(tmp_path)) == 3
  how = {'model.remat': 'full', 'model.scan_layers': False, 'model.loss_chunks': 2}
  assert train.train(tiny_config(total_steps=4, **how), str(tmp_path)) == 4
  other_model = tiny_config(total_steps=5, **{'model.position_encoding': 'none'})
  with pytest.raises(ValueError, match="model.position_encoding: checkpoint 'rope', config 'none'"):
    train.train(other_model, str(tmp_path))
  assert checkpointing.complete_steps(str(tmp_path)) == [3, 4]
  # The evaluator scores it as trained, or refuses the key when the command line set it.
  assert evaluator.run_config(other_model, str(tmp_path), 4).model.position_encoding == 'rope'
  with pytest.raises(ValueError, match="command line.*model.position_encoding: checkpoint 'rope'"):
    evaluator.run_config(other_model, str(tmp_path), 4, explicit=('model.position_encoding',))
  assert evaluator.run_config(tiny_config(**how), str(tmp_path), 4).model.remat == 'full'


def test_the_workdir_lock_and_the_fingerprint_on_resume(tmp_path, caplog):
  """A dead trainer's lock is taken over and a finished run releases it; a live holder stops
  the next trainer; total_steps below the checkpoint is an error naming both; a change the
  command line allows (--allow_config_change) resumes and is logged."""
  workdir = str(tmp_path)
  dead = subprocess.Popen(['true'])
  dead.wait()
  stale = {'host': socket.gethostname(), 'pid': dead.pid, 'start_time': '2026-01-01T00:00:00'}
  (tmp_path / workdir_lock.FILENAME).write_text(json.dumps(stale))
  assert train.train(tiny_config(total_steps=3), workdir) == 3
  assert f'pid {dead.pid}' in caplog.text and 'taking over the lock' in caplog.text
  assert workdir_lock.read_holder(workdir) is None  # Released at the end of the run.

  with pytest.raises(ValueError, match='checkpoint 3, past config key total_steps=2'):
    train.train(tiny_config(total_steps=2), workdir)
  assert workdir_lock.read_holder(workdir) is None  # Released on the error too.

  with workdir_lock.WorkdirLock(workdir) as held:
    holder = f'pid {os.getpid()}, started {held.record["start_time"]}'
    with pytest.raises(workdir_lock.WorkdirLocked, match=re.escape(holder)):
      train.train(tiny_config(total_steps=4), workdir)

  faster = tiny_config(total_steps=4, **{'optimizer.learning_rate': 1e-3})
  with pytest.raises(ValueError, match="'optimizer.no_such', which is not a config key"):
    train.train(faster, workdir, allow_config_change='optimizer.no_such')
  vocab = tiny_config(total_steps=4, **{'tokenizer.vocabulary': 'byte '})
  with pytest.raises(ValueError, match="tokenizer.vocabulary: checkpoint 'byte', config 'byte '"):
    train.train(vocab, workdir)
  assert train.train(faster, workdir, allow_config_change='optimizer.learning_rate') == 4
  assert 'optimizer.learning_rate changes from 0.002 to 0.001' in caplog.text


def test_a_second_trainer_on_a_locked_workdir_exits_naming_the_holder(tmp_path):
  """The holder here is this test process; the second trainer is a real `gato_jax.train`."""
  log = tmp_path / 'train.log'
  with workdir_lock.WorkdirLock(str(tmp_path / 'run')) as held:
    record = held.record
    process = start_training(tmp_path / 'run', log)
    assert process.wait(timeout=300) != 0
    assert workdir_lock.read_holder(str(tmp_path / 'run')) == record  # Still ours.
  output = log.read_text()
  holder = f'host {socket.gethostname()}, pid {os.getpid()}, started {record["start_time"]}'
  assert holder in output, output[-3000:]
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_profile_steps_write_a_trace_of_those_steps(tmp_path):
  # Steps 2..3 of 4: the trace is written while the run goes on, and the run is unchanged.
  config = tiny_config(total_steps=4, checkpoint_every_steps=4, profile_steps='2,3')
  assert train.train(config, str(tmp_path)) == 4
  traces = list((tmp_path / 'profile').rglob('*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  assert sorted(logged_losses(tmp_path)) == [1, 2, 3, 4]
