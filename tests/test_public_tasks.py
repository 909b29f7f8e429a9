"""A public RLDS source as a seqio task: read in place, sharded, mixed and resumed like the
generated tasks.

The stand-in public dataset is one this project generated: `gato_episodes/cartpole` is an
RLDS dataset in TFDS's format like any published one, so mapping it as a public source runs
the real reader (tfds.builder on the prepared files, even_splits, TFDS ids) offline, and its
episodes can be compared with the generated task's own reader.
"""

from __future__ import annotations

import numpy as np
import pytest
import seqio

from configs import demo
from data_pipelines import rollouts
from gato_jax import data
from gato_jax.data import episodes, options, public_rlds, sources, tasks

LENGTH = 128
DATASET = 'gato_episodes/cartpole:1.0.0'


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('public_tasks'))
  rollouts.generate('cartpole', root, episodes=6, max_steps=30, random_episodes=1)
  return root


def source_entry(data_dir: str, spec: str = 'cartpole') -> dict:
  return {
    'dataset': DATASET,
    'data_dir': data_dir,
    'spec': spec,
    'observation': {'state': 'observation/state'},
    'action': 'action',
    'domain': 'other',
  }


def make_config(data_dir: str, mixture: str, **public_sources):
  config = demo.get_config()
  config.model.max_length = LENGTH
  config.data.data_dir = data_dir
  config.data.public_sources = public_sources
  config.data.mixture = mixture
  return config


def test_episodes_read_in_place_equal_the_generated_ones(data_dir):
  source = public_rlds.Source.from_config('t_cartpole', source_entry(data_dir))
  read = list(public_rlds.episode_dataset(source).as_numpy_iterator())
  generated = {e.seed: e for e in episodes.read_episodes('cartpole', data_dir)}
  assert len(read) == len(generated) == 6
  by_return: dict[float, list] = {}
  for e in generated.values():
    by_return.setdefault(e.episode_return, []).append(e)
  for ex in read:
    assert ex['episode'].decode().startswith('gato_episodes-train.tfrecord-')
    # Episodes are matched on their actions; the observations must then agree exactly.
    match = [e for e in generated.values() if np.array_equal(e.actions, ex['action'])]
    assert match, 'an episode read in place matches no generated episode'
    np.testing.assert_array_equal(ex['observation']['state'], match[0].observations['state'])
    assert ex['episode_return'] == pytest.approx(match[0].episode_return)
    assert np.isnan(ex['expert_return']) and np.isnan(ex['random_return'])


def test_host_shards_are_disjoint_and_cover_the_episodes(data_dir):
  config = make_config(data_dir, 'gato_t_cartpole', t_cartpole=source_entry(data_dir))
  tasks.register_from_config(config)
  options.configure(options.from_config(config))
  task_source = seqio.get_mixture_or_task('gato_t_cartpole').source
  assert isinstance(task_source, sources.PublicEpisodeSource)
  assert task_source.supports_arbitrary_sharding

  def names(shard):
    ds = task_source.get_dataset(shuffle=False, shard_info=shard)
    return [x['episode'].decode() for x in ds.as_numpy_iterator()]

  everything = names(None)
  first, second = names(seqio.ShardInfo(0, 2)), names(seqio.ShardInfo(1, 2))
  assert len(set(everything)) == 6
  assert first and second and not set(first) & set(second)
  assert sorted(first + second) == sorted(everything)


