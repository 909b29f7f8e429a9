"""benchmarks/learning.py: the figures a reader takes from it, on hand-made evaluations.

No end-to-end run here: two seeds of even a 3-step cartpole run take about 3 minutes on two
cores (each seed starts a trainer and an evaluator process); the commands it runs are
tested in test_train.py and test_evaluator.py.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from benchmarks import learning


def evaluation(scores: dict[str, float | None], offline: bool = True) -> dict:
  """An eval/<step>.json with these percent-of-expert scores and made-up offline metrics."""
  tasks = {}
  for task, score in scores.items():
    continuous = task.startswith('metaworld')
    tasks[task] = {
      'domain': task.split('_')[0],
      'normalized_score': score,
      'offline': {
        'action_token_accuracy': 0.5 if score is None else score / 200,
        'action_token_loss': 1.0,
        'action_error': 0.1 if continuous else None,
        'action_accuracy': None if continuous else 0.5,
      } if offline else None,
    }
  return {'step': 1000, 'tasks': tasks}


def test_mean_std_min_and_offline_means_over_seeds():
  results = {
    0: evaluation({'cartpole': 90.0, 'metaworld_reach': -7.0}),
    1: evaluation({'cartpole': 96.0, 'metaworld_reach': 20.0}),
    2: evaluation({'cartpole': 99.0, 'metaworld_reach': 5.0}),
  }
  summary = learning.aggregate(results)
  cart = summary['tasks']['cartpole']
  assert cart['scores'] == {0: 90.0, 1: 96.0, 2: 99.0}
  assert cart['mean'] == pytest.approx(95.0)
  assert cart['std'] == pytest.approx(math.sqrt((25 + 1 + 16) / 2))  # n - 1 over seeds.
  assert cart['min'] == 90.0
  assert cart['offline']['action_token_accuracy'] == pytest.approx(95.0 / 200)
  assert cart['offline']['action_error'] is None
  reach = summary['tasks']['metaworld_reach']
  assert reach['mean'] == pytest.approx(6.0) and reach['min'] == -7.0
  assert reach['offline']['action_error'] == pytest.approx(0.1)
  assert reach['offline']['action_accuracy'] is None
  assert summary['tasks_at_goal_every_seed'] == ['cartpole']
  assert summary['tasks_below_zero'] == {'metaworld_reach': [0]}

  rows = {r['task']: r for r in learning.table_rows(summary)}
  assert rows['cartpole']['mean %'] == 95.0 and rows['cartpole']['min %'] == 90.0
  assert rows['cartpole']['per seed %'] == '90 / 96 / 99'
  assert rows['metaworld_reach']['action err'] == 0.1


def test_goal_counts_need_every_seed():
  # babyai reaches 50% on average but not on seed 1: it does not count.
  results = {
    0: evaluation({'cartpole': 60.0, 'babyai_gotoredball': 80.0, 'acrobot': 50.0}),
    1: evaluation({'cartpole': 70.0, 'babyai_gotoredball': 49.9, 'acrobot': 51.0}),
  }
  summary = learning.aggregate(results, goal_percent=50.0)
  assert sorted(summary['tasks_at_goal_every_seed']) == ['acrobot', 'cartpole']
  assert summary['tasks_below_zero'] == {}
  runs = [
    {'seed': 0, 'train_minutes': 7.04, 'step': 1000, 'total_steps': 1000,
     'stopped_by_budget': False},
    {'seed': 1, 'train_minutes': 5.0, 'step': 700, 'total_steps': 1000,
     'stopped_by_budget': True},
  ]
  lines = learning.goal_lines(summary, goal_tasks=2, runs=runs)
  assert lines[0].startswith('2 of 3 tasks at >= 50% of expert on every one of 2 seeds '
                             '(goal: >= 2): met')
  assert lines[1] == 'no task below 0% on any seed (goal: none): met'
  assert lines[2] == ('train minutes per seed: seed 0: 7.0 (1000/1000 steps), '
                      'seed 1: 5.0 (700/1000 steps, budget stop)')
  assert 'NOT met' in learning.goal_lines(summary, goal_tasks=3, runs=runs)[0]
  assert learning.aggregate({0: evaluation({'cartpole': 9.0})})['tasks']['cartpole']['std'] is None


def test_a_task_missing_on_one_seed_is_an_error_naming_task_and_seed():
  results = {0: evaluation({'cartpole': 90.0, 'acrobot': 80.0}), 1: evaluation({'cartpole': 95.0})}
  with pytest.raises(ValueError, match='task acrobot has no result on seed 1'):
    learning.aggregate(results)
  results = {0: evaluation({'cartpole': 90.0}), 3: evaluation({'cartpole': None})}
  with pytest.raises(ValueError, match='task cartpole has no normalized_score on seed 3'):
    learning.aggregate(results)
  results = {0: evaluation({'cartpole': 90.0}), 1: evaluation({'cartpole': 80.0}, offline=False)}
  with pytest.raises(ValueError, match='cartpole: offline action_token_accuracy is missing on '
                                       'seed 1'):
    learning.aggregate(results)


def test_budget_overrides_and_commands():
  base = {'data.data_dir': '/d'}
  assert learning.run_overrides(base, total_steps=1000, decay_steps=1000) == base
  stretched = learning.run_overrides(base, 1000, 900, steps=8000, minutes=60)
  assert stretched == {'data.data_dir': '/d', 'total_steps': 8000,
                       'optimizer.decay_steps': 7200, 'max_train_minutes': 60.0}
  with pytest.raises(ValueError, match='--config.seed is set by the benchmark'):
    learning.run_overrides({'seed': 3}, 1000, 1000)
  argv = learning.command('gato_jax.train', 'configs/demo.py', {'seed': 2, 'total_steps': 5},
                          '--workdir=/w/seed_2')
  assert argv == [sys.executable, '-m', 'gato_jax.train', '--config=configs/demo.py',
                  '--config.seed=2', '--config.total_steps=5', '--workdir=/w/seed_2']


def test_a_finished_seed_is_reused_and_a_leftover_run_refused(tmp_path):
  settings = {'config': 'configs/demo.py', 'overrides': {}, 'total_steps': 10, 'minutes': 0.0,
              'resolved_config': {'model': {'pixel_normalization': 'paper'}}}
  progress = learning.Progress(seeds=2, total_steps=10, minutes=0.0)
  record = {'seed': 0, 'settings': settings, 'eval': evaluation({'cartpole': 1.0})}
  (tmp_path / 'seed_0').mkdir()
  (tmp_path / 'seed_0' / 'learning_seed.json').write_text(json.dumps(record))
  args = ('configs/demo.py', {}, str(tmp_path))
  assert learning.run_seed(0, 0, *args, settings, progress, 30.0) == record
  with pytest.raises(learning.cli.CommandError, match='run with other settings'):
    learning.run_seed(0, 0, *args, {**settings, 'minutes': 5.0}, progress, 30.0)
  # The same file and flags, but the file now says something else: refused, naming the key.
  edited = {**settings, 'resolved_config': {'model': {'pixel_normalization': 'unit'}}}
  with pytest.raises(learning.cli.CommandError,
                     match="resolved_config.model.pixel_normalization: 'paper' -> 'unit'"):
    learning.run_seed(0, 0, *args, edited, progress, 30.0)
  (tmp_path / 'seed_1').mkdir()
  (tmp_path / 'seed_1' / 'metrics.jsonl').write_text('{"step": 3, "loss": 1.0}\n')
  with pytest.raises(learning.cli.CommandError, match='seed_1 holds an unfinished run'):
    learning.run_seed(1, 1, *args, settings, progress, 30.0)
