"""The seqio pipeline: sequences the model can take, Gato's windowing and prompts, sharding,
determinism, exact resume, and bad input that is never passed on silently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import demo
from data_pipelines import captions, prepare, rollouts
from gato_jax import data, specs, tokenizer
from gato_jax.data import episodes, options, pipeline, preprocessors, sources
from gato_jax.data.feature_converter import GatoFeatureConverter

K = tokenizer.TokenKind
LENGTH = 256
FEATURES = (*preprocessors.TOKEN_FEATURES, *preprocessors.PATCH_FEATURES)
MIXTURE = 'test_pipeline_mix'
if MIXTURE not in seqio.MixtureRegistry.names():
  seqio.MixtureRegistry.add(
    MIXTURE,
    [('gato_cartpole', 1.0), ('gato_babyai_gotoredball', 1.0), ('gato_shapes_captions', 0.5)],
  )


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('pipeline_data'))
  rollouts.generate('cartpole', root, episodes=6, max_steps=40, random_episodes=2)
  rollouts.generate('babyai_gotoredball', root, episodes=3, max_steps=12, random_episodes=1)
  captions.GatoShapesCaptions(data_dir=root, examples=40).download_and_prepare()
  return root


def make_config(data_dir: str, **data_overrides):
  config = demo.get_config()
  config.model.max_length = LENGTH
  config.data.mixture = MIXTURE
  config.data.data_dir = data_dir
  config.data.update(data_overrides)
  return config


def task_sequences(config, task: str, n: int, seed: int = 0, shard=None) -> list[dict]:
  """n converted (padded, scattered) sequences of one task, as numpy."""
  options.configure(options.from_config(config))
  ds = seqio.get_mixture_or_task(task).get_dataset(
    {k: LENGTH for k in FEATURES}, shuffle=True, seed=seed, num_epochs=None, shard_info=shard
  )
  ds = GatoFeatureConverter()(ds, {k: LENGTH for k in FEATURES})
  return list(ds.take(n).as_numpy_iterator())


def test_batches_follow_the_model_contract(data_dir):
  it = data.make_iterator(make_config(data_dir), batch_size=4)
  seen_kinds = set()
  for _ in range(6):
    b = next(it)
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
      'tokens': ((4, LENGTH), np.int32),
      'kinds': ((4, LENGTH), np.int32),
      'local_positions': ((4, LENGTH), np.int32),
      'loss_mask': ((4, LENGTH), np.int32),
      'patches': ((4, LENGTH, 16, 16, 3), np.uint8),
      'patch_positions': ((4, LENGTH, 4), np.int32),
      'segment_ids': ((4, LENGTH), np.int32),
    }
    kinds = b['kinds']
    seen_kinds |= set(np.unique(kinds).tolist())
    image = kinds == K.IMAGE
    # Pixels and patch positions only at IMAGE positions, and every IMAGE position has some.
    assert not b['patches'][~image].any() and not b['patch_positions'][~image].any()
    assert (b['patch_positions'][image][:, 1] > b['patch_positions'][image][:, 0]).all()
    assert (b['patches'][image].reshape(-1, 16 * 16 * 3).max(axis=1) > 0).all()
    # Targets: text and actions only; padding only after the real tokens.
    assert np.isin(kinds[b['loss_mask'] == 1], tokenizer.LOSS_KINDS).all()
    for row in kinds:
      real = np.flatnonzero(row != K.PAD)
      assert real.size and real[-1] == real.size - 1
  assert {K.IMAGE, K.TEXT, K.OBSERVATION_CONTINUOUS, K.OBSERVATION_TEXT, K.ACTION_DISCRETE} <= (
    seen_kinds
  )


def _timestep_blocks_ok(positions: np.ndarray, obs_tokens: int, per_step: int) -> bool:
  """Local positions run 2, 3, ... over the observation, then 1 for '|' and the action."""
  expected = np.tile(
    np.r_[np.arange(2, 2 + obs_tokens), np.ones(per_step - obs_tokens)], LENGTH // per_step + 2
  )
  return bool((positions == expected[: positions.size]).all())


def test_windows_start_on_timesteps_and_a_quarter_have_prompts(data_dir):
  spec = specs.get_spec('cartpole')
  per_step = spec.tokens_per_timestep
  sequences = task_sequences(make_config(data_dir), 'gato_cartpole', 400)
  prompted = 0
  for s in sequences:
    real = s['kinds'] != K.PAD
    assert _timestep_blocks_ok(s['local_positions'][real], spec.observation_tokens, per_step)
    actions = s['kinds'] == K.ACTION_DISCRETE
    # Prompt actions condition but are not targets; every other action is one.
    untrained = np.flatnonzero(actions & (s['loss_mask'] == 0))
    if untrained.size:
      prompted += 1
      trained = np.flatnonzero(actions & (s['loss_mask'] == 1))
      assert untrained.max() < trained.min()  # The prompt comes first.
      prompt_length = (untrained.max() // per_step + 1) * per_step
      assert prompt_length <= LENGTH // 4
  # 25% of sequences get a prompt, except those of each stream's first episode.
  assert 0.15 < prompted / len(sequences) < 0.33


def test_prompts_come_from_episode_ends_and_uniform_positions(data_dir, byte_vocabulary):
  config = make_config(data_dir, prompt_probability=1.0)
  spec = specs.get_spec('cartpole')
  layout = tokenizer.layout_from_config(config)
  steps = spec.tokenizer(layout, byte_vocabulary)
  tails = set()
  prompt_steps = LENGTH // 4 // spec.tokens_per_timestep
  for e in episodes.read_episodes('cartpole', data_dir):
    toks = steps.tokenize_steps(*e.acted_steps()).tokens
    tails.add(toks[-prompt_steps:].tobytes())
  from_end = 0
  sequences = task_sequences(config, 'gato_cartpole', 200)
  prompted = [s for s in sequences if (s['loss_mask'][: spec.tokens_per_timestep] == 0).all()]
  for s in prompted:
    prompt = s['tokens'][: prompt_steps * spec.tokens_per_timestep]
    from_end += prompt.reshape(prompt_steps, -1).tobytes() in tails
  assert len(prompted) > 150
  # Half from episode ends (a uniform prompt may also land on the end, rarely).
  assert 0.35 < from_end / len(prompted) < 0.7


def test_return_filter_measures_from_random_to_expert(data_dir):
  options.configure(options.from_config(make_config(data_dir)))

  def kept(returns, expert, random):
    ds = tf.data.Dataset.from_tensor_slices(
      {
        'episode_return': np.float32(returns),
        'expert_return': np.full(len(returns), expert, np.float32),
        'random_return': np.full(len(returns), random, np.float32),
      }
    )
    return [float(x['episode_return']) for x in preprocessors.filter_by_return(ds)]

  assert kept([10, 50, 80, 100], expert=100, random=math.nan) == [80, 100]  # Gato's 80%.
  assert kept([-900, -300, -150, -100], expert=-100, random=-1000) == [-150, -100]
  assert kept([1, 2], expert=math.nan, random=math.nan) == [1, 2]  # Unknown expert: keep.


def test_one_return_rule_keeps_demonstrations():
  # episodes.min_kept_return is the bar of the training filter and of the evaluator's prompts.
  bar = episodes.min_kept_return
  assert bar(100.0, None, 0.8) == bar(100.0, math.nan, 0.8) == 80.0  # Random unknown: 0.
  assert bar(-100.0, -1000.0, 0.8) == pytest.approx(-280.0)
  for expert, random in ((None, 5.0), (math.nan, 0.0), (1.0, 1.0), (1.0, 2.0)):
    assert bar(expert, random, 0.8) == -math.inf  # Nothing to measure against: keep all.


def _episode(observation: np.ndarray, name: str) -> dict:
  return {
    'observation': {'state': observation},
    'action': np.zeros(len(observation), np.int64),
    'episode': name,
  }


def test_bad_episodes_raise_or_are_dropped_and_counted(data_dir):
  good = np.zeros((5, 4), np.float32)
  bad = good.copy()
  bad[2, 1] = np.nan

  def run(mode: str) -> list:
    options.configure(options.from_config(make_config(data_dir, bad_examples=mode)))
    ds = tf.data.Dataset.from_generator(
      lambda: iter([_episode(good, 'env A seed 1'), _episode(bad, 'env A seed 2')]),
      output_signature={
        'observation': {'state': tf.TensorSpec([None, 4], tf.float32)},
        'action': tf.TensorSpec([None], tf.int64),
        'episode': tf.TensorSpec([], tf.string),
      },
    )
    return list(preprocessors.tokenize_episodes(ds, 'cartpole').as_numpy_iterator())

  with pytest.raises(Exception, match=r'dataset cartpole, episode env A seed 2:.*state'):
    run('raise')
  before = preprocessors.dropped_examples().get('cartpole', 0)
  out = run('drop')
  assert len(out) == 1 and out[0]['tokens'].size == 4 * 6  # The good episode's 4 timesteps.
  assert preprocessors.dropped_examples()['cartpole'] == before + 1


def test_same_seed_same_stream_and_resume_is_exact(data_dir, tmp_path):
  config = make_config(data_dir)
  a = data.make_iterator(config, batch_size=2, seed=3)
  b = data.make_iterator(config, batch_size=2, seed=3)
  c = data.make_iterator(config, batch_size=2, seed=4)
  first_a, first_b, first_c = next(a), next(b), next(c)
  for k in first_a:
    np.testing.assert_array_equal(first_a[k], first_b[k])
  assert not np.array_equal(first_a['tokens'], first_c['tokens'])

  for _ in range(3):
    next(a)
  a.save(str(tmp_path))
  expected = [next(a) for _ in range(3)]
  resumed = data.make_iterator(config, batch_size=2, seed=3)
  resumed.restore(str(tmp_path))
  for want in expected:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)

  with pytest.raises(FileNotFoundError, match='process 0 of 2'):
    data.DataIterator(tf.data.Dataset.range(3), process_index=0, process_count=2).restore(
      str(tmp_path)
    )


def test_host_shards_are_disjoint_and_cover_the_episodes(data_dir):
  options.configure(options.from_config(make_config(data_dir)))
  source = sources.EpisodeSource('cartpole')

  def names(shard):
    ds = source.get_dataset(shuffle=False, shard_info=shard)
    return [x['episode'].decode() for x in ds.as_numpy_iterator()]

  everything = names(None)
  first, second = names(seqio.ShardInfo(0, 2)), names(seqio.ShardInfo(1, 2))
  assert len(everything) == 6 and len(set(everything)) == 6
  assert not set(first) & set(second)
  assert sorted(first + second) == sorted(everything)


def test_text_task_crops_documents_and_trains_on_every_token(data_dir, tmp_path):
  path = tmp_path / 'corpus.txt'
  path.write_text('short line\n' + 'x' * 1000 + '\n')
  config = make_config(data_dir, text_files=str(path))
  sequences = task_sequences(config, 'gato_text_local', 6)
  lengths = sorted(int((s['kinds'] == K.TEXT).sum()) for s in sequences)
  assert lengths[0] == len('short line') + 1  # Bytes plus EOS.
  assert lengths[-1] == LENGTH  # The long document is cropped to L.
  for s in sequences:
    assert (s['loss_mask'] == (s['kinds'] == K.TEXT)).all()


def test_caption_sequences_hold_five_pairs(data_dir):
  (s,) = task_sequences(make_config(data_dir), 'gato_shapes_captions', 1)
  image = s['kinds'] == K.IMAGE
  assert image.sum() == 5 * 16  # Five 64x64 images of 16 patches each.
  starts = np.flatnonzero(np.diff(image.astype(int)) == 1) + 1
  assert len(starts) == 4 and image[0]
  assert (s['loss_mask'] == (s['kinds'] == K.TEXT)).all()
  vocab_eos = 1  # seqio.ByteVocabulary's EOS.
  assert (s['tokens'][starts - 1] == vocab_eos).all()  # Every caption ends with EOS.


def test_config_errors_name_the_key(data_dir):
  with pytest.raises(ValueError, match='data.mixture'):
    data.make_iterator(make_config(data_dir, mixture='no_such_mixture'), batch_size=2)
  with pytest.raises(ValueError, match='data.prompt_probability'):
    options.from_config(make_config(data_dir, prompt_probability=1.5))
  small = make_config(data_dir)
  small.model.local_positions = 64
  with pytest.raises(ValueError, match='model.local_positions'):
    data.make_iterator(small, batch_size=2)
  short = make_config(data_dir)
  short.model.max_length = 128
  with pytest.raises(ValueError, match='model.max_length'):
    pipeline.check_tasks(short)


def test_a_missing_dataset_stops_the_pipeline_naming_the_prepare_command(tmp_path):
  # The library only reads: nothing is generated, and the error says what to run.
  config = make_config(str(tmp_path))
  with pytest.raises(FileNotFoundError) as error:
    data.make_iterator(config, batch_size=2)
  message = str(error.value)
  assert 'python -m data_pipelines.prepare --config=' in message
  assert f'data_dir {tmp_path}' in message and MIXTURE in message
  for what in ('episodes cartpole', 'episodes babyai_gotoredball', 'drawn-shape captions'):
    assert what in message
  assert not (tmp_path / 'gato_episodes').exists()


def test_prepare_writes_what_the_mixture_lacks_then_the_pipeline_reads_it(tmp_path, capsys):
  config = make_config(
    str(tmp_path), mixture='gato_cartpole', episodes_per_task=2, task_episodes=''
  )
  config.data.max_episode_steps = 20
  config.data.random_episodes = 1
  written = prepare.prepare(config)
  assert [d.what for d in written] == ['episodes cartpole']
  assert 'generating episodes cartpole into' in capsys.readouterr().out
  assert episodes.read_metadata('cartpole', str(tmp_path))['episodes'] == 2
  assert prepare.prepare(config) == []  # Complete: kept, not rewritten.
  batch = next(data.make_iterator(config, batch_size=2))
  assert batch['tokens'].shape == (2, LENGTH)


def test_prepare_in_two_processes_writes_the_same_records_as_one(tmp_path, capsys):
  """Datasets are written in parallel (spawned processes), each exactly as alone."""
  one, two = (make_config(str(tmp_path / n), episodes_per_task=2, task_episodes='',
                          max_episode_steps=12, random_episodes=1, caption_examples=6)
              for n in ('one', 'two'))
  alone = prepare.prepare(one, processes=1)
  parallel = prepare.prepare(two, processes=2)
  assert sorted(d.what for d in parallel) == sorted(d.what for d in alone)
  assert len(alone) == 3  # Two episode datasets and the captions.
  by_what = {d.what: d.path for d in parallel}
  for dataset in alone:
    records = [list(tfds.as_numpy(tfds.builder_from_directory(path).as_dataset(split='train')))
               for path in (dataset.path, by_what[dataset.what])]
    assert len(records[0]) == len(records[1]) > 0, dataset.what
    for a, b in zip(*records, strict=True):
      leaves = list(zip(_leaves(a), _leaves(b), strict=True))
      assert len(leaves) > len(tf.nest.flatten(a)) or 'caption' in dataset.what, dataset.what
      for x, y in leaves:
        np.testing.assert_array_equal(x, y, err_msg=dataset.what)


def _leaves(record):
  """The arrays of one TFDS record, an RLDS episode's nested steps dataset included."""
  for leaf in tf.nest.flatten(record):
    if isinstance(leaf, np.ndarray) or np.isscalar(leaf):
      yield leaf
    else:  # The steps of an episode: a dataset of its own.
      for step in leaf:
        yield from _leaves(step)


