"""What an evaluation leaves behind: WORKDIR/eval/<name>.json and .png, TensorBoard, a table.

  WORKDIR/eval/<step>.json      per task: mean_return, ci95, episodes, failed_episodes,
                                normalized_score (percent of expert) and the raw returns,
                                the teacher-forced `offline` action metrics;
                                the aggregate: tasks above each threshold per domain
  WORKDIR/eval/<step>.png       Gato's figure 5 for this checkpoint
  WORKDIR/tensorboard/eval/     the same scalars (scores.scalars), by training step

A reference policy's result is named for it (eval/expert.json). docs/evaluation.md explains
every field.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import tensorflow as tf

from gato_jax import scores, tables
from gato_jax.tensorboard import ScalarWriter


def eval_dir(workdir: str) -> str:
  return os.path.join(workdir, 'eval')


def result_path(workdir: str, name: str | int) -> str:
  return os.path.join(eval_dir(workdir), f'{name}.json')


def write_json(path: str, result: dict[str, Any]) -> None:
  """Written to a temporary name and renamed: whoever reads eval/ never sees half a file."""
  tf.io.gfile.makedirs(os.path.dirname(path))  # gfile: gs:// workdirs too.
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    json.dump(result, f, indent=2)
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)


def table(result: dict[str, Any]) -> str:
  rows = []
  for task, r in result['tasks'].items():
    rows.append(
      {
        'task': task,
        'domain': r['domain'],
        'episodes': r['episodes'],
        'failed': r['failed_episodes'],
        'mean_return': r['mean_return'],
        'ci95': r['ci95'],
        'expert': r['expert_return'],
        'random': r['random_return'],
        'percent_of_expert': r['normalized_score'],
        **offline_columns(r.get('offline')),
      }
    )
  for source, offline in result.get('offline_only', {}).items():  # Dataset-only: no returns.
    rows.append({'task': source, 'domain': 'dataset', **offline_columns(offline)})
  agg = result['aggregate']
  above = agg['tasks_above']['all'] if agg['tasks_above'] else []
  at_50 = above[agg['thresholds'].index(50)] if above else 0
  summary = (
    f'{at_50} of {agg["normalized_tasks"]} tasks at or above 50% of expert; '
    f'mean {_percent(agg["mean_normalized_score"])}, '
    f'median {_percent(agg["median_normalized_score"])}; '
    f'{agg["failed_episodes"]} failed episodes'
  )
  return tables.format_table(rows) + '\n' + summary


def offline_columns(offline: dict[str, Any] | None) -> dict[str, Any]:
  """The table's teacher-forced columns: action-token accuracy and, by action kind, the
  continuous action error (env units) or the discrete per-step action accuracy."""
  if not offline:
    return {'token acc': None, 'action err': None, 'action acc': None}
  return {
    'token acc': offline['action_token_accuracy'],
    'action err': offline['action_error'],
    'action acc': offline['action_accuracy'],
  }


def _percent(value: float | None) -> str:
  return '-' if value is None else f'{value:.1f}%'


def write_plot(path: str, result: dict[str, Any], title: str) -> None:
  """Gato's figure 5: tasks at or above each percent-of-expert threshold, one line per domain."""
  import matplotlib

  matplotlib.use('Agg')  # No display in a headless evaluator.
  from matplotlib import pyplot as plt
  from matplotlib.ticker import MaxNLocator

  agg = result['aggregate']
  fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  for domain, counts in agg['tasks_above'].items():
    style = {'color': 'black', 'linewidth': 2.5} if domain == 'all' else {}
    ax.step(agg['thresholds'], counts, where='post', label=domain, **style)
  ax.set_xlabel('percent of expert score')
  ax.set_ylabel('tasks at or above threshold')
  ax.set_title(title)
  ax.set_ylim(0, max(agg['tasks'], 1) + 0.5)
  ax.yaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  image = io.BytesIO()
  fig.savefig(image, format='png')
  plt.close(fig)
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(image.getvalue())


def report(workdir: str, name: str | int, result: dict[str, Any]) -> str:
  """JSON, PNG, TensorBoard (checkpoints only) and the printed table; returns the JSON path."""
  path = result_path(workdir, name)
  write_json(path, result)
  write_plot(
    os.path.join(eval_dir(workdir), f'{name}.png'),
    result,
    f'{result["policy"]} policy' + (f', step {name}' if isinstance(name, int) else ''),
  )
  if isinstance(name, int):
    writer = ScalarWriter(os.path.join(workdir, 'tensorboard', 'eval'))
    writer.write(name, scores.scalars(result))
    writer.close()
  print(
    f'\nevaluation of {name} ({result["policy"]} policy):\n{table(result)}\nwrote {path}',
    flush=True,
  )
  return path
