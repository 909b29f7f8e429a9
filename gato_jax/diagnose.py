r"""Why a task scores low: one checkpoint's actions on held-out expert episodes, path by path.

  python -m gato_jax.diagnose --config=configs/demo.py --workdir=runs/demo --step=-1 \
      [--tasks=metaworld_reach,atari_breakout] [--episodes=3]

For each task it prints, on the same held-out expert episodes (the evaluator's offline
ones), how close each way of producing an action comes to the expert's:

  teacher-forced      the training forward (gato_jax/action_metrics.py)
  most frequent       a constant: each action token's most frequent logged value, what a
                      model that learned only the actions' marginal predicts greedily
  copy previous       the previous logged action (the first step: the most frequent)
  loop forced greedy  the evaluator's loop (prompt, cache, slides) with the expert's actions
                      in context, greedy: equal to teacher-forced but for the context
  loop own greedy     the loop on the expert's observations with its own actions in context
  loop own T=<t>      the same at the evaluator's temperature, as the closed loop samples

then the closed-loop score of eval/<step>.json when the evaluator has written it. A loop
row far below teacher-forced means training and acting differ; teacher-forced no better
than 'most frequent' means the model has not learned the task from its observations.
'mean_run' is the mean length of runs of a repeated action (the expert's in the
'expert' row): a copy of the last action shows as long runs.

For a task whose action is one discrete token, a second table breaks teacher forcing down
per action: how often the expert takes it, how often the greedy prediction recovers it
(recall), how often it is predicted at all, and the mean probability the model gives it
where the expert takes it. A rare action the task cannot do without (Breakout's FIRE,
which serves the ball) shows there with recall 0 while the overall accuracy looks fine.
The tables and a JSON (WORKDIR/diagnosis/<step>.json) are the output; docs/evaluation.md
reads one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from gato_jax import action_metrics, evaluator, policy, replay, specs, tables
from gato_jax import tokenizer as tok


def baselines(
  task_tokenizer: specs.TaskTokenizer, episodes: Sequence[replay.Episode]
) -> dict[str, dict[str, Any]]:
  """'most frequent' and 'copy previous' figures (module docstring) on `episodes`."""
  logged = [replay.logged_action_tokens(task_tokenizer, e) for e in episodes]
  flat = np.concatenate(logged)
  mode = np.array([np.bincount(column).argmax() for column in flat.T], np.int32)
  actions = np.concatenate([task_tokenizer.spec.check_steps(*e)[1] for e in episodes])
  constant = np.broadcast_to(mode, flat.shape)
  previous = np.concatenate([np.concatenate([mode[None], t[:-1]]) for t in logged])
  return {
    'most frequent': {
      **replay.compare(task_tokenizer, constant, flat, actions),
      'mean_run': float(np.mean([len(t) for t in logged])),
    },
    'copy previous': {
      **replay.compare(task_tokenizer, previous, flat, actions),
      'mean_run': replay.mean_run(logged),
    },
  }


def per_action(
  predicted: np.ndarray, targets: np.ndarray, nll: np.ndarray, logged: np.ndarray
) -> list[dict[str, Any]]:
  """One row per action the expert took ([S, 1] greedy and logged tokens, their losses in
  nats, the logged actions [S] or [S, 1]): the second table of the module docstring."""
  if predicted.shape != targets.shape or targets.ndim != 2 or targets.shape[1] != 1:
    raise ValueError(f'per-action figures need one action token per step; got predicted '
                     f'{predicted.shape} against logged {targets.shape}')
  predicted, targets, nll = predicted[:, 0], targets[:, 0], nll[:, 0]
  actions = np.asarray(logged).reshape(len(targets))
  rows = []
  for token in np.unique(targets):
    taken = targets == token
    rows.append({
      'action': int(actions[taken][0]),
      'token': int(token),
      'expert_share': float(taken.mean()),
      'recall': float((predicted[taken] == token).mean()),
      'predicted_share': float((predicted == token).mean()),
      'p_expert_action': float(np.exp(-nll[taken]).mean()),
    })
  return rows


def diagnose_task(config: Any, model: Any, task: str, count: int) -> dict[str, Any]:
  """Every row of the module docstring's table for one task."""
  from gato_jax.data import episodes as episode_data  # TFDS, only when a dataset is read.

  e = config.eval
  spec = specs.get_spec(task)
  text = any(isinstance(f, tok.TextField) for f in spec.observation)
  vocabulary = tok.vocabulary_from_config(config) if text else None
  task_tokenizer = spec.tokenizer(tok.layout_from_config(config), vocabulary)
  held_out = action_metrics.expert_episodes(
    task, task_tokenizer, count, evaluator.offline_seed(config), evaluator.max_steps(config),
    e.batch_size,
  )
  references = episode_data.read_metadata(task, config.data.data_dir)
  demos = evaluator.demonstrations(
    task, config.data.data_dir, e.prompt_episodes, references,
    config.data.get('min_return_fraction', 0.0),
  )
  seeds = list(range(e.seed, e.seed + len(held_out)))
  teacher = action_metrics.greedy_actions(model, task_tokenizer, held_out, model.max_length)
  rows = {'teacher-forced': action_metrics.figures(task_tokenizer, *teacher, len(held_out))}
  rows.update(baselines(task_tokenizer, held_out))
  sampling = evaluator.sampling_options(config)
  greedy = dataclasses.replace(sampling, temperature=0.0)
  for name, options, forced in (
    ('loop forced greedy', greedy, True),
    ('loop own greedy', greedy, False),
    (f'loop own T={sampling.temperature:g}', sampling, False),
  ):
    actor = policy.GatoPolicy(model, task_tokenizer, demos, options, seed=e.seed)
    rows[name] = replay.replay(actor, held_out, seeds, forced=forced)
  expert_run = replay.mean_run([replay.logged_action_tokens(task_tokenizer, h) for h in held_out])
  out = {'episodes': len(held_out), 'expert_mean_run': expert_run, 'rows': rows}
  if isinstance(spec.action, tok.DiscreteField) and spec.action_tokens == 1:
    out['per_action'] = per_action(*teacher)
  return out


