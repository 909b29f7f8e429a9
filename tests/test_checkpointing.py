"""Checkpoints: restore onto other meshes, only complete steps count, clear errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
import tiny_train_config
from flax import nnx

from gato_jax import checkpointing, data, fingerprint, sharding, train
from gato_jax.model import from_config


def mesh_config(data_axis: int, fsdp: int, tensor: int):
  config = tiny_train_config.get_config()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = data_axis, fsdp, tensor
  return config


def sharded_state(config, seed: int):
  mesh = sharding.make_mesh(config)
  model = sharding.create_sharded(
    lambda: from_config(config, nnx.Rngs(seed)), mesh, config.axis_rules
  )
  params = nnx.state(model, nnx.Param)
  tx = optax.adam(1e-3)
  opt_state = jax.jit(tx.init)(params)
  # One update, so that the moments are not zeros that any restore would reproduce.
  grads = jax.tree.map(lambda x: x * 0.5 + 0.1, params)
  _, opt_state = jax.jit(tx.update)(grads, opt_state, params)
  return mesh, model, params, opt_state


def leaves(tree):
  return [np.asarray(x) for x in jax.device_get(jax.tree.leaves(tree))]


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """Step 5 saved from a (2, 2, 2) mesh, with the data iterator two batches in."""
  workdir = str(tmp_path_factory.mktemp('saved'))
  config = mesh_config(2, 2, 2)
  mesh, _, params, opt_state = sharded_state(config, seed=0)
  assert params['embedder']['tokens'].get_value().sharding.spec[1] == 'fsdp'
  iterator = data.make_iterator(config, 4)
  next(iterator), next(iterator)
  checkpoints = checkpointing.Checkpoints(workdir, max_to_keep=2)
  checkpoints.save(5, params, opt_state, iterator, checkpointing.meta(5, config, mesh))
  checkpoints.close()
  return workdir, config, leaves(params), leaves(opt_state), next(iterator)


@pytest.mark.parametrize('shape', [(8, 1, 1), (1, 1, 1)])
def test_restore_onto_another_mesh_gives_the_same_values(saved, shape):
  workdir, config, params_saved, opt_saved, next_batch = saved
  target_config = mesh_config(*shape)
  devices = jax.devices()[: int(np.prod(shape))]
  mesh = sharding.make_mesh(target_config, devices)
  model = sharding.create_sharded(
    lambda: from_config(target_config, nnx.Rngs(7)), mesh, target_config.axis_rules
  )
  params = nnx.state(model, nnx.Param)
  opt_state = jax.jit(optax.adam(1e-3).init)(params)
  assert not all(np.array_equal(a, b) for a, b in zip(leaves(params), params_saved, strict=True))

  target_shardings = [x.sharding for x in jax.tree.leaves(params)]
  checkpoints = checkpointing.Checkpoints(workdir, max_to_keep=2)
  restored_opt, meta = checkpoints.restore(5, params, opt_state)
  iterator = data.make_iterator(config, 4)
  checkpoints.restore_data(5, iterator)
  checkpoints.close()
  for a, b in zip(leaves(params), params_saved, strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(leaves(restored_opt), opt_saved, strict=True):
    np.testing.assert_array_equal(a, b)
  # Restored arrays live on the new mesh, not the one that saved them.
  assert [x.sharding for x in jax.tree.leaves(params)] == target_shardings
  for x in jax.tree.leaves(restored_opt):
    assert x.sharding.device_set <= set(devices)
  assert meta['mesh'] == {'data': 2, 'fsdp': 2, 'tensor': 2} and meta['step'] == 5
  # The data stream continues with the batch the saving run would have read next.
  for key, value in next(iterator).items():
    np.testing.assert_array_equal(value, next_batch[key])

  # The evaluator's path: parameters only, into a model in place.
  model = from_config(target_config, nnx.Rngs(9))
  checkpointing.restore_params(workdir, 5, model)
  for a, b in zip(leaves(nnx.state(model, nnx.Param)), params_saved, strict=True):
    np.testing.assert_array_equal(a, b)
  assert checkpointing.read_config(workdir, 5).model.max_length == 32


def test_restore_or_init_reads_the_newest_step_into_abstract_shards(saved, tmp_path):
  """The trainer's resume: no initialization first, values straight into this mesh's shards."""
  workdir, config, params_saved, opt_saved, next_batch = saved
  _, _, params, opt_state = sharded_state(mesh_config(8, 1, 1), seed=7)
  abstract = checkpointing.abstract_like(train.TrainState(params, opt_state))

  def never(*args):
    raise AssertionError('a workdir with a checkpoint is restored, not initialized or reseeded')

  checkpoints = checkpointing.Checkpoints(workdir, max_to_keep=2)
  state, step, iterator = checkpointing.restore_or_init(
    checkpoints, abstract, never, data.make_iterator(config, 4), never, config.seed)
  checkpoints.close()
  assert step == 5 and isinstance(state, train.TrainState)
  for a, b in zip(leaves(state), params_saved + opt_saved, strict=True):
    np.testing.assert_array_equal(a, b)
  assert [x.sharding for x in jax.tree.leaves(state)] == [
    x.sharding for x in jax.tree.leaves(abstract)]
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
  for key, value in next(iterator).items():
    np.testing.assert_array_equal(value, next_batch[key])

  # An empty workdir: the initializer's state at step 0, the stream from its start.
  fresh, stream = train.TrainState(params, opt_state), data.make_iterator(config, 4)
  empty = checkpointing.Checkpoints(str(tmp_path), max_to_keep=2)
  state, step, iterator = checkpointing.restore_or_init(
    empty, abstract, lambda: fresh, stream, never, config.seed)
  empty.close()
  assert state is fresh and step == 0 and iterator is stream


def test_a_save_is_due_every_n_steps_at_the_last_and_on_preemption():
  config = tiny_train_config.get_config()  # checkpoint_every_steps=3, total_steps=10.
  assert [s for s in range(1, 11) if checkpointing.save_due(s, config)] == [3, 6, 9, 10]
  assert checkpointing.save_due(4, config, preempted=True)


def test_a_checkpoint_interrupted_mid_write_is_never_picked(saved, tmp_path):
  workdir = str(tmp_path)
  shutil.copytree(saved[0], workdir, dirs_exist_ok=True)
  ckpt = checkpointing.checkpoint_dir(workdir)
  # What a kill during the write of step 7 leaves on a local disk: Orbax's tmp directory.
  shutil.copytree(os.path.join(ckpt, '5'), os.path.join(ckpt, '7.orbax-checkpoint-tmp'))
  os.remove(os.path.join(ckpt, '7.orbax-checkpoint-tmp', 'commit_success.txt'))
  assert checkpointing.complete_steps(workdir) == [5]
  with pytest.raises(FileNotFoundError, match='no complete checkpoint for step 7'):
    checkpointing.restore_params(workdir, 7, from_config(saved[1], nnx.Rngs(0)))
  checkpoints = checkpointing.Checkpoints(workdir, max_to_keep=2)
  assert checkpoints.latest_step() == 5
  # The resumed run reaches step 7 again: the leftover is cleared, the new save completes.
  mesh, _, params, opt_state = sharded_state(saved[1], seed=1)
  iterator = data.make_iterator(saved[1], 4)
  checkpoints.save(7, params, opt_state, iterator, checkpointing.meta(7, saved[1], mesh))
  checkpoints.close()
  assert checkpointing.complete_steps(workdir) == [5, 7]
  assert sorted(os.listdir(ckpt)) == ['5', '7']


def test_a_checkpoint_without_params_names_the_path(saved, tmp_path):
  workdir = str(tmp_path)
  shutil.copytree(saved[0], workdir, dirs_exist_ok=True)
  params_dir = os.path.join(checkpointing.step_dir(workdir, 5), 'params')
  shutil.rmtree(params_dir)
  with pytest.raises(FileNotFoundError, match=f"no 'params' item: {params_dir}"):
    checkpointing.restore_params(workdir, 5, from_config(saved[1], nnx.Rngs(0)))
  assert checkpointing.complete_steps(str(tmp_path / 'nowhere')) == []


def test_a_relative_workdir_saves_and_restores(tmp_path, monkeypatch):
  # `make demo` passes --workdir=runs/demo; Orbax's array writer wants absolute paths.
  monkeypatch.chdir(tmp_path)
  config = mesh_config(8, 1, 1)
  mesh, model, params, opt_state = sharded_state(config, seed=2)
  iterator = data.make_iterator(config, 4)
  checkpoints = checkpointing.Checkpoints('runs/demo', max_to_keep=2)
  checkpoints.save(3, params, opt_state, iterator, checkpointing.meta(3, config, mesh))
  checkpoints.close()
  assert checkpointing.complete_steps('runs/demo') == [3]
  assert (tmp_path / 'runs/demo/checkpoints/3').is_dir()
  fresh = from_config(config, nnx.Rngs(7))
  checkpointing.restore_params('runs/demo', 3, fresh)
  for a, b in zip(leaves(nnx.state(fresh, nnx.Param)), leaves(params), strict=True):
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------
# Integrity: checksums at save, verified at restore; failed saves stop the run
# ----------------------------------------------------------------------------------------


def largest_params_file(workdir, step):
  """The biggest array file of the step's params (an OCDBT data file)."""
  root = checkpointing.step_dir(workdir, step)
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, 'params')) for f in fs]
  return max(files, key=os.path.getsize)


