"""Episode datasets: RLDS layout, recorded returns, determinism, and bad data never written."""

import gymnasium as gym
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import rollouts
from gato_jax import envs, specs
from gato_jax import tokenizer as tok
from gato_jax.data import episodes


@pytest.fixture(scope='module')
def cartpole_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('data'))
  rollouts.generate('cartpole', data_dir, episodes=3, random_episodes=3, max_steps=100)
  return data_dir


def test_rlds_layout_and_recorded_returns(cartpole_dir):
  builder = episodes.load('cartpole', cartpole_dir)
  assert builder.info.splits['train'].num_examples == 3
  example = next(iter(tfds.as_numpy(builder.as_dataset(split='train').take(1))))
  steps = list(example['steps'])
  assert len(steps) == 101  # 100 actions, then the final observation.
  assert [s['is_first'] for s in steps] == [True] + [False] * 100
  assert [s['is_last'] for s in steps] == [False] * 100 + [True]
  assert not steps[-1]['is_terminal']  # Capped at 100 steps: truncated, not terminated.
  assert steps[0]['observation']['state'].shape == (4,)
  assert steps[-1]['reward'] == 0.0 and steps[-1]['action'] == 0  # RLDS padding.
  meta = example['episode_metadata']
  assert meta['env'] == b'CartPole-v1' and meta['policy'] == b'expert'
  assert meta['episode_return'] == 100.0

  recorded = builder.info.metadata
  assert recorded['episode_returns'] == [100.0, 100.0, 100.0]
  assert recorded['expert_return'] == 100.0
  assert len(recorded['random_returns']) == 3
  # A random CartPole policy lasts about 20 steps; the expert holds the pole to the cap.
  assert recorded['random_return'] < 50.0


def test_read_episodes_round_trip(cartpole_dir):
  read = list(episodes.read_episodes('cartpole', cartpole_dir))
  assert [e.seed for e in read] == [0, 1, 2] or sorted(e.seed for e in read) == [0, 1, 2]
  fresh = rollouts.rollout('cartpole', 'expert', seed=read[0].seed, max_steps=100)
  np.testing.assert_array_equal(read[0].actions, fresh.actions)
  np.testing.assert_allclose(read[0].observations['state'], fresh.observations['state'])


def test_rollouts_are_deterministic_for_a_seed():
  a = rollouts.rollout('babyai_gotolocal', 'expert', seed=7)
  b = rollouts.rollout('babyai_gotolocal', 'expert', seed=7)
  np.testing.assert_array_equal(a.actions, b.actions)
  np.testing.assert_array_equal(a.observations['image'], b.observations['image'])
  assert a.observations['mission'][0] == b.observations['mission'][0]
  c = rollouts.rollout('babyai_gotolocal', 'expert', seed=8)
  assert c.observations['mission'][0] != a.observations['mission'][0] or not np.array_equal(
    c.observations['image'][0], a.observations['image'][0]
  )


class _Corrupt(gym.ObservationWrapper):
  """Breaks the observation from step `at` on: NaN in the state, or a field dropped."""

  def __init__(self, env, at, how):
    super().__init__(env)
    self.at, self.how, self.t = at, how, 0

  def reset(self, **kwargs):
    self.t = 0
    return super().reset(**kwargs)

  def step(self, action):
    self.t += 1
    return super().step(action)

  def observation(self, observation):
    if self.t < self.at:
      return observation
    if self.how == 'nan':
      return {'state': np.array([0.0, np.nan, 0.0, 0.0], np.float32)}
    if self.how == 'shape':
      return {'state': np.zeros(5, np.float32)}
    return {}


@pytest.mark.parametrize(
  'how, message',
  [
    ('nan', r'non-finite value nan at step 3, index \(1,\)'),
    ('shape', r'expected shape \(4,\) per step'),
    ('missing', "field 'state': missing"),
  ],
)
def test_bad_data_fails_generation_naming_env_seed_and_step(monkeypatch, tmp_path, how, message):
  make_env = envs.make_env
  monkeypatch.setattr(
    envs, 'make_env', lambda task, seed=None: _Corrupt(make_env(task, seed), 3, how)
  )
  with pytest.raises(ValueError, match=f'env CartPole-v1.*, seed 4.*: .*{message}'):
    rollouts.generate('cartpole', str(tmp_path), episodes=2, seed=4, random_episodes=0)
  # TFDS wrote into a temporary directory: no dataset looks finished.
  with pytest.raises(FileNotFoundError, match='generate it with'):
    episodes.load('cartpole', str(tmp_path))


def test_an_episode_without_steps_is_refused():
  with pytest.raises(ValueError, match=r"env CartPole-v1 \(task 'cartpole'\), seed 0: .*no steps"):
    rollouts.rollout('cartpole', 'expert', seed=0, max_steps=0)


def test_reading_reports_bad_data_the_same_way(monkeypatch, cartpole_dir):
  # A spec whose state bounds the stored data breaks: reading names dataset, env and seed.
  narrow = specs.TaskSpec(
    'cartpole',
    observation=(tok.ContinuousField('state', (4,), mu_law=False, low=-0.001, high=0.001),),
    action=tok.DiscreteField('action', (), num_values=2),
  )
  monkeypatch.setitem(specs.TASK_SPECS, 'cartpole', narrow)
  with pytest.raises(
    ValueError, match=r"dataset gato_episodes/cartpole, env CartPole-v1, seed \d: .*field 'state'"
  ):
    list(episodes.read_episodes('cartpole', cartpole_dir))