def test_a_mixture_of_public_and_generated_data_batches_and_resumes_exactly(data_dir, tmp_path):
  config = make_config(data_dir, 't_public_and_generated', t_cartpole=source_entry(data_dir))
  config.data.mixtures = {'t_public_and_generated': {'gato_t_cartpole': 1.0, 'gato_cartpole': 1.0}}
  it = data.make_iterator(config, batch_size=4, seed=1)
  for _ in range(2):
    batch = next(it)
  assert batch['tokens'].shape == (4, LENGTH)
  assert batch['loss_mask'].sum() > 0
  it.save(str(tmp_path))
  expected = [next(it) for _ in range(2)]
  resumed = data.make_iterator(config, batch_size=4, seed=1)
  resumed.restore(str(tmp_path))
  for want in expected:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_the_same_registration_twice_is_a_no_op_and_a_changed_one_is_refused(data_dir):
  config = make_config(data_dir, 'gato_t_cartpole', t_cartpole=source_entry(data_dir))
  tasks.register_from_config(config)
  tasks.register_from_config(config)
  changed = make_config(
    data_dir, 'gato_t_cartpole', t_cartpole={**source_entry(data_dir), 'domain': 'dmc'}
  )
  with pytest.raises(
    ValueError,
    match="config key data.public_sources.t_cartpole: public source 't_cartpole' is "
    'already registered with another mapping',
  ):
    tasks.register_from_config(changed)


def test_a_dataset_that_does_not_fit_its_spec_names_dataset_episode_and_field(data_dir):
  # CartPole's 4-number state mapped onto MountainCar's 2-number spec.
  config = make_config(
    data_dir, 'gato_t_misfit', t_misfit=source_entry(data_dir, spec='mountaincar')
  )
  it = data.make_iterator(config, batch_size=2)
  with pytest.raises(
    Exception,
    match=r'dataset gato_episodes/cartpole:1\.0\.0, episode gato_episodes-train\.tfrecord-'
    r"\d+-of-\d+__\d+: task 'mountaincar', field 'state'",
  ):
    next(it)


def test_config_keys_are_checked_by_name(data_dir):
  bad = source_entry(data_dir)
  bad['observation'] = {'stat': 'observation/state'}
  config = make_config(data_dir, 'gato_cartpole', t_bad=bad)
  with pytest.raises(
    ValueError,
    match=r'config key data.public_sources.t_bad.observation must map every field of spec '
    r"'cartpole' \(\['state'\]\) and nothing else; unknown: \['stat'\]; unmapped: \['state'\]",
  ):
    tasks.register_from_config(config)
  config = make_config(data_dir, 'gato_cartpole')
  config.data.mixtures = {'t_mix': {'gato_nope': 1.0}}
  with pytest.raises(ValueError, match=r"config key data.mixtures.t_mix: unknown task 'gato_nope'"):
    tasks.register_from_config(config)
  config = make_config(data_dir, 'gato_cartpole')
  config.data.specs = {'t_robot': {'observation': [{'type': 'vector', 'name': 'x'}], 'action': {}}}
  with pytest.raises(
    ValueError, match=r'config key data.specs.t_robot.observation\[0\].type must be one of'
  ):
    tasks.register_from_config(config)


def test_a_mixture_with_an_unreachable_source_stops_before_any_step_naming_it(data_dir, tmp_path):
  missing = {**source_entry(str(tmp_path)), 'dataset': 'no_such_robot:1.0.0'}
  config = make_config(data_dir, 't_with_missing', t_missing=missing)
  config.data.mixtures = {'t_with_missing': {'gato_cartpole': 1.0, 'gato_t_missing': 1.0}}
  with pytest.raises(
    public_rlds.DatasetUnavailableError,
    match=r'public source t_missing: cannot open dataset no_such_robot:1\.0\.0 in '
    + str(tmp_path)
    + r'.*public_rlds check --mixture=M',
  ):
    data.make_iterator(config, batch_size=2)


def test_a_changed_public_source_is_part_of_the_runs_fingerprint(data_dir):
  from gato_jax import fingerprint

  saved = make_config(data_dir, 'gato_t_cartpole', t_cartpole=source_entry(data_dir))
  changed = make_config(
    data_dir, 'gato_t_cartpole', t_cartpole={**source_entry(data_dir), 'spec': 'acrobot'}
  )
  differences = fingerprint.config_differences(fingerprint._json(saved), changed)
  assert [d.key for d in differences] == ['data.public_sources']
  assert fingerprint.config_differences(fingerprint._json(saved), saved) == []
