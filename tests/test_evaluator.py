"""The evaluator end to end: references score 100% and 0%, checkpoints are scored and watched."""

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import gymnasium as gym
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tiny_train_config
from flax import nnx

from configs import common, demo
from data_pipelines import rollouts
from gato_jax import checkpointing, envs, evaluator, fingerprint, policy, scores, specs
from gato_jax import tokenizer as tok
from gato_jax.data import episodes
from gato_jax.envs import runner
from gato_jax.envs.wrappers import model_inputs
from gato_jax.model import from_config
from gato_jax.model.batch import synthetic_batch

# One task per domain; every episode is capped at MAX_STEPS, datasets and evaluation alike.
TASKS = ('cartpole', 'babyai_gotoredball', 'metaworld_reach')
MAX_STEPS = 100


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('episodes'))
  for task in TASKS:
    rollouts.generate(task, directory, episodes=4, max_steps=MAX_STEPS, random_episodes=8)
  return directory


def make_config(data_dir, tasks=TASKS, **overrides):
  # Offline metrics have their own tests (test_action_metrics.py): off here unless asked.
  overrides.setdefault('offline_episodes', 0)
  config = demo.get_config()
  config.data.data_dir = data_dir
  config.data.max_episode_steps = MAX_STEPS
  config.eval = common.eval_config(tasks=','.join(tasks), **overrides)
  evaluator.validate(config)
  return config


def test_expert_scores_near_100_and_random_near_0(data_dir):
  config = make_config(data_dir, episodes=8, batch_size=4)
  expert = evaluator.evaluate(config, None, 'expert')
  for task in TASKS:
    r = expert['tasks'][task]
    assert r['episodes'] == 8 and r['failed_episodes'] == 0, r
    assert 80.0 <= r['normalized_score'] <= 110.0, (task, r)
    assert r['ci95'] is not None and r['ci95'] >= 0.0
  assert expert['aggregate']['tasks_above']['all'][scores.THRESHOLDS.index(80)] == 3

  # BabyAI's random walk sometimes reaches the ball in 100 steps: too noisy for 8 episodes.
  config = make_config(data_dir, tasks=('cartpole', 'metaworld_reach'), episodes=8, batch_size=8)
  random = evaluator.evaluate(config, None, 'random')
  for task, r in random['tasks'].items():
    assert abs(r['normalized_score']) <= 15.0, (task, r)
  assert random['aggregate']['tasks_above']['all'][scores.THRESHOLDS.index(50)] == 0


# The demo mixture's other env tasks, at the demo's own cap: Acrobot and MountainCar need
# more than 100 steps for their experts to beat random, and Breakout's 300 are 5 lives.
LONG_TASKS = ('acrobot', 'mountaincar', 'atari_breakout')
LONG_STEPS = 300


def test_the_expert_scores_100_through_the_evaluator_on_every_demo_task(tmp_path):
  """Reference and evaluated episodes follow one protocol (cap, frame skip, sticky actions,
  lives), so the expert scores its own 100% within noise on every task of the demo
  mixture (TASKS above covers the other three). Breakout scored 59% when the reference
  was the best pair of 20 episodes."""
  from gato_jax.data import tasks as seqio_tasks

  demo_tasks = {t for t in seqio_tasks.DEMO_RATES}
  assert demo_tasks == set(TASKS) | set(LONG_TASKS)
  for task in LONG_TASKS:
    rollouts.generate(task, str(tmp_path), episodes=10, max_steps=LONG_STEPS, random_episodes=10)
  config = make_config(str(tmp_path), tasks=LONG_TASKS, episodes=10, batch_size=10)
  config.data.max_episode_steps = LONG_STEPS
  expert = evaluator.evaluate(config, None, 'expert')
  for task in LONG_TASKS:
    r = expert['tasks'][task]
    assert r['failed_episodes'] == 0, r
    assert 85.0 <= r['normalized_score'] <= 115.0, (task, r)


