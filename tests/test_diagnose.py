"""gato_jax.diagnose's per-action table: the figure that showed Breakout never serves."""

import numpy as np
import pytest
from flax import nnx

from configs import demo
from gato_jax import action_metrics, diagnose, specs
from gato_jax import tokenizer as tok
from gato_jax.model import from_config


def test_a_rare_action_never_predicted_shows_recall_zero():
  # Six steps: the expert fires (token 11) once; the model predicts 10 or 12 throughout.
  targets = np.array([[10], [10], [11], [12], [12], [10]])
  predicted = np.array([[10], [12], [10], [12], [12], [10]])
  p_target = np.array([0.9, 0.4, 0.05, 0.8, 0.7, 0.6])
  rows = diagnose.per_action(predicted, targets, -np.log(p_target)[:, None],
                             np.array([0, 0, 1, 2, 2, 0]))
  by_action = {r['action']: r for r in rows}
  assert sorted(by_action) == [0, 1, 2]
  assert by_action[1]['expert_share'] == pytest.approx(1 / 6)
  assert by_action[1]['recall'] == 0.0
  assert by_action[1]['predicted_share'] == 0.0
  assert by_action[1]['p_expert_action'] == pytest.approx(0.05)
  assert by_action[0]['recall'] == pytest.approx(2 / 3)
  assert by_action[0]['p_expert_action'] == pytest.approx((0.9 + 0.4 + 0.6) / 3)
  assert by_action[2]['predicted_share'] == pytest.approx(3 / 6)
  text = diagnose.table({'atari_breakout': {'expert_mean_run': 1.0, 'rows': {},
                                            'per_action': rows}}, {})
  assert 'per action the expert took' in text and 'p_expert_action' in text


def test_per_action_refuses_multi_token_actions():
  tokens = np.zeros((3, 4), np.int32)
  with pytest.raises(ValueError, match='one action token per step'):
    diagnose.per_action(tokens, tokens, np.zeros((3, 4)), np.zeros((3, 4)))


def test_per_action_agrees_with_the_teacher_forced_accuracy():
  """On a real model's forward over expert CartPole steps: the per-action recalls, weighted
  by how often the expert takes each action, are the offline action accuracy."""
  config = demo.get_config()
  model = from_config(config, nnx.Rngs(0))
  task_tokenizer = specs.get_spec('cartpole').tokenizer(tok.layout_from_config(config), None)
  episodes = action_metrics.expert_episodes('cartpole', task_tokenizer, 2, 7_000_000, 40)
  rows = diagnose.per_action(
    *action_metrics.greedy_actions(model, task_tokenizer, episodes, model.max_length))
  teacher = action_metrics.evaluate_episodes(model, task_tokenizer, episodes, model.max_length)
  assert sum(r['expert_share'] for r in rows) == pytest.approx(1.0)
  assert sum(r['predicted_share'] for r in rows) <= 1.0 + 1e-9
  assert sum(r['expert_share'] * r['recall'] for r in rows) == pytest.approx(
    teacher['action_accuracy'])
  assert all(0.0 < r['p_expert_action'] < 1.0 for r in rows)