def flip_bytes(path):
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    chunk = f.read(64)
    f.seek(-len(chunk), os.SEEK_CUR)
    f.write(bytes(b ^ 0xFF for b in chunk))


def truncate(path):
  os.truncate(path, os.path.getsize(path) // 2)


@pytest.mark.parametrize('damage', [flip_bytes, truncate, os.remove])
def test_a_damaged_step_is_named_with_its_file(saved, tmp_path, damage):
  workdir = str(tmp_path)
  shutil.copytree(saved[0], workdir, dirs_exist_ok=True)
  assert checkpointing.verify_step(workdir, 5)  # The save wrote checksums; they hold.
  victim = largest_params_file(workdir, 5)
  damage(victim)
  with pytest.raises(checkpointing.DamagedCheckpoint, match=f'checkpoint 5 is damaged: {victim}'):
    checkpointing.verify_step(workdir, 5)
  # The evaluator's path refuses it too, naming the file, before any TensorStore read.
  with pytest.raises(checkpointing.DamagedCheckpoint, match=victim):
    checkpointing.restore_params(workdir, 5, from_config(saved[1], nnx.Rngs(0)))
  assert checkpointing.verify_step(workdir, 5, items=('meta',))  # Other items are whole.


def test_a_step_without_checksums_restores_unverified_with_a_warning(saved, tmp_path, caplog):
  workdir = str(tmp_path)
  shutil.copytree(saved[0], workdir, dirs_exist_ok=True)
  os.remove(os.path.join(checkpointing.step_dir(workdir, 5), checkpointing.CHECKSUMS))
  assert checkpointing.verify_step(workdir, 5) is False
  assert 'checkpoint 5 has no ' in caplog.text
  assert 'checksums.json (saved before checksums were written): restoring it unverified' in (
    caplog.text
  )


def test_the_trainer_skips_a_corrupt_newest_step_and_resumes_from_the_one_before(
  saved, tmp_path, caplog
):
  workdir = str(tmp_path)
  shutil.copytree(saved[0], workdir, dirs_exist_ok=True)
  ckpt = checkpointing.checkpoint_dir(workdir)
  shutil.copytree(os.path.join(ckpt, '5'), os.path.join(ckpt, '3'))  # An older, intact step.
  victim = largest_params_file(workdir, 5)
  flip_bytes(victim)
  _, _, params, opt_state = sharded_state(mesh_config(8, 1, 1), seed=7)
  abstract = checkpointing.abstract_like(train.TrainState(params, opt_state))

  def never(*args):
    raise AssertionError('an intact older step is restored, not a fresh state')

  checkpoints = checkpointing.Checkpoints(workdir, max_to_keep=2)
  state, step, _ = checkpointing.restore_or_init(
    checkpoints, abstract, never, data.make_iterator(saved[1], 4), never, 0)
  checkpoints.close()
  assert step == 3
  for a, b in zip(leaves(state.params), saved[2], strict=True):
    np.testing.assert_array_equal(a, b)
  assert f'checkpoint 5 is damaged: {victim} differs' in caplog.text
  assert 'resuming from checkpoint 3' in caplog.text
  # Set aside to inspect, so that a restart neither loops on it nor finds step 5 taken.
  assert checkpointing.complete_steps(workdir) == [3]
  assert os.path.isdir(os.path.join(workdir, 'damaged_checkpoints', '5', 'params'))

  # Nothing left that verifies: an error naming every step, never a silent fresh start.
  flip_bytes(largest_params_file(workdir, 3))
  checkpoints = checkpointing.Checkpoints(workdir, max_to_keep=2)
  with pytest.raises(checkpointing.DamagedCheckpoint, match='every checkpoint .* is damaged'):
    checkpointing.restore_or_init(checkpoints, None, None, None, None, 0)
  checkpoints.close()


class FakeIterator:
  """Stands in for the data iterator: the failing save is the point, not the data."""

  def save(self, path):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, 'position'), 'w') as f:
      f.write('0')