def test_summary_normalizes_with_the_dataset_references():
  results = [
    runner.EpisodeResult(seed=i, episode_return=v, steps=10)
    for i, v in enumerate([100.0, 120.0, 140.0])
  ] + [runner.EpisodeResult(9, 0.0, 3, failed=True, error='boom')]
  summary = scores.summarize('cartpole', results, {'expert_return': 220.0, 'random_return': 20.0})
  assert summary['mean_return'] == 120.0 and summary['episodes'] == 3
  assert summary['failed_episodes'] == 1 and summary['failures'][0]['error'] == 'boom'
  assert summary['normalized_score'] == 50.0
  # Student-t, 2 degrees of freedom: 4.303 * 20 / sqrt(3).
  assert summary['ci95'] == pytest.approx(4.3027 * 20.0 / np.sqrt(3), rel=1e-4)
  assert summary['normalized_ci95'] == pytest.approx(summary['ci95'] / 2.0)
  flat = scores.summarize('cartpole', results[:1], {'expert_return': 1.0, 'random_return': 1.0})
  assert flat['normalized_score'] is None and 'expert > random' in flat['note']


def test_tasks_above_counts_per_domain():
  counts = scores.tasks_above(
    {'a': 120.0, 'b': 50.0, 'c': 10.0}, {'a': 'x', 'b': 'x', 'c': 'y'}, thresholds=(0, 50, 100)
  )
  assert counts == {'all': [3, 2, 1], 'x': [2, 2, 1], 'y': [1, 0, 0]}


# ----------------------------------------------------------------------------------------
# The policy loop with a tiny model
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def small_context_model():
  config = demo.get_config()
  config.model.max_length = 36  # Cartpole's 6-token timesteps slide every 3 steps.
  return from_config(config, nnx.Rngs(0)), tok.layout_from_config(config)


class Recording:
  """A policy that keeps what the policy it wraps returned."""

  def __init__(self, actor):
    self.actor, self.actions = actor, []

  def begin(self, envs_, seeds):
    self.actor.begin(envs_, seeds)

  def act(self, observations):
    self.actions.append(self.actor.act(observations))
    return self.actions[-1]


def test_cached_and_uncached_sampling_take_the_same_actions(small_context_model, data_dir):
  model, layout = small_context_model
  task_tokenizer = specs.get_spec('cartpole').tokenizer(layout)
  demos = evaluator.demonstrations('cartpole', data_dir, 2, {}, 0.0)
  runs = {}
  for use_cache in (True, False):
    options = policy.SamplingOptions(temperature=0.0, use_cache=use_cache, prompt_tokens=12)
    actor = policy.GatoPolicy(model, task_tokenizer, demos, options)
    recording = Recording(actor)
    results = runner.run_episodes(
      'cartpole', task_tokenizer, recording, episodes=6, batch_size=3, seed=7, max_steps=20
    )
    runs[use_cache] = (
      np.concatenate(recording.actions),
      [(r.episode_return, r.steps) for r in results],
      actor,
    )
  (cached, cached_results, actor), (uncached, uncached_results, _) = runs[True], runs[False]
  assert actor.slides >= 2  # The context passed L = 36 and slid, more than once.
  np.testing.assert_array_equal(cached, uncached)
  assert cached_results == uncached_results
  assert cached.min() >= layout.discrete_offset and cached.max() < layout.discrete_offset + 2


