"""Every domain's env speaks the TaskSpec's language, and its expert clearly beats random.

Thresholds are set below the returns measured with these seeds and step caps (recorded in
docs/environments.md), so a broken wrapper or controller fails them by a wide margin.
"""

import numpy as np
import pytest

from data_pipelines import inspect_tokens
from gato_jax import envs, specs
from gato_jax import tokenizer as tok

# task: (episodes, step cap, expert mean must exceed, random mean must stay below)
MARGINS = {
  'cartpole': (2, None, 499.0, 40.0),  # Measured 500 vs 23.5.
  'acrobot': (2, None, -130.0, -450.0),  # -92.5 vs -500.
  'mountaincar': (2, None, -150.0, -190.0),  # -123 vs -200.
  'pendulum': (2, None, -200.0, -700.0),  # -62 vs -974.
  'babyai_gotolocal': (3, None, 0.8, 0.3),  # 0.95 vs 0.15.
  'metaworld_reach': (1, 150, 800.0, 500.0),  # 1336 vs 219.
  'dmc_point_mass_easy': (1, 300, 60.0, 10.0),  # 124 vs 0.
  'dmc_reacher_easy': (1, 300, 100.0, 10.0),  # 263 vs 0.
  'atari_pong': (1, 1000, -8.0, -12.0),  # +1 vs -20 (points).
  'atari_breakout': (1, 600, 12.0, 6.0),  # 20 vs 3.
}


def _mean_return(task: str, kind: str, episodes: int, max_steps: int | None) -> float:
  return float(
    np.mean([inspect_tokens.rollout(task, seed, kind, max_steps)[2] for seed in range(episodes)])
  )


@pytest.mark.parametrize('task', sorted(MARGINS))
def test_expert_beats_random(task):
  episodes, max_steps, expert_floor, random_ceiling = MARGINS[task]
  assert _mean_return(task, 'expert', episodes, max_steps) > expert_floor
  assert _mean_return(task, 'random', episodes, max_steps) < random_ceiling


# One task per domain (two for DM Control: states and pixels) for the interface checks.
ONE_PER_DOMAIN = [
  'pendulum',
  'acrobot',
  'babyai_bosslevel',
  'metaworld_pick_place',
  'dmc_reacher_easy',
  'dmc_cartpole_balance_pixels',
  'atari_pong',
]


@pytest.mark.parametrize('task', ONE_PER_DOMAIN)
def test_observations_tokenize_and_detokenized_actions_step_the_env(task, byte_vocabulary):
  spec = specs.get_spec(task)
  task_tokenizer = spec.tokenizer(tok.TokenLayout(512), byte_vocabulary)
  env = envs.make_env(task, seed=1)
  try:
    observation, _ = env.reset(seed=1)
    policy = envs.make_policy(task, env, 'expert', seed=1)
    for _ in range(3):
      action = policy(observation)
      steps = task_tokenizer.tokenize_timestep(observation, action)
      assert steps.tokens.shape == (1, spec.tokens_per_timestep)
      assert steps.patches.shape[1] == spec.image_patches_per_timestep
      decoded = task_tokenizer.detokenize_action(steps.tokens[0, spec.observation_tokens + 1 :])
      if isinstance(spec.action, tok.DiscreteField):
        assert decoded == action and np.issubdtype(decoded.dtype, np.integer)
      else:  # Within half a bin of the expert's action.
        half_bin = (spec.action.high - spec.action.low) / 2 / tok.NUM_BINS
        np.testing.assert_allclose(decoded, action, atol=half_bin + 1e-6)
        assert decoded.dtype == np.float32
      observation, *_ = env.step(decoded)
      assert set(observation) == {f.name for f in spec.observation}
  finally:
    env.close()


@pytest.mark.parametrize(
  'task', ['mountaincar', 'babyai_pickuploc', 'metaworld_push', 'dmc_point_mass_easy', 'atari_pong']
)
def test_the_same_seed_gives_the_same_episode(task):
  first_obs, first_actions, first_return = inspect_tokens.rollout(task, 5, 'random', 20)
  again_obs, again_actions, again_return = inspect_tokens.rollout(task, 5, 'random', 20)
  other_obs, _, _ = inspect_tokens.rollout(task, 6, 'random', 20)
  np.testing.assert_array_equal(first_actions, again_actions)
  assert first_return == again_return
  for name, value in first_obs.items():
    np.testing.assert_array_equal(value, again_obs[name])
  assert any(not np.array_equal(v, other_obs[k]) for k, v in first_obs.items())


def test_make_env_seed_fixes_the_first_reset():
  env = envs.make_env('babyai_gotolocal', seed=4)
  unseeded, _ = env.reset()
  seeded, _ = envs.make_env('babyai_gotolocal').reset(seed=4)
  assert unseeded['mission'] == seeded['mission']
  np.testing.assert_array_equal(unseeded['image'], seeded['image'])


def test_every_task_has_a_domain_and_a_spec():
  names = envs.task_names()
  assert names == sorted(specs.TASK_SPECS) and len(names) == 20
  domains = {envs.task_domain(t) for t in names}
  assert domains == {'classic', 'babyai', 'metaworld', 'dmc', 'atari'}
  assert envs.task_domain('dmc_cartpole_balance_pixels') == 'dmc'
  assert envs.task_domain('pendulum') == 'classic'


def test_unknown_task_and_policy_kind_raise_with_the_choices():
  with pytest.raises(ValueError, match=r"unknown task 'pong'; known tasks: \[.*'atari_pong'"):
    envs.make_env('pong')
  env = envs.make_env('cartpole')
  with pytest.raises(ValueError, match=r"one of \('expert', 'random'\), got 'greedy'"):
    envs.make_policy('cartpole', env, 'greedy', seed=0)


def test_random_policy_is_seeded_and_leaves_the_env_space_alone():
  env = envs.make_env('pendulum', seed=0)
  env.action_space.seed(0)
  expected = env.action_space.sample()
  env.action_space.seed(0)
  first = envs.make_policy('pendulum', env, 'random', seed=3)
  again = envs.make_policy('pendulum', env, 'random', seed=3)
  actions = [first({}) for _ in range(3)]
  np.testing.assert_array_equal(actions, [again({}) for _ in range(3)])
  assert all(env.action_space.contains(a) for a in actions)
  assert len({float(a[0]) for a in actions}) == 3
  np.testing.assert_array_equal(env.action_space.sample(), expected)
