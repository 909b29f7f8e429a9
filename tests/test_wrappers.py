"""Live environments through TokenizedEnv give the token stream the datasets give."""

import numpy as np
import pytest

from data_pipelines import rollouts
from gato_jax import envs, specs
from gato_jax import tokenizer as tok
from gato_jax.data import episodes
from gato_jax.envs.wrappers import TokenizedEnv, action_inputs, model_inputs, sampling_range

LAYOUT = tok.TokenLayout(text_vocab_size=512)
# Discrete actions, deterministic under a seeded reset: a replay retraces the recording.
REPLAYED = {'cartpole': 40, 'babyai_gotoredball': 40}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('episodes'))
  for task, steps in REPLAYED.items():
    rollouts.generate(task, directory, episodes=2, max_steps=steps, random_episodes=1)
  return directory


@pytest.mark.parametrize('task', sorted(REPLAYED))
def test_a_replayed_episode_gives_the_dataset_token_stream(task, data_dir, byte_vocabulary):
  task_tokenizer = specs.get_spec(task).tokenizer(LAYOUT, byte_vocabulary)
  recorded = list(episodes.read_episodes(task, data_dir))
  assert len(recorded) == 2
  for episode in recorded:
    # What the training pipeline tokenizes: the T acted steps, RLDS's final step dropped.
    observations, actions = episode.acted_steps()
    dataset = model_inputs(task_tokenizer.tokenize_steps(observations, actions))

    env = TokenizedEnv(envs.make_env(task, episode.seed), task_tokenizer)
    observation, _ = env.reset(seed=episode.seed)
    live = []
    for action in actions:
      tokens = env.encode_action(observation.raw, action)
      live += [observation.inputs, action_inputs(task_tokenizer, tokens)]
      observation, *_ = env.step(tokens)
    env.close()
    assert len(live) == 2 * (len(episode.actions) - 1) > 2
    for key, value in dataset.items():
      np.testing.assert_array_equal(np.concatenate([x[key] for x in live]), value, err_msg=key)


def test_continuous_actions_reach_the_env_as_bin_centres():
  task_tokenizer = specs.get_spec('pendulum').tokenizer(LAYOUT)
  env = TokenizedEnv(envs.make_env('pendulum', 0), task_tokenizer)
  observation, _ = env.reset(seed=0)
  torque = np.asarray([1.234], np.float32)
  tokens = env.encode_action(observation.raw, torque)
  start, stop = LAYOUT.action_token_range('continuous')
  assert tokens.shape == (1,) and start <= tokens[0] < stop
  decoded = task_tokenizer.detokenize_action(tokens)
  assert abs(float(decoded[0]) - 1.234) <= 4.0 / 1024 / 2 + 1e-6  # Half a bin of [-2, 2].
  # The observation half of a timestep: 3 continuous values, then the separator.
  kinds = observation.inputs['kinds']
  assert kinds.tolist() == [tok.TokenKind.OBSERVATION_CONTINUOUS] * 3 + [tok.TokenKind.SEPARATOR]
  assert observation.inputs['tokens'][-1] == LAYOUT.separator
  env.close()


def test_discrete_sampling_range_is_narrowed_to_the_action_values():
  start, stop = sampling_range(specs.get_spec('cartpole').tokenizer(LAYOUT))
  assert (start, stop) == (LAYOUT.discrete_offset, LAYOUT.discrete_offset + 2)
  pendulum = sampling_range(specs.get_spec('pendulum').tokenizer(LAYOUT))
  assert pendulum == LAYOUT.action_token_range('continuous')


def test_model_inputs_put_pixels_at_image_positions():
  spec = specs.TaskSpec(
    'mixed',
    observation=(tok.ImageField('camera', 16, 32), tok.ContinuousField('joint', (1,))),
    action=tok.DiscreteField('button', (), num_values=3),
  )
  image = np.arange(16 * 32 * 3, dtype=np.int64).reshape(16, 32, 3).astype(np.uint8)
  steps = spec.tokenizer(LAYOUT).tokenize_steps(
    {'camera': np.stack([image, 255 - image]), 'joint': np.zeros((2, 1), np.float32)}, [1, 2]
  )
  inputs = model_inputs(steps)
  assert inputs['tokens'].shape == (2 * spec.tokens_per_timestep,)  # 2 patches + 1 + '|' + 1.
  image_at = np.flatnonzero(inputs['kinds'] == tok.TokenKind.IMAGE)
  assert image_at.tolist() == [0, 1, 5, 6]
  np.testing.assert_array_equal(inputs['patches'][1], image[:, 16:])
  np.testing.assert_array_equal(inputs['patches'][5], (255 - image)[:, :16])
  assert not inputs['patches'][[2, 3, 4, 7, 8, 9]].any()
  np.testing.assert_array_equal(inputs['patch_positions'][6], [0, 128, 64, 128])