def test_sampling_stays_in_the_action_range_at_any_temperature():
  config = demo.get_config()
  model, layout = from_config(config, nnx.Rngs(0)), tok.layout_from_config(config)
  task_tokenizer = specs.get_spec('metaworld_reach').tokenizer(layout)
  options = policy.SamplingOptions(temperature=5.0, prompt_mode='none')
  actor = policy.GatoPolicy(model, task_tokenizer, [], options, seed=3)
  results = runner.run_episodes(
    'metaworld_reach', task_tokenizer, actor, episodes=2, batch_size=2, seed=0, max_steps=3
  )
  assert [r.steps for r in results] == [3, 3] and not any(r.failed for r in results)
  tokens = np.concatenate(
    [
      c.inputs()['tokens'][c.inputs()['kinds'] == tok.TokenKind.ACTION_CONTINUOUS]
      for c in actor.contexts
    ]
  )
  start, stop = layout.action_token_range('continuous')
  assert tokens.size == 2 * 3 * 4 and tokens.min() >= start and tokens.max() < stop
  assert len(np.unique(tokens)) > 4  # Hot sampling spreads over the bins.


def test_demonstration_prompt_takes_whole_timesteps_from_the_end_or_uniformly(data_dir):
  task_tokenizer = specs.get_spec('cartpole').tokenizer(tok.TokenLayout(512))
  (observations, actions), *_ = evaluator.demonstrations('cartpole', data_dir, 1, {}, 0.0)
  everything = model_inputs(task_tokenizer.tokenize_steps(observations, actions))
  rng = np.random.default_rng(0)
  end = policy.demonstration_prompt(task_tokenizer, observations, actions, 20, 'end', rng)
  assert len(end['tokens']) == 18  # Three 6-token timesteps fit in 20.
  np.testing.assert_array_equal(end['tokens'], everything['tokens'][-18:])
  starts = set()
  for _ in range(20):
    window = policy.demonstration_prompt(task_tokenizer, observations, actions, 20, 'uniform', rng)[
      'tokens'
    ]
    start = next(
      i
      for i in range(0, len(everything['tokens']), 6)
      if np.array_equal(everything['tokens'][i : i + 18], window)
    )
    starts.add(start)
  assert len(starts) > 5
  none = policy.demonstration_prompt(task_tokenizer, observations, actions, 20, 'none', rng)
  assert len(none['tokens']) == 0


def test_prompts_keep_the_episodes_training_keeps(data_dir):
  # Capped at MAX_STEPS, every CartPole expert episode returns MAX_STEPS. With no random
  # return recorded, the bar is 80% of the expert's, as in the training filter.
  returns = [e.episode_return for e in episodes.read_episodes('cartpole', data_dir)]
  assert returns == [float(MAX_STEPS)] * 4
  assert len(evaluator.demonstrations('cartpole', data_dir, 4, {'expert_return': 125.0}, 0.8)) == 4
  assert evaluator.demonstrations('cartpole', data_dir, 4, {'expert_return': 126.0}, 0.8) == []
  kept = evaluator.demonstrations(
    'cartpole', data_dir, 4, {'expert_return': 126.0, 'random_return': 50.0}, 0.6
  )
  assert len(kept) == 4  # 50 + 0.6 * 76 = 95.6 <= 100.


def test_a_failing_env_is_remade_and_its_episode_counted(data_dir):
  made = []

  class Flaky(gym.Wrapper):
    """Raises at the 3rd step of seed 101's episode; otherwise the real env."""

    def __init__(self, task, seed):
      super().__init__(envs.make_env(task, seed))
      self.seed, self.steps = None, 0
      made.append(seed)

    def reset(self, *, seed=None, options=None):
      self.seed, self.steps = seed, 0
      return self.env.reset(seed=seed, options=options)

    def step(self, action):
      self.steps += 1
      if self.seed == 101 and self.steps == 3:
        raise RuntimeError('simulator exploded')
      return self.env.step(action)

  task_tokenizer = specs.get_spec('cartpole').tokenizer(tok.TokenLayout(512))
  actor = runner.EnvPolicy(task_tokenizer, 'expert')
  run = functools.partial(
    runner.run_episodes,
    'cartpole',
    task_tokenizer,
    actor,
    episodes=3,
    batch_size=2,
    seed=100,
    max_steps=10,
    make_env=Flaky,
  )
  results = run()
  failed = [r for r in results if r.failed]
  assert len(failed) == 1 and failed[0].seed == 101 and failed[0].steps == 2
  assert 'simulator exploded' in failed[0].error
  assert sorted(r.seed for r in results if not r.failed) == [100, 102, 103]
  assert made == [100, 101, 103]  # Row 1's env, which failed, was made again for seed 103.
  summary = scores.summarize('cartpole', results, {'expert_return': 10.0, 'random_return': 0.0})
  assert summary['episodes'] == 3 and summary['failed_episodes'] == 1
  with pytest.raises(RuntimeError, match='max_failures=0.*simulator exploded'):
    run(max_failures=0)


