"""Expert and random reference returns, and the expert-normalized score built on them.

Gato normalizes every task so that 0 is a uniformly random policy and 100 the expert that
produced the data. The expert return is measured on the data itself (paper §4): the best
windowed average of episode returns, which ignores a few lucky episodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def mean_ci95(returns: Sequence[float]) -> tuple[float, float | None]:
  """Mean and the half-width of its 95% Student-t interval (None for a single episode).

  Student-t rather than 1.96: evaluations of a few episodes are common while iterating, and
  the normal quantile would make their intervals look tighter than they are.
  """
  values = np.asarray(returns, dtype=np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f'mean_ci95 needs a non-empty list of episode returns, got {returns!r}')
  mean = float(values.mean())
  if values.size == 1:
    return mean, None
  from scipy import stats  # A dependency of jax; imported here to keep this module light.

  sem = values.std(ddof=1) / np.sqrt(values.size)
  return mean, float(stats.t.ppf(0.975, values.size - 1) * sem)


# Percent-of-expert thresholds of Gato's figure 5 (the x axis of its per-domain curves).
THRESHOLDS = tuple(range(0, 101, 5))


def tasks_above(
  scores: Mapping[str, float], domains: Mapping[str, str], thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, list[int]]:
  """Per domain (and 'all'), how many tasks score at least each threshold (percent of expert).

  The aggregate of Gato's figure 5: one curve per domain, falling from the number of tasks
  at 0% to those at or above expert level at 100%.
  """
  missing = sorted(set(scores) - set(domains))
  if missing:
    raise ValueError(f'tasks_above: no domain given for tasks {missing}')
  groups: dict[str, list[float]] = {'all': list(scores.values())}
  for task, score in scores.items():
    groups.setdefault(domains[task], []).append(score)
  return {
    domain: [int(sum(s >= t for s in values)) for t in thresholds]
    for domain, values in sorted(groups.items())
  }
