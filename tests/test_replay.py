"""An expert episode through the training path and through the deployment loop, compared.

The regression test of issue 18's diagnosis: the teacher-forced greedy actions
(action_metrics, the training forward over a training window) and the actions the
evaluator's loop (policy.GatoPolicy: observation tokens appended live, KV cache, sampling
restricted to the action range) produces from the same observations, with the expert's
actions kept in its context, are the same tokens. A difference in tokenization,
de-tokenization, action order, frame handling or positions between the two paths breaks it.
"""

import numpy as np
import pytest
from flax import nnx

from configs import demo
from gato_jax import action_metrics, policy, replay, specs
from gato_jax import tokenizer as tok
from gato_jax.model import from_config

# A discrete state task, a continuous 4-token action and an image task; short enough that
# every episode fits in one window of the demo model's L = 256 (no slide in the loop).
TASKS = {'cartpole': 40, 'metaworld_reach': 5, 'atari_breakout': 7}


@pytest.fixture(scope='module')
def model():
  return from_config(demo.get_config(), nnx.Rngs(0))


def task_tokenizer(task):
  return specs.get_spec(task).tokenizer(tok.layout_from_config(demo.get_config()), None)


@pytest.mark.parametrize('task', list(TASKS))
def test_the_loop_acts_as_teacher_forcing_predicts(model, task):
  t = task_tokenizer(task)
  episodes = action_metrics.expert_episodes(task, t, 2, 7_000_000, TASKS[task])
  assert [len(a) for _, a in episodes] == [TASKS[task]] * 2
  assert TASKS[task] * t.spec.tokens_per_timestep <= model.max_length
  forced, logged, _, _ = action_metrics.greedy_actions(model, t, episodes, model.max_length)
  options = policy.SamplingOptions(temperature=0.0, prompt_mode='none')
  loop = policy.GatoPolicy(model, t, [], options, seed=0)
  acted = replay.replay_actions(loop, episodes, seeds=[0, 1], forced=True)
  np.testing.assert_array_equal(np.concatenate(acted), forced)
  # A random model disagrees with the expert somewhere, so the equality above is not that
  # of two copies of the logged tokens.
  assert not np.array_equal(forced, logged)
  figures = replay.replay(
    policy.GatoPolicy(model, t, [], options, seed=0), episodes, [0, 1], forced=True
  )
  teacher = action_metrics.evaluate_episodes(model, t, episodes, model.max_length)
  for key in ('action_token_accuracy', 'action_error', 'action_accuracy', 'steps'):
    assert figures[key] == teacher[key], key


def test_mean_run_counts_repeated_actions():
  tokens = np.array([[1], [2], [3], [3], [3], [4]])
  assert replay.mean_run([tokens]) == 1.5  # Runs: 1, 2, 333, 4.
  assert replay.mean_run([np.array([[5, 6]] * 4), np.array([[1, 0], [0, 1]])]) == 2.5