# ----------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------


def save_params(workdir, step, model, meta=None):
  path = os.path.join(checkpointing.step_dir(str(workdir), step))
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(path, 'params'), nnx.state(model, nnx.Param).to_pure_dict())
  if meta is not None:
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
      checkpointer.save(os.path.join(path, 'meta'), meta)


def test_a_checkpoint_is_restored_and_scored_on_three_domains(data_dir, tmp_path):
  config = make_config(data_dir, episodes=2, batch_size=2, max_steps=6, prompt_tokens=48)
  trained = from_config(config, nnx.Rngs(1))
  save_params(tmp_path, 5, trained, {'step': 5, 'config': config.to_dict()})
  models = evaluator.Models()
  result = evaluator.evaluate_checkpoint(config, str(tmp_path), 5, models)
  restored = jax.tree.leaves(nnx.state(models.model, nnx.Param))
  for a, b in zip(restored, jax.tree.leaves(nnx.state(trained, nnx.Param)), strict=True):
    np.testing.assert_array_equal(a, b)

  with open(tmp_path / 'eval' / '5.json') as f:
    written = json.load(f)
  assert written['step'] == 5 and set(written['tasks']) == set(TASKS)
  assert {r['domain'] for r in written['tasks'].values()} == {'classic', 'babyai', 'metaworld'}
  for task, r in written['tasks'].items():
    assert r['episodes'] == 2 and r['failed_episodes'] == 0 and len(r['returns']) == 2, task
    assert all(0 < s <= 6 for s in r['episode_steps'])
    assert np.isfinite(r['mean_return']) and np.isfinite(r['normalized_score'])
    assert r['mean_return'] == pytest.approx(np.mean(r['returns']))
  assert written['aggregate'] == result['aggregate']
  assert len(written['aggregate']['tasks_above']['all']) == len(scores.THRESHOLDS)
  assert written['aggregate']['tasks_above']['all'][0] >= 0
  assert (tmp_path / 'eval' / '5.png').stat().st_size > 1000
  assert os.listdir(tmp_path / 'tensorboard' / 'eval')