def table(results: dict[str, dict[str, Any]], closed: dict[str, Any]) -> str:
  lines = []
  for task, result in results.items():
    lines.append(
      {'task': task, 'path': 'expert', 'mean_run': result['expert_mean_run'],
       'closed_loop_%': None}
    )
    for path, r in result['rows'].items():
      lines.append({
        'task': task, 'path': path,
        'token_acc': r['action_token_accuracy'],
        'action_acc': r['action_accuracy'],
        'action_err': r['action_error'],
        'mean_run': r.get('mean_run'),
      })
    lines.append({'task': task, 'path': 'closed loop (eval)',
                  'closed_loop_%': closed.get(task, {}).get('normalized_score')})
  columns = ['task', 'path', 'token_acc', 'action_acc', 'action_err', 'mean_run', 'closed_loop_%']
  text = tables.format_table(lines, columns)
  actions = [{'task': task, **row} for task, result in results.items()
             for row in result.get('per_action', [])]
  if actions:
    text += '\n\nteacher-forced, per action the expert took:\n' + tables.format_table(actions)
  return text


def main(argv: Sequence[str]) -> None:
  del argv
  args = flags.FLAGS
  config, workdir = args.config, args.workdir
  if config is None or not workdir:
    raise app.UsageError('--config and --workdir are required')
  evaluator.validate(config)
  step = evaluator.newest_good_step(workdir) if args.step == -1 else args.step
  config = evaluator.run_config(config, workdir, step, evaluator.command_line_keys())
  model = evaluator.Models().restore(config, workdir, step)
  tasks = args.tasks or evaluator.eval_tasks(config)
  count = args.episodes or config.eval.offline_episodes or 3
  results = {}
  for task in tasks:
    print(f'task {task}: replaying {count} held-out expert episodes', flush=True)
    results[task] = diagnose_task(config, model, task, count)
  closed_path = os.path.join(workdir, 'eval', f'{step}.json')
  closed = {}
  if os.path.exists(closed_path):
    with open(closed_path) as f:
      closed = json.load(f).get('tasks', {})
  else:
    print(f'no closed-loop scores: {closed_path} is not written (run the evaluator)')
  print(table(results, closed))
  out = os.path.join(workdir, 'diagnosis', f'{step}.json')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w') as f:
    json.dump({'step': step, 'tasks': results, 'closed_loop': {
      t: closed.get(t, {}).get('normalized_score') for t in results}}, f, indent=1)
  print(f'wrote {out}')


if __name__ == '__main__':
  from gato_jax import cli

  config_flags.DEFINE_config_file('config', None, 'Experiment config.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run directory.')
  flags.DEFINE_integer('step', -1, 'The checkpoint (-1: the newest complete one).')
  flags.DEFINE_list('tasks', [], 'Env tasks (default: the eval tasks of the config).')
  flags.DEFINE_integer('episodes', 0, 'Held-out expert episodes (default eval.offline_episodes).')
  cli.run(main)
