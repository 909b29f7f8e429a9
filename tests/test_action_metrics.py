"""Teacher-forced action metrics: exact figures for predictors whose answers are known."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common, demo
from data_pipelines import rollouts
from gato_jax import action_metrics, evaluator, specs
from gato_jax import tokenizer as tok
from gato_jax.model import from_config

LENGTH = 64


class Shifted(nnx.Module):
  """Logits all on the true next token, moved `shift` bins towards the range's centre at
  the action kind's tokens: `shift=0` is a perfect predictor, `uniform` knows nothing."""

  def __init__(self, vocab_size: int, action_kind: int, shift: int = 0, uniform: bool = False):
    self.vocab_size, self.action_kind, self.shift = vocab_size, action_kind, shift
    self.uniform = uniform

  def __call__(self, batch):
    tokens, kinds = batch['tokens'], batch['kinds']
    if self.uniform:
      return jnp.zeros((*tokens.shape, self.vocab_size), jnp.float32)
    following = jnp.roll(tokens, -1, axis=1)
    is_action = jnp.roll(kinds, -1, axis=1) == self.action_kind
    bins = (following - tok.TokenLayout(512).continuous_offset) % tok.NUM_BINS
    step = jnp.where(bins < tok.NUM_BINS // 2, self.shift, -self.shift)
    following = jnp.where(is_action, following + step, following)
    return 50.0 * jax.nn.one_hot(following, self.vocab_size)


def task_tokenizer(task, vocabulary=None):
  return specs.get_spec(task).tokenizer(tok.TokenLayout(512), vocabulary)


@pytest.fixture(scope='module')
def episodes():
  """Three held-out expert episodes of a continuous and a discrete task, 30 steps each."""
  return {
    task: action_metrics.expert_episodes(task, task_tokenizer(task), 3, 5_000_000, 30)
    for task in ('pendulum', 'cartpole')
  }


def predictor(task, **kwargs):
  t = task_tokenizer(task)
  return Shifted(t.layout.vocab_size, int(t.spec.action_token_kind), **kwargs)


def test_a_perfect_predictor_scores_the_tokenizers_quantization_only(episodes):
  """Training tokenization and the de-tokenizer agree: only the bins' width is lost."""
  for task in ('pendulum', 'cartpole'):
    assert len(episodes[task]) == 3 and all(len(a) == 30 for _, a in episodes[task])
    result = action_metrics.evaluate_episodes(
      predictor(task), task_tokenizer(task), episodes[task], LENGTH
    )
    assert result['episodes'] == 3 and result['steps'] == 90 and result['action_tokens'] == 90
    assert result['action_token_accuracy'] == 1.0, task
    assert result['action_token_loss'] < 1e-6, task
  pendulum = action_metrics.evaluate_episodes(
    predictor('pendulum'), task_tokenizer('pendulum'), episodes['pendulum'], LENGTH
  )
  width = 4.0 / tok.NUM_BINS  # Pendulum's [-2, 2] torque in 1024 bins.
  assert 0 < pendulum['action_error'] <= width / 2 and pendulum['action_accuracy'] is None
  cartpole = action_metrics.evaluate_episodes(
    predictor('cartpole'), task_tokenizer('cartpole'), episodes['cartpole'], LENGTH
  )
  assert cartpole['action_accuracy'] == 1.0 and cartpole['action_error'] is None


def test_a_uniform_predictor_has_the_loss_of_a_guess_over_the_vocabulary(episodes):
  t = task_tokenizer('cartpole')
  result = action_metrics.evaluate_episodes(
    predictor('cartpole', uniform=True), t, episodes['cartpole'], LENGTH
  )
  assert result['action_token_loss'] == pytest.approx(np.log(t.layout.vocab_size), rel=1e-5)
  # Ties go to the range's first id: action 0, as often right as the expert pushes left.
  left = np.mean(np.concatenate([a for _, a in episodes['cartpole']]) == 0)
  assert 0 < left < 1
  assert result['action_token_accuracy'] == pytest.approx(left)
  assert result['action_accuracy'] == pytest.approx(left)


def test_the_continuous_error_is_in_environment_units(episodes):
  """Ten bins off on [-2, 2] is 10 * 4 / 1024 newton-metres, give or take half a bin."""
  result = action_metrics.evaluate_episodes(
    predictor('pendulum', shift=10), task_tokenizer('pendulum'), episodes['pendulum'], LENGTH
  )
  width = 4.0 / tok.NUM_BINS
  assert abs(result['action_error'] - 10 * width) <= width / 2
  assert result['action_token_accuracy'] == 0.0
  assert result['action_token_loss'] == pytest.approx(50.0, rel=1e-3)


def test_windows_hold_whole_timesteps_and_every_step_once(episodes):
  t = task_tokenizer('cartpole')  # 6 tokens a timestep: 10 per 64-position window.
  batch, step_of, actions = action_metrics.windows(t, episodes['cartpole'], LENGTH)
  assert batch['tokens'].shape == (9, LENGTH)  # 30 steps: 3 windows per episode.
  assert sorted(step_of[step_of >= 0].tolist()) == list(range(90)) and len(actions) == 90
  assert (batch['kinds'][:, 60:] == tok.TokenKind.PAD).all()
  with pytest.raises(ValueError, match='more than the context'):
    action_metrics.windows(t, episodes['cartpole'], 5)


def test_a_dataset_only_task_is_scored_from_its_logged_steps():
  """Open X-Embodiment's fractal spec: instruction, 128x160 image, state, 7 saturating
  joint actions; a synthetic episode of its field shapes, actions partly past the range."""
  import seqio

  spec = specs.get_spec('oxe_fractal')
  t = spec.tokenizer(tok.TokenLayout(512), seqio.ByteVocabulary())
  rng = np.random.default_rng(0)
  steps = 5
  observations = {
    'instruction': np.asarray(['pick the can'] * steps, object),
    'image': rng.integers(0, 256, (steps, 128, 160, 3), np.uint8),
    'state': rng.normal(size=(steps, 8)).astype(np.float32),
  }
  actions = rng.uniform(-1.5, 1.5, (steps, 7)).astype(np.float32)
  result = action_metrics.evaluate_episodes(
    Shifted(t.layout.vocab_size, int(spec.action_token_kind)), t, [(observations, actions)], 400
  )
  assert result['action_token_accuracy'] == 1.0 and result['action_tokens'] == 35
  width = np.pi / tok.NUM_BINS
  assert 0 < result['action_error'] <= width / 2


def test_the_evaluator_reports_offline_metrics_per_task(tmp_path):
  data_dir = str(tmp_path / 'data')
  rollouts.generate('cartpole', data_dir, episodes=2, max_steps=20, random_episodes=2)
  config = demo.get_config()
  config.model.max_length = LENGTH
  config.data.data_dir = data_dir
  config.data.max_episode_steps = 20
  config.eval = common.eval_config(
    tasks='cartpole', episodes=1, batch_size=1, max_steps=5, offline_episodes=2
  )
  evaluator.validate(config)
  workdir = tmp_path / 'run'
  workdir.mkdir()
  model = from_config(config, nnx.Rngs(0))
  result = evaluator.evaluate(config, model)
  offline = result['tasks']['cartpole']['offline']
  assert offline['episodes'] == 2 and offline['steps'] == 10
  assert 0.0 <= offline['action_token_accuracy'] <= 1.0
  assert offline['action_token_loss'] > 0 and offline['action_error'] is None
  # The same model and episodes score the same without the evaluator around them.
  t = task_tokenizer('cartpole')
  held_out = action_metrics.expert_episodes('cartpole', t, 2, evaluator.offline_seed(config), 5)
  direct = action_metrics.evaluate_episodes(model, t, held_out, LENGTH)
  assert direct['action_token_loss'] == pytest.approx(offline['action_token_loss'], rel=1e-5)

  from gato_jax import reporting, scores

  reporting.report(str(workdir), 7, {'step': 7, 'policy': 'gato', **result})
  with open(workdir / 'eval' / '7.json') as f:
    assert json.load(f)['tasks']['cartpole']['offline'] == offline
  tags = scores.scalars(result)
  assert tags['offline/cartpole/action_token_loss'] == pytest.approx(offline['action_token_loss'])
  assert 'offline/cartpole/action_error' not in tags
  assert 'token acc' in reporting.table(result)

  expert = evaluator.evaluate(config, None, 'expert')
  assert expert['tasks']['cartpole']['offline'] is None


def test_a_dataset_only_source_is_scored_by_the_evaluator(tmp_path):
  """eval.offline_tasks: a mock Open X-Embodiment fractal dataset (its published features,
  synthetic values) read as training reads it, with no env task to play."""
  from benchmarks import pipeline
  from data_pipelines import mock_rlds
  from gato_jax import reporting, scores
  from gato_jax.data import public_catalog

  dataset, features = pipeline.mock_features('oxe_fractal')
  where = str(tmp_path / 'mock')
  mock_rlds.write(*dataset.split(':'), features, 2, where, steps=4)
  config = demo.get_config()
  config.model.max_length = 400  # Fractal's 176-token timesteps: two a window.
  config.data.mixture = 'gato_text_local'  # No environment task.
  config.data.public_sources = {
    'mock_fractal': {**public_catalog.SOURCES['oxe_fractal'], 'data_dir': where}
  }
  config.eval = common.eval_config(offline_tasks='mock_fractal', offline_episodes=2)
  evaluator.validate(config)
  result = evaluator.evaluate(config, from_config(config, nnx.Rngs(0)))
  assert result['tasks'] == {}
  offline = result['offline_only']['mock_fractal']
  assert offline['episodes'] == 2 and offline['steps'] == 6  # 4 steps, the last not acted.
  assert offline['action_tokens'] == 6 * 7 and offline['spec'] == 'oxe_fractal'
  assert np.isfinite(offline['action_error']) and offline['action_token_loss'] > 0
  assert 'offline/mock_fractal/action_error' in scores.scalars(result)
  assert 'mock_fractal' in reporting.table(result)