def test_a_checkpoint_is_scored_as_the_model_it_was_trained_as(data_dir, tmp_path, capsys):
  """A rope checkpoint scored with a config that says position_encoding='none' runs as rope.

  Its parameters load into either model, so only the recorded config tells them apart; a
  command-line flag that contradicts the checkpoint is refused, naming the key.
  """
  settings = dict(episodes=2, batch_size=2, max_steps=6, prompt_tokens=12, temperature=0.0)
  rope = make_config(data_dir, tasks=('cartpole',), **settings)
  assert rope.model.position_encoding == 'rope'
  trained = from_config(rope, nnx.Rngs(1))
  save_params(tmp_path, 3, trained, {'step': 3, 'config': rope.to_dict()})
  plain = make_config(data_dir, tasks=('cartpole',), **settings)
  plain.model.position_encoding = 'none'
  plain.model.remat = 'full'  # An execution key: --config's value stays.

  config = evaluator.run_config(plain, str(tmp_path), 3)
  assert config.model.position_encoding == 'rope' and config.model.remat == 'full'
  assert plain.model.position_encoding == 'none'  # --config itself is left alone.
  printed = capsys.readouterr().out
  assert "model.position_encoding: checkpoint 'rope', config 'none': using the checkpoint's" in (
    printed
  )
  assert 'remat' not in printed

  # The evaluator's model computes the trained model's logits, not those of --config's.
  model = evaluator.Models().restore(config, str(tmp_path), 3)
  batch = synthetic_batch(2, 24, tok.layout_from_config(rope).vocab_size)
  np.testing.assert_allclose(model(batch), trained(batch), rtol=1e-5, atol=1e-5)
  as_configured = from_config(plain, nnx.Rngs(0))
  nnx.update(as_configured, nnx.state(trained, nnx.Param))
  assert not np.allclose(as_configured(batch), trained(batch), atol=1e-3)

  scored = [evaluator.evaluate_checkpoint(c, str(tmp_path), 3)['tasks'] for c in (plain, rope)]
  for key in ('returns', 'episode_steps', 'seeds', 'normalized_score'):
    assert scored[0]['cartpole'][key] == scored[1]['cartpole'][key], key

  flag = "model.position_encoding: checkpoint 'rope', config 'none'"
  with pytest.raises(ValueError, match=f'another model than the command line.*{flag}'):
    evaluator.run_config(plain, str(tmp_path), 3, explicit=('model.position_encoding',))
  # A flag that agrees with the checkpoint is no conflict.
  assert evaluator.run_config(rope, str(tmp_path), 3, explicit=('model.position_encoding',)) is rope


def test_a_checkpoint_older_than_pixel_normalization_is_scored_with_paper_pixels(
    data_dir, tmp_path, capsys):
  """Its meta does not record the key; it was trained on [-1, 1] / 4 pixels, so it is run so."""
  config = make_config(data_dir, tasks=('cartpole',), episodes=1, batch_size=1, max_steps=2)
  assert config.model.pixel_normalization == 'unit'
  recorded = config.to_dict()
  del recorded['model']['pixel_normalization']
  save_params(tmp_path, 3, from_config(config, nnx.Rngs(1)), {'step': 3, 'config': recorded})
  scored = evaluator.run_config(config, str(tmp_path), 3)
  assert scored.model.pixel_normalization == 'paper'
  assert "model.pixel_normalization: checkpoint 'paper', config 'unit': using the checkpoint's" in (
    capsys.readouterr().out)