def test_a_failed_async_save_stops_the_run_at_the_next_step(tmp_path, monkeypatch):
  """A full disk during step 6's background write: reported by `check` with step and cause,
  and step 3 (max_to_keep=1 would have deleted it) stays whole."""
  workdir = str(tmp_path)
  params = nnx.State({'w': nnx.Param(jax.numpy.arange(8.0))})
  checkpoints = checkpointing.Checkpoints(workdir, max_to_keep=1)
  checkpoints.save(3, params, {'mu': jax.numpy.ones(8)}, FakeIterator(), {'step': 3})
  checkpoints.wait()

  def full_disk(directory):
    raise OSError(28, 'No space left on device', os.fspath(directory))

  monkeypatch.setattr(checkpointing, 'write_checksums', full_disk)
  checkpoints.save(6, params, {'mu': jax.numpy.ones(8)}, FakeIterator(), {'step': 6})
  deadline = time.monotonic() + 60
  with pytest.raises(RuntimeError) as error:
    step = 6
    while time.monotonic() < deadline:
      step += 1
      checkpoints.check(step)  # What the train loop calls after every step.
      time.sleep(0.05)
  message = str(error.value)
  assert f'saving checkpoint 6 to {checkpointing.step_dir(workdir, 6)} failed' in message
  assert 'failed (found at step' in message and 'No space left on device' in message
  assert 'the last complete checkpoint is step 3' in message
  checkpoints.close()  # Reported once: closing the run does not raise it again.
  assert checkpointing.complete_steps(workdir) == [3]
  assert checkpointing.verify_step(workdir, 3)


