"""Expert and random reference returns, the expert-normalized score, and evaluation statistics.

Gato normalizes every task so that 0 is a uniformly random policy and 100 the expert that
produced the data. The expert return is measured on the data itself (paper §4): the best
windowed average of episode returns, which ignores a few lucky episodes. The evaluator's
statistics build on them: a task's summary (`summarize`), the figure-5 aggregate over tasks
(`aggregate`) and the flat scalars TensorBoard shows (`scalars`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
  from gato_jax.envs.runner import EpisodeResult


MIN_WINDOW = 100  # Episodes in the shortest window expert_return averages.


def expert_return(returns: Sequence[float]) -> float:
  """Max over windows of W consecutive episodes of their mean return (Gato's rule).

  The paper takes W = min(1000, 0.1·N) over tens of thousands of episodes, where every
  window's mean is an accurate figure and the max picks the expert's best phase. At the
  tens of episodes a demo generates, 0.1·N is one or two episodes and the max of their
  noisy means overstates what the same expert scores when evaluated (Breakout: 11 from
  20 episodes against 7.4 in evaluation). So no window is shorter than MIN_WINDOW episodes
  or all of them: below 1000 episodes the windows are longer than the paper's and the
  figure is the expert's mean return; at the paper's scale it is the paper's.
  """
  values = np.asarray(returns, dtype=np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError(f'expert_return needs a non-empty list of episode returns, got {returns!r}')
  if not np.isfinite(values).all():
    raise ValueError(f'expert_return: non-finite episode return in {values.tolist()}')
  window = max(min(values.size, MIN_WINDOW), min(1000, int(0.1 * values.size)))
  # Each window's own mean (not a convolution), so equal returns give exactly that value.
  means = np.lib.stride_tricks.sliding_window_view(values, window).mean(axis=1)
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


# ----------------------------------------------------------------------------------------
# An evaluation: per task, over tasks, and as TensorBoard scalars
# ----------------------------------------------------------------------------------------


def summarize(
  task: str,
  results: Sequence[EpisodeResult],
  references: dict[str, Any],
  seconds: float = 0.0,
) -> dict[str, Any]:
  """Mean return, its 95% interval and the expert-normalized score of one task's episodes."""
  from gato_jax.envs import task_domain  # Imports gymnasium; the rest of this module does not.

  done = [r for r in results if not r.failed]
  returns = [r.episode_return for r in done]
  mean, ci95 = mean_ci95(returns)
  expert, random = references.get('expert_return'), references.get('random_return')
  normalized = normalized_ci95 = None
  note = None
  if expert is None or random is None or not expert > random:
    note = (
      f'not normalized: the dataset records expert_return={expert} and '
      f'random_return={random}; an expert-normalized score needs expert > random'
    )
  else:
    normalized = normalized_score(mean, expert, random)
    if ci95 is not None:
      normalized_ci95 = 100.0 * ci95 / (expert - random)
  out = {
    'domain': task_domain(task),
    'mean_return': mean,
    'ci95': ci95,
    'episodes': len(done),
    'failed_episodes': len(results) - len(done),
    'normalized_score': normalized,
    'normalized_ci95': normalized_ci95,
    'expert_return': expert,
    'random_return': random,
    'returns': returns,
    'episode_steps': [r.steps for r in done],
    'seeds': [r.seed for r in done],
    'failures': [{'seed': r.seed, 'step': r.steps, 'error': r.error} for r in results if r.failed],
    'seconds': seconds,
  }
  if note:
    out['note'] = note
  return out


def aggregate(task_results: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """Gato's figure 5 (tasks at or above each percent of expert, per domain) and summaries."""
  normalized = {
    t: r['normalized_score'] for t, r in task_results.items() if r['normalized_score'] is not None
  }
  domains = {t: r['domain'] for t, r in task_results.items()}
  values = list(normalized.values())
  return {
    'tasks': len(task_results),
    'normalized_tasks': len(normalized),
    'mean_normalized_score': float(np.mean(values)) if values else None,
    'median_normalized_score': float(np.median(values)) if values else None,
    'failed_episodes': sum(r['failed_episodes'] for r in task_results.values()),
    'thresholds': list(THRESHOLDS),
    'tasks_above': tasks_above(normalized, domains),
  }


def scalars(result: dict[str, Any]) -> dict[str, float]:
  """Flat TensorBoard tags: per task, per domain at 50% of expert, and overall."""
  out = {}
  for task, r in result['tasks'].items():
    out[f'eval/{task}/mean_return'] = r['mean_return']
    out[f'eval/{task}/failed_episodes'] = r['failed_episodes']
    if r['normalized_score'] is not None:
      out[f'eval/{task}/normalized_score'] = r['normalized_score']
    out.update(offline_scalars(task, r.get('offline')))
  for source, offline in result.get('offline_only', {}).items():
    out.update(offline_scalars(source, offline))
  agg = result['aggregate']
  at_50 = agg['thresholds'].index(50)
  for domain, counts in agg['tasks_above'].items():
    out[f'eval/tasks_above_50/{domain}'] = counts[at_50]
  for key in ('mean_normalized_score', 'median_normalized_score'):
    if agg[key] is not None:
      out[f'eval/{key}'] = agg[key]
  return {k: float(v) for k, v in out.items()}  # tensorboard.ScalarWriter skips non-finite.


OFFLINE_SCALARS = ('action_token_accuracy', 'action_token_loss', 'action_error', 'action_accuracy')


def offline_scalars(task: str, offline: dict[str, Any] | None) -> dict[str, float]:
  """`offline/<task>/<figure>` of the teacher-forced action metrics (action_metrics.py);
  a figure the task's action kind has none of (None) is left out."""
  if not offline:
    return {}
  return {f'offline/{task}/{k}': offline[k] for k in OFFLINE_SCALARS if offline[k] is not None}