def test_pipeline_benchmark_reports_real_token_counts(data_dir):
  from benchmarks import pipeline as pipeline_benchmark

  row = pipeline_benchmark.measure(make_config(data_dir), batch_size=2, batches=3, warmup=1)
  assert row['stream'] == MIXTURE
  assert 0 < row['tokens/s'] <= row['positions/s']
  assert 0 <= row['pad share'] < 1 and 0 <= row['image share'] < 1


def test_task_episodes_override_the_default_and_reject_bad_entries(data_dir):
  config = make_config(data_dir, task_episodes='cartpole=40, babyai_gotoredball=300')
  assert prepare.episode_counts(config.data) == {'cartpole': 40, 'babyai_gotoredball': 300}
  for bad in ('cartpole', 'cartpole=0', 'cartpole=x'):
    with pytest.raises(ValueError, match='data.task_episodes'):
      prepare.episode_counts(make_config(data_dir, task_episodes=bad).data)
  with pytest.raises(ValueError, match='no_such_task'):
    prepare.episode_counts(make_config(data_dir, task_episodes='no_such_task=3').data)


def test_generated_data_with_another_episode_count_is_an_error(data_dir):
  # data_dir holds 6 cartpole and 3 BabyAI episodes; preparing with a config that asks for
  # other counts must not leave them to be trained on silently.
  matching = make_config(data_dir, task_episodes='cartpole=6,babyai_gotoredball=3')
  assert prepare.prepare(matching) == []  # Nothing missing, counts agree: nothing to do.
  stale = make_config(data_dir, task_episodes='cartpole=40,babyai_gotoredball=3')
  with pytest.raises(ValueError, match=r'holds 6 episodes of cartpole.*data.task_episodes.*40'):
    prepare.prepare(stale)
  by_default = make_config(data_dir, task_episodes='', episodes_per_task=3)
  with pytest.raises(ValueError, match=r'holds 6 episodes of cartpole.*data.episodes_per_task'):
    prepare.prepare(by_default)


