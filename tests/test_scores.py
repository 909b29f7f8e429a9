"""Reference returns and normalized scores, as the evaluator and the data filter use them."""

import pytest

from gato_jax import scores


def test_expert_return_is_the_best_windowed_mean():
  returns = [0.0] * 10 + [10.0, 20.0] + [0.0] * 8  # N = 20, so windows of 2 episodes.
  assert scores.expert_return(returns) == 15.0
  assert scores.expert_return([3.0, 7.0]) == 7.0  # W = 1 for fewer than 20 episodes.
  # N = 31000: W caps at 1000, exactly the run of tens (uncapped, 3100 would dilute it).
  assert scores.expert_return([0.0] * 30000 + [10.0] * 1000) == pytest.approx(10.0)


def test_expert_return_rejects_bad_input():
  with pytest.raises(ValueError, match='non-empty'):
    scores.expert_return([])
  with pytest.raises(ValueError, match='non-finite'):
    scores.expert_return([1.0, float('nan')])


def test_normalized_score():
  assert scores.normalized_score(500.0, expert=500.0, random=20.0) == 100.0
  assert scores.normalized_score(20.0, expert=500.0, random=20.0) == 0.0
  assert scores.normalized_score(260.0, expert=500.0, random=20.0) == 50.0
  with pytest.raises(ValueError, match='expert return > random return'):
    scores.normalized_score(1.0, expert=1.0, random=1.0)
