"""The registered TaskSpecs tokenize real environment rollouts, and the inspector runs."""

import numpy as np
import pytest

from configs import demo
from data_pipelines import inspect_tokens
from gato_jax import specs
from gato_jax import tokenizer as tok


@pytest.fixture(scope='module')
def layout():
  return tok.TokenLayout(512)


@pytest.mark.parametrize('task', ['cartpole', 'pendulum', 'acrobot', 'babyai_gotolocal'])
def test_real_rollouts_tokenize_and_actions_round_trip(task, layout, byte_vocabulary):
  observations, actions, _ = inspect_tokens.rollout(task, seed=3)
  spec = specs.get_spec(task)
  steps = spec.tokenizer(layout, byte_vocabulary).tokenize_steps(observations, actions)
  assert steps.tokens.shape == (len(actions), spec.tokens_per_timestep)
  assert steps.tokens.min() >= 0 and steps.tokens.max() < layout.vocab_size
  task_tokenizer = spec.tokenizer(layout, byte_vocabulary)
  decoded = np.stack(
    [task_tokenizer.detokenize_action(a) for a in steps.tokens[:, spec.observation_tokens + 1 :]]
  )
  action = spec.action
  if isinstance(action, tok.DiscreteField):
    np.testing.assert_array_equal(decoded, actions)
  else:  # Half a bin, scaled from [-1, 1] to [low, high].
    half_bin = (action.high - action.low) / 2 / tok.NUM_BINS
    assert np.max(np.abs(decoded - actions.reshape(decoded.shape))) <= half_bin + 1e-6


def test_experts_reach_their_goal():
  # CartPole's linear controller holds the pole for the full 500 steps; BabyAI's bot
  # reaches the goal, so the episode ends early with a positive reward.
  _, actions, cartpole_return = inspect_tokens.rollout('cartpole', seed=0)
  assert cartpole_return == 500.0 and len(actions) == 500
  _, actions, babyai_return = inspect_tokens.rollout('babyai_gotoredball', seed=0)
  assert babyai_return > 0.5 and len(actions) < 64


def test_unknown_task_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"unknown task 'pong'; known tasks: \[.*'cartpole'"):
    specs.get_spec('pong')


def test_config_errors_name_the_key():
  config = demo.get_config()
  config.tokenizer.text_vocab_size = 100
  with pytest.raises(ValueError, match=r'tokenizer.text_vocab_size=100 is smaller .*\(259 ids\)'):
    tok.vocabulary_from_config(config)
  config.tokenizer.text_vocab_size = -1
  with pytest.raises(ValueError, match='config key tokenizer.text_vocab_size'):
    tok.layout_from_config(config)
  config.tokenizer.vocabulary = ''
  with pytest.raises(ValueError, match='config key tokenizer.vocabulary'):
    tok.vocabulary_from_config(config)


def test_the_demo_command_prints_tokens_and_a_table(capsys):
  config = demo.get_config()
  config.episodes = 1
  inspect_tokens.run(config)
  out = capsys.readouterr().out
  assert 'separator 2560' in out
  assert 'mission      OBSERVATION_TEXT         x48' in out
  rows = [line.split() for line in out.splitlines() if ' expert ' in line]
  assert [r[0] for r in rows] == ['cartpole', 'babyai_gotoredball']
  assert all(float(r[6]) == 0.0 for r in rows)  # action_error: discrete actions are exact.


def test_looking_a_spec_up_loads_no_environment_or_tensorflow():
  import subprocess
  import sys

  code = (
    'import sys; from gato_jax import specs; specs.get_spec("atari_pong"); '
    'loaded = [m for m in ("gymnasium", "tensorflow", "gato_jax.envs") if m in sys.modules]; '
    'assert not loaded, loaded'
  )
  subprocess.run([sys.executable, '-c', code], check=True)


def test_register_adds_a_dataset_only_spec_once(monkeypatch):
  monkeypatch.setattr(specs, 'DATASET_SPECS', dict(specs.DATASET_SPECS))
  state, action = tok.ContinuousField('state', (3,)), tok.DiscreteField('action')
  spec = specs.TaskSpec('t_register_robot', [state], action)
  assert specs.register(spec) is spec and specs.get_spec('t_register_robot') is spec
  with pytest.raises(ValueError, match="'t_register_robot' already has a spec"):
    specs.register(spec)
  with pytest.raises(ValueError, match="'cartpole' already has a spec"):
    specs.register(specs.TaskSpec('cartpole', [], tok.DiscreteField('action')))


def test_action_token_kind_follows_the_action_field():
  assert specs.get_spec('cartpole').action_token_kind == tok.TokenKind.ACTION_DISCRETE
  assert specs.get_spec('pendulum').action_token_kind == tok.TokenKind.ACTION_CONTINUOUS
  assert specs.get_spec('atari_pong').image_patches_per_timestep == 30


def test_every_spec_round_trips_through_its_config_form():
  """data.specs and `describe` write specs as dicts: the form must hold every spec exactly."""
  from gato_jax.specs import config as spec_config

  for name in [*specs.TASK_SPECS, *specs.DATASET_SPECS]:
    spec = specs.get_spec(name)
    assert spec_config.from_dict(name, spec_config.to_dict(spec)) == spec, name


def test_a_spec_in_config_form_names_the_bad_key():
  from gato_jax.specs import config as spec_config

  good = {'type': 'continuous', 'name': 'action', 'shape': [2]}
  cases = [
    ({'observation': [], 'action': good, 'extra': 1}, r"spec s needs exactly the keys .*'extra'"),
    (
      {'observation': [{'type': 'image', 'name': 'x', 'height': 20, 'width': 16}], 'action': good},
      r'spec s.observation\[0\]: image field .x.: height and width must be positive multiples',
    ),
    (
      {'observation': [{'type': 'text', 'name': 'x', 'tokens': 4}], 'action': good},
      r"spec s.observation\[0\]: unknown key\(s\) \['tokens'\] for a text field",
    ),
    (
      {'observation': [], 'action': {'type': 'text', 'name': 'a', 'max_tokens': 2}},
      r'spec s.action must be a discrete or continuous field',
    ),
    (
      {'observation': [{'type': 'discrete', 'name': 'x'}], 'action': {'type': 'discrete'}},
      r'spec s.action: .*name',
    ),
  ]
  for entry, message in cases:
    with pytest.raises(ValueError, match=message):
      spec_config.from_dict('s', entry)