def test_a_synchronous_save_is_complete_and_verified_when_save_returns(tmp_path):
  checkpoints = checkpointing.Checkpoints(str(tmp_path), max_to_keep=2, asynchronous=False)
  params = nnx.State({'w': nnx.Param(jax.numpy.arange(8.0))})
  checkpoints.save(2, params, {'mu': jax.numpy.ones(8)}, FakeIterator(), {'step': 2})
  assert checkpointing.complete_steps(str(tmp_path)) == [2]
  assert checkpointing.verify_step(str(tmp_path), 2)
  with open(os.path.join(checkpointing.step_dir(str(tmp_path), 2), 'checksums.json')) as f:
    files = json.load(f)['files']
  assert {name.split('/')[0] for name in files} == {'params', 'opt_state', 'data', 'meta'}
  assert 'data/position' in files
  checkpoints.close()


# ----------------------------------------------------------------------------------------
# The run's fingerprint: resume refuses another model, vocabulary or mixture
# ----------------------------------------------------------------------------------------


def changed(config, **overrides):
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *section, name = key.split('.')
    (config[section[0]] if section else config)[name] = value
  return config


@pytest.mark.parametrize(
  'key, new, named',
  [
    ('model.position_encoding', 'none',
     "model.position_encoding: checkpoint 'rope', config 'none'"),
    ('model.num_layers', 3, 'model.num_layers: checkpoint 2, config 3'),
    ('tokenizer.text_vocab_size', 640, 'tokenizer.text_vocab_size: checkpoint 512, config 640'),
    ('tokenizer.vocabulary', '/tmp/sp.model',
     "tokenizer.vocabulary: checkpoint 'byte', config '/tmp/sp.model'"),
    ('data.mixture', 'gato_text', "data.mixture: checkpoint 'gato_demo', config 'gato_text'"),
  ],
)
def test_resume_refuses_another_fingerprint_naming_the_key_and_both_values(saved, key, new, named):
  workdir, config, *_ = saved
  with pytest.raises(ValueError, match=re.escape(named)) as error:
    fingerprint.check_resumable(changed(config, **{key: new}), workdir)
  assert f'--allow_config_change={key}' in str(error.value)