def corrupted_copy(data_dir: str, target, truncate: bool = False) -> str:
  """`data_dir`'s cartpole dataset copied under `target`, its one shard damaged; its path."""
  import shutil

  source = episodes.dataset_dir('cartpole', data_dir)
  shutil.copytree(source, episodes.dataset_dir('cartpole', str(target)))
  (shard,) = tf.io.gfile.glob(f'{episodes.dataset_dir("cartpole", str(target))}/*.tfrecord*')
  with open(shard, 'rb') as f:
    content = bytearray(f.read())
  if truncate:
    content = content[: len(content) * 2 // 3]
  else:
    middle = len(content) // 2
    content[middle : middle + 64] = bytes(b ^ 0xFF for b in content[middle : middle + 64])
  with open(shard, 'wb') as f:
    f.write(content)
  return shard


@pytest.mark.parametrize('truncate', [False, True], ids=['flipped', 'truncated'])
def test_a_corrupt_shard_is_named_by_its_file(data_dir, tmp_path, truncate):
  # Issue 16 defect 6: TF's "corrupted record at N" named no file.
  shard = corrupted_copy(data_dir, tmp_path, truncate)
  it = data.make_iterator(make_config(str(tmp_path), mixture='gato_cartpole'), batch_size=2)
  with pytest.raises(data.CorruptDataError) as error:
    for _ in range(20):  # 6 short episodes: every record is read within a few batches.
      next(it)
  message = str(error.value)
  assert f'corrupt training data: {shard}: ' in message
  assert ('corrupted record at' in message) != truncate
  assert 'data_pipelines.prepare' in message


def test_generation_checks_its_settings_and_leaves_no_empty_directories(tmp_path, monkeypatch):
  root = tmp_path / 'data'
  with pytest.raises(ValueError, match='episodes must be an int of at least 1, got 0'):
    rollouts.generate('cartpole', str(root), episodes=0)
  assert not root.exists()
  (tmp_path / 'file').write_text('')
  with pytest.raises(ValueError, match=r'data_dir=.*/file is a file, not a directory'):
    rollouts.generate('cartpole', str(tmp_path / 'file'), episodes=1)

  def broken(*args, **kwargs):
    raise ValueError('env CartPole-v1, seed 0, step 3: a broken env')

  config = make_config(str(root), mixture='gato_cartpole', episodes_per_task=0, task_episodes='')
  with pytest.raises(ValueError, match='config key data.episodes_per_task must be an int of at '
                                       'least 1, got 0'):
    prepare.prepare(config)
  assert not root.exists()

  monkeypatch.setattr(rollouts, 'rollout', broken)
  with pytest.raises(ValueError, match='a broken env'):
    rollouts.generate('cartpole', str(root), episodes=1)
  assert not root.exists()  # Everything TFDS created for the failed run was empty: removed.