def test_the_command_line_refuses_a_model_flag_the_checkpoint_contradicts(tmp_path):
  """--config.model.position_encoding=none against a rope checkpoint: an error naming it."""
  config = tiny_train_config.get_config()
  save_params(
    tmp_path, 2, from_config(config, nnx.Rngs(0)), {'step': 2, 'config': config.to_dict()}
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  command = [
    sys.executable,
    '-m',
    'gato_jax.evaluator',
    '--config=tests/tiny_train_config.py',
    '--config.model.position_encoding=none',
    f'--workdir={tmp_path}',
    '--step=2',
  ]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': root}
  done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert "model.position_encoding: checkpoint 'rope', config 'none'" in done.stderr, done.stderr
  assert not (tmp_path / 'eval').exists()


def test_the_vocabulary_and_mixture_come_from_the_checkpoint_unless_allowed(tmp_path, capsys):
  """tokenizer.* and data.mixture follow model.*'s rule: the checkpoint's, printed; a
  command-line flag that contradicts them is refused; --allow_config_change keeps --config's."""
  trained = tiny_train_config.get_config()
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    checkpointer.save(os.path.join(checkpointing.step_dir(str(tmp_path), 2), 'meta'),
                      {'step': 2, 'config': trained.to_dict()})
  other = tiny_train_config.with_overrides(
    **{'tokenizer.text_vocab_size': 640, 'data.mixture': 'gato_text'})
  config = evaluator.run_config(other, str(tmp_path), 2)
  assert config.tokenizer.text_vocab_size == 512 and config.data.mixture == 'gato_demo'
  printed = capsys.readouterr().out
  assert "data.mixture: checkpoint 'gato_demo', config 'gato_text': using the checkpoint's" in (
    printed
  )
  assert 'tokenizer.text_vocab_size: checkpoint 512, config 640' in printed
  with pytest.raises(ValueError, match="command line asks for: data.mixture: checkpoint 'gato_d"):
    evaluator.run_config(other, str(tmp_path), 2, explicit=('data.mixture',))
  allowed = fingerprint.parse_allowed('data.mixture', other)
  config = evaluator.run_config(other, str(tmp_path), 2, ('data.mixture',), allowed)
  assert config.data.mixture == 'gato_text' and config.tokenizer.text_vocab_size == 512
  assert "using the config's (--allow_config_change)" in capsys.readouterr().out


def test_missing_params_fail_clearly_and_the_watcher_moves_on(data_dir, tmp_path):
  config = make_config(
    data_dir, tasks=('cartpole',), episodes=1, batch_size=1, max_steps=2, prompt_tokens=12
  )
  os.makedirs(checkpointing.step_dir(str(tmp_path), 7) + '/meta')  # A step without params.
  with pytest.raises(FileNotFoundError, match="no 'params' item"):
    evaluator.evaluate_checkpoint(config, str(tmp_path), 7)
  save_params(tmp_path, 9, evaluator.make_model(config))
  assert evaluator.watch(config, str(tmp_path), last_step=9) == [7, 9]
  with open(tmp_path / 'eval' / '7.json') as f:
    assert "no 'params' item" in json.load(f)['error']
  assert (tmp_path / 'eval' / '9.json').exists()
  assert evaluator.pending_steps(str(tmp_path)) == []  # A restarted watcher skips both.


def test_a_checkpoint_being_written_is_waited_for(tmp_path):
  checkpoints = checkpointing.checkpoint_dir(str(tmp_path))
  writing = os.path.join(checkpoints, '4.orbax-checkpoint-tmp-1234')
  os.makedirs(os.path.join(writing, 'params'))

  def finish():
    time.sleep(1.0)
    os.rename(writing, os.path.join(checkpoints, '4'))

  thread = threading.Thread(target=finish)
  start = time.monotonic()
  thread.start()
  evaluator.wait_for_step(str(tmp_path), 4, timeout=30.0, poll=0.1)
  thread.join()
  assert time.monotonic() - start >= 1.0
  with pytest.raises(FileNotFoundError, match=r'complete steps: \[4\]'):
    evaluator.wait_for_step(str(tmp_path), 8, timeout=30.0, poll=0.1)
  os.makedirs(os.path.join(checkpoints, '6.orbax-checkpoint-tmp-99'))
  with pytest.raises(TimeoutError, match='still being written'):
    evaluator.wait_for_step(str(tmp_path), 6, timeout=0.2, poll=0.1)


def test_a_dead_writers_leftover_is_named_not_waited_for(tmp_path):
  """--step=6 where a killed trainer left 6.orbax-checkpoint-tmp: an error at once, naming it."""
  leftover = os.path.join(checkpointing.checkpoint_dir(str(tmp_path)), '6.orbax-checkpoint-tmp')
  os.makedirs(os.path.join(leftover, 'params'))
  old = time.time() - 120
  for path in (leftover, os.path.join(leftover, 'params')):
    os.utime(path, (old, old))
  start = time.monotonic()
  with pytest.raises(FileNotFoundError, match=f'nothing has written to its leftover {leftover}'):
    evaluator.wait_for_step(str(tmp_path), 6, timeout=3600.0, poll=0.1, alive=60.0)
  assert time.monotonic() - start < 10.0
  assert evaluator.dead_leftovers(str(tmp_path), alive=60.0) == {leftover}
  # A write inside it (a live writer) makes it worth waiting for again.
  with open(os.path.join(leftover, 'params', 'chunk'), 'w') as f:
    f.write('x')
  assert evaluator.dead_leftovers(str(tmp_path), alive=60.0) == set()
  with pytest.raises(TimeoutError, match='still being written'):
    evaluator.wait_for_step(str(tmp_path), 6, timeout=0.2, poll=0.1, alive=60.0)


def test_damaged_and_unreadable_checkpoints_are_recorded_and_the_watcher_moves_on(
  data_dir, tmp_path
):
  """Step 5's params have 64 flipped bytes (checksums name the file); step 7, saved without
  checksums, has a truncated file (TensorStore's own error). Both land in their JSON as
  `error`; step 3 is scored, and --step=-1 picks it as the newest step that verifies."""
  config = make_config(
    data_dir, tasks=('cartpole',), episodes=1, batch_size=1, max_steps=2, prompt_tokens=12
  )
  model, workdir = evaluator.make_model(config), str(tmp_path)
  meta = {'config': config.to_dict()}
  for step in (3, 5, 7):
    save_params(tmp_path, step, model, {'step': step, **meta})
  for step in (3, 5):
    checkpointing.write_checksums(checkpointing.step_dir(workdir, step))

  def params_file(step):
    root = os.path.join(checkpointing.step_dir(workdir, step), 'params')
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    return max(files, key=os.path.getsize)

  flipped = params_file(5)
  with open(flipped, 'r+b') as f:
    f.seek(os.path.getsize(flipped) // 2)
    chunk = f.read(64)
    f.seek(-len(chunk), os.SEEK_CUR)
    f.write(bytes(b ^ 0xFF for b in chunk))
  os.truncate(params_file(7), os.path.getsize(params_file(7)) // 2)

  assert evaluator.newest_good_step(workdir) == 7  # Unverified, so not known to be bad.
  assert evaluator.watch(config, workdir, last_step=7) == [3, 5, 7]
  results = {}
  for step in (3, 5, 7):
    with open(tmp_path / 'eval' / f'{step}.json') as f:
      results[step] = json.load(f)
  assert 'tasks' in results[3] and 'error' not in results[3]
  assert results[5]['error'].startswith('DamagedCheckpoint: checkpoint 5 is damaged: ')
  assert flipped in results[5]['error']
  assert results[7]['error'] and results[7]['step'] == 7
  shutil.rmtree(checkpointing.step_dir(workdir, 7))
  assert evaluator.newest_good_step(workdir) == 3
  assert evaluator.pending_steps(workdir) == []  # A restarted watcher skips them all...
  # ...but a step the trainer set aside and saved afresh is scored again.
  shutil.rmtree(checkpointing.step_dir(workdir, 5))
  save_params(tmp_path, 5, model, {'step': 5, **meta})
  later = os.stat(tmp_path / 'eval' / '5.json').st_mtime + 5
  os.utime(checkpointing.step_dir(workdir, 5), (later, later))
  assert evaluator.pending_steps(workdir) == [5]


def test_an_unwritable_eval_dir_or_a_missing_workdir_fails_before_any_episode(tmp_path):
  missing = str(tmp_path / 'no_such_run')
  with pytest.raises(FileNotFoundError, match=f'--workdir {missing} does not exist'):
    evaluator.check_workdir(missing)
  (tmp_path / 'eval').write_text('')  # Not a directory: nothing can be written under it.
  unwritable = f'cannot write the evaluation results to {tmp_path}/eval'
  with pytest.raises(PermissionError, match=unwritable):
    evaluator.check_workdir(str(tmp_path))

  # The watcher's command line: an error naming the directory, not an endless wait.
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  command = [sys.executable, '-m', 'gato_jax.evaluator', '--config=tests/tiny_train_config.py',
             f'--workdir={missing}']
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': root}
  done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert f'--workdir {missing} does not exist' in done.stderr, done.stderr