def test_allowed_config_changes_resume_and_are_logged(saved, caplog):
  workdir, config, *_ = saved
  config = changed(config, **{'optimizer.learning_rate': 5e-4, 'tokenizer.vocabulary': '/tmp/b'})
  with pytest.raises(ValueError, match='tokenizer.vocabulary'):
    fingerprint.check_resumable(config, workdir)
  allowed = fingerprint.parse_allowed('optimizer.learning_rate, tokenizer.vocabulary', config)
  fingerprint.check_resumable(config, workdir, allowed)
  old_rate = checkpointing.read_config(workdir, 5).optimizer.learning_rate
  assert f'optimizer.learning_rate changes from {old_rate!r} to 0.0005' in caplog.text
  assert "tokenizer.vocabulary changes from 'byte' to '/tmp/b'" in caplog.text
  with pytest.raises(ValueError, match="'optimizer.no_such_key', which is not a config key"):
    fingerprint.parse_allowed('optimizer.no_such_key', config)


def test_a_checkpoint_past_total_steps_is_an_error_naming_both(saved):
  workdir, config, *_ = saved
  with pytest.raises(ValueError, match='checkpoint 5, past config key total_steps=4'):
    fingerprint.check_resumable(changed(config, total_steps=4), workdir)


def test_a_checkpoint_older_than_the_fingerprint_is_compared_on_what_it_records(tmp_path, caplog):
  config = tiny_train_config.get_config()
  recorded = json.loads(config.to_json_best_effort())
  del recorded['tokenizer'], recorded['data']
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    checkpointer.save(os.path.join(checkpointing.step_dir(str(tmp_path), 2), 'meta'),
                      {'step': 2, 'config': recorded})
  bigger = changed(config, **{'tokenizer.text_vocab_size': 640})
  fingerprint.check_resumable(bigger, str(tmp_path))
  assert (
    'does not record data.mixture, data.modules, data.specs, data.public_sources, '
    'data.mixtures, tokenizer.text_vocab_size'
  ) in caplog.text
  with pytest.raises(ValueError, match='model.num_layers'):
    fingerprint.check_resumable(changed(config, **{'model.num_layers': 3}), str(tmp_path))


def test_a_checkpoint_from_before_pixel_normalization_is_compared_as_paper(tmp_path):
  """Such a run saw [-1, 1] / 4 pixels: resuming or scoring it with 'unit' is refused."""
  config = tiny_train_config.get_config()
  recorded = json.loads(config.to_json_best_effort())
  del recorded['model']['pixel_normalization']
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    checkpointer.save(os.path.join(checkpointing.step_dir(str(tmp_path), 2), 'meta'),
                      {'step': 2, 'config': recorded})
  unit = changed(config, **{'model.pixel_normalization': 'unit'})
  with pytest.raises(ValueError, match="model.pixel_normalization: checkpoint 'paper', "
                                       "config 'unit'"):
    fingerprint.check_resumable(unit, str(tmp_path))
  fingerprint.check_resumable(changed(config, **{'model.pixel_normalization': 'paper'}),
                              str(tmp_path))
