"""Generation as an Apache Beam pipeline (DirectRunner, 2 worker processes) writes what the
single-process path writes for the same seeds, and a rerun into a finished dataset is a no-op.
"""

import os

import pytest

pytest.importorskip('apache_beam', reason="the 'beam' extra is not installed")

import tensorflow as tf  # noqa: E402

from data_pipelines import beam_rollouts, rollouts  # noqa: E402
from gato_jax.data import episodes  # noqa: E402

SETTINGS = dict(episodes=6, seed=3, max_steps=50, random_episodes=2)


@pytest.fixture(scope='module')
def datasets(tmp_path_factory):
  """The same dataset twice: 2 Beam workers (3 data ranges + 1 random), one process."""
  root = tmp_path_factory.mktemp('beam')
  beam_dir, single_dir = str(root / 'beam'), str(root / 'single')
  rollouts.generate(
    'cartpole', beam_dir, runner='DirectRunner', num_workers=2, seeds_per_range=2, **SETTINGS
  )
  rollouts.generate('cartpole', single_dir, **SETTINGS)
  return beam_dir, single_dir


def _records(data_dir):
  """Every stored record as a parsed tf.train.Example, in file order.

  Compared parsed: protobuf serializes a map's entries in an order that varies between
  processes, so two runs of the single-process path already differ in bytes.
  """
  path = episodes.dataset_dir('cartpole', data_dir)
  files = sorted(tf.io.gfile.glob(f'{path}/*.tfrecord*'))
  return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def test_beam_output_equals_single_process_output(datasets):
  beam_dir, single_dir = datasets
  in_file_order = [list(episodes.read_episodes('cartpole', d)) for d in datasets]
  # Keys are seeds in both paths, so TFDS stores the episodes in the same order.
  assert [e.seed for e in in_file_order[0]] == [e.seed for e in in_file_order[1]]
  beam, single = [sorted(eps, key=lambda e: e.seed) for eps in in_file_order]
  assert [e.seed for e in beam] == list(range(3, 9))
  for b, s in zip(beam, single, strict=True):
    assert b.observations.keys() == s.observations.keys() == {'state'}
    for k in b.observations:
      assert b.observations[k].dtype == s.observations[k].dtype
      assert b.observations[k].tobytes() == s.observations[k].tobytes()
    assert b.actions.dtype == s.actions.dtype and b.actions.tobytes() == s.actions.tobytes()
    assert b.rewards.dtype == s.rewards.dtype and b.rewards.tobytes() == s.rewards.tobytes()
    assert (b.env, b.policy, b.is_terminal) == (s.env, s.policy, s.is_terminal)
  assert _records(beam_dir) == _records(single_dir)
  # The returns the workers measured, in seed order; the random ones too.
  beam_meta = episodes.read_metadata('cartpole', beam_dir)
  assert beam_meta == episodes.read_metadata('cartpole', single_dir)
  assert beam_meta['episode_returns'] == [e.episode_return for e in single]
  assert len(beam_meta['random_returns']) == 2
  dataset = episodes.dataset_dir('cartpole', beam_dir)
  assert beam_rollouts.RETURNS_FILE not in os.listdir(dataset)  # Carried, then removed.


def test_rerun_into_a_finished_dataset_is_a_no_op(datasets):
  beam_dir, _ = datasets
  dataset = episodes.dataset_dir('cartpole', beam_dir)
  before = {f: os.stat(f'{dataset}/{f}').st_mtime_ns for f in os.listdir(dataset)}
  rollouts.generate('cartpole', beam_dir, runner='DirectRunner', num_workers=2, **SETTINGS)
  assert {f: os.stat(f'{dataset}/{f}').st_mtime_ns for f in os.listdir(dataset)} == before


def test_seed_ranges_cover_every_seed_once():
  ranges = beam_rollouts.seed_ranges(10, 7, 3)
  assert [(r.start, r.stop) for r in ranges] == [(10, 13), (13, 16), (16, 17)]
  config = rollouts.episodes_config('cartpole', episodes=5, seed=2, random_episodes=2)
  items = beam_rollouts.work_items(config, 4)
  assert [(r.kind, r.start, r.stop) for r in items] == [
    ('data', 2, 6),
    ('data', 6, 7),
    ('random', 1_000_002, 1_000_004),
  ]
  assert beam_rollouts.default_range_size(1000, 2) == 100
  assert beam_rollouts.default_range_size(6, 2) == 1


def test_runner_flags_reach_the_pipeline_options():
  options = beam_rollouts.pipeline_options(
    'DirectRunner', 2, '--direct_running_mode=multi_threading'
  ).get_all_options()
  # Beam's own DirectRunner would first download Prism; its local fallback never does.
  assert options['runner'] == 'FnApiRunner' and options['direct_num_workers'] == 2
  assert options['direct_running_mode'] == 'multi_threading'  # beam_options come last.
  dataflow = beam_rollouts.pipeline_options(
    'DataflowRunner', 8, '--project=p --region=r'
  ).get_all_options()
  assert (dataflow['num_workers'], dataflow['project'], dataflow['region']) == (8, 'p', 'r')
  with pytest.raises(ValueError, match='runner must be one of'):
    beam_rollouts.pipeline_options('LocalRunner')


def test_worker_settings_without_a_runner_are_refused(tmp_path):
  with pytest.raises(ValueError, match='need a Beam runner'):
    rollouts.generate('cartpole', str(tmp_path), episodes=1, num_workers=2)
  with pytest.raises(ValueError, match='num_workers must be an int of at least 1'):
    rollouts.generate('cartpole', str(tmp_path), episodes=1, runner='DirectRunner', num_workers=0)
  assert os.listdir(tmp_path) == []
