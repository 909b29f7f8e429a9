"""Reference returns and normalized scores, as the evaluator and the data filter use them."""

import pytest

from gato_jax import scores


def test_expert_return_is_the_best_windowed_mean():
  # N = 3000: W = 300 (0.1 N), the paper's; the best window holds the 300 tens.
  returns = [0.0] * 1000 + [10.0] * 300 + [0.0] * 1700
  assert scores.expert_return(returns) == pytest.approx(10.0)
  # N = 31000: W caps at 1000, exactly the run of tens (uncapped, 3100 would dilute it).
  assert scores.expert_return([0.0] * 30000 + [10.0] * 1000) == pytest.approx(10.0)


def test_expert_return_of_few_episodes_is_their_mean():
  # 0.1 N would be a window of 2 at N = 20, and the best pair (15) overstates the expert,
  # as Breakout's 20 demo episodes did (11 against 7.4 evaluated): all 20 are averaged.
  returns = [0.0] * 10 + [10.0, 20.0] + [0.0] * 8
  assert scores.expert_return(returns) == pytest.approx(1.5)
  assert scores.expert_return([3.0, 7.0]) == 5.0
  # N = 500: windows of MIN_WINDOW = 100 (0.1 N = 50 would be noisier).
  returns = [1.0] * 400 + [2.0] * 100
  assert scores.expert_return(returns) == pytest.approx(2.0)
  assert scores.expert_return([1.0] * 401 + [2.0] * 99) == pytest.approx(1.99)


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
