"""Expert and random reference returns, and the expert-normalized score built on them.

Gato normalizes every task so that 0 is a uniformly random policy and 100 the expert that
produced the data. The expert return is measured on the data itself (paper §4): the best
windowed average of episode returns, which ignores a few lucky episodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def expert_return(returns: Sequence[float]) -> float:
  """Max over windows of W = min(1000, 0.1·N) consecutive episodes of their mean return.

  W is at least 1, so a handful of demo episodes still gives a value (their best one).
  """
  values = np.asarray(returns, dtype=np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f'expert_return needs a non-empty list of episode returns, got {returns!r}')
  if not np.isfinite(values).all():
    raise ValueError(f'expert_return: non-finite episode return in {values.tolist()}')
  window = max(1, min(1000, int(0.1 * values.size)))
  means = np.convolve(values, np.ones(window) / window, mode='valid')
  return float(means.max())


def normalized_score(mean_return: float, expert: float, random: float) -> float:
  """Percent of expert: 0 = random policy, 100 = expert."""
  if not expert > random:
    raise ValueError(
      f'normalized_score needs expert return > random return, got expert={expert}, random={random}'
    )
  return 100.0 * (mean_return - random) / (expert - random)
