r"""Learning across seeds: train and evaluate a config once per seed, report percent of expert.

  python -m benchmarks.learning --config=configs/demo.py --seeds=3
  python -m benchmarks.learning --config=configs/demo.py --seeds=3 --minutes=60 --steps=8000
  python -m benchmarks.learning --config=configs/demo.py --seeds=2 --config.eval.episodes=10

One seed's result says little: the demo's tasks move by tens of points between seeds. For
each seed S in 0..seeds-1 this runs the real commands, each in its own process:

  python -m data_pipelines.prepare --config=CONFIG          (once, before the first seed)
  python -m gato_jax.train --config=CONFIG --workdir=WORKDIR/seed_S --config.seed=S
  python -m gato_jax.evaluator --config=CONFIG --workdir=WORKDIR/seed_S --step=-1

`config.seed` drives the model's initialization, dropout and the order in which the data
is read; the data itself is the same for every seed: `prepare` runs without the seed
override, so it writes (once) what the config's own seed generates, and a complete
dataset is never rewritten. The evaluator plays the same environment seeds (`eval.seed`)
for every training seed, so what differs between seeds is the trained model.
Every `--config.KEY=VALUE` given here is passed to all three commands.

The budget: by default each seed trains the config's `total_steps`. `--steps=N` trains N
steps instead and stretches `optimizer.decay_steps` by the same factor, so the cosine
schedule keeps its shape. `--minutes=M` stops each seed's training after M minutes of wall
clock (the trainer's `max_train_minutes`: it saves the step it reached and exits); the
schedule is not shortened then, so a run stopped before `decay_steps` ends at a higher
learning rate than the schedule's last. Give `--steps` about what M minutes reach for a
schedule that finishes on time.

It prints, per task, the mean, the standard deviation (over seeds, n - 1 in the
denominator) and the minimum of percent of expert (`normalized_score`), each seed's score,
and the mean over seeds of the offline action metrics (teacher-forced action-token
accuracy and loss, per-step action accuracy or action error in environment units); then
the issue's goals: how many tasks reach `--goal_percent` on every seed, which task is below
0% on some seed, and the minutes each seed trained. WORKDIR/seed_S/learning_seed.json keeps
each finished seed; a later run with the same settings reuses it instead of training again,
and any other leftover in WORKDIR/seed_S is an error (a resumed trainer would get its
budget twice). Everything per seed goes to --json_out.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import flags
from ml_collections import config_flags

from benchmarks import report
from gato_jax import cli

# Offline action metrics (gato_jax/action_metrics.py) averaged over seeds, in table order.
OFFLINE_METRICS = ('action_token_accuracy', 'action_accuracy', 'action_error', 'action_token_loss')
# Keys the benchmark sets itself on every command line.
OWN_KEYS = ('seed', 'max_train_minutes')


# ----------------------------------------------------------------------------------------
# Aggregation: a pure function of the per-seed evaluation results
# ----------------------------------------------------------------------------------------


def _std(values: Sequence[float]) -> float | None:
  """The sample standard deviation over seeds; None for one seed, where it is undefined."""
  if len(values) < 2:
    return None
  mean = sum(values) / len(values)
  return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(
  results: Mapping[int, Mapping[str, Any]], goal_percent: float = 50.0
) -> dict[str, Any]:
  """Per task the spread of percent of expert over seeds, and the goal counts.

  `results` maps each seed to its evaluation (the evaluator's eval/<step>.json). Every seed
  must score every task the others score, with a normalized score: a task missing or not
  normalized on one seed raises a ValueError naming the task and the seed, because a mean
  over the seeds that happen to have it would look better than the run was.
  """
  if not results:
    raise ValueError('no seed to aggregate')
  seeds = sorted(results)
  names = sorted({t for r in results.values() for t in r['tasks']})
  tasks = {}
  for task in names:
    scores, offline_by_seed = [], []
    for seed in seeds:
      entry = results[seed]['tasks'].get(task)
      if entry is None:
        raise ValueError(
          f'task {task} has no result on seed {seed} (seeds {seeds}; seed {seed} scored '
          f'{sorted(results[seed]["tasks"])})'
        )
      if entry.get('normalized_score') is None:
        raise ValueError(
          f'task {task} has no normalized_score on seed {seed}: '
          f'{entry.get("note") or "no expert and random returns"}'
        )
      scores.append(float(entry['normalized_score']))
      offline_by_seed.append(entry.get('offline') or {})
    offline = {}
    for metric in OFFLINE_METRICS:
      values = [o.get(metric) for o in offline_by_seed]
      present = [v for v in values if v is not None]
      if present and len(present) < len(values):
        missing = [s for s, v in zip(seeds, values, strict=True) if v is None]
        raise ValueError(f'task {task}: offline {metric} is missing on seed {missing[0]} '
                         'but present on others')
      offline[metric] = sum(present) / len(present) if present else None
    domain = results[seeds[0]]['tasks'][task].get('domain')
    tasks[task] = {
      'domain': domain,
      'scores': dict(zip(seeds, scores, strict=True)),
      'mean': sum(scores) / len(scores),
      'std': _std(scores),
      'min': min(scores),
      'offline': offline,
    }
  every_seed = [t for t, r in tasks.items() if r['min'] >= goal_percent]
  below_zero = {
    t: [s for s, v in r['scores'].items() if v < 0] for t, r in tasks.items() if r['min'] < 0
  }
  return {
    'seeds': seeds,
    'tasks': tasks,
    'goal_percent': goal_percent,
    'tasks_at_goal_every_seed': every_seed,
    'tasks_below_zero': below_zero,
  }


def table_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
  """One row per task: the spread of percent of expert and the offline metrics' means."""
  rows = []
  for task, r in summary['tasks'].items():
    offline = r['offline']
    rows.append({
      'task': task,
      'domain': r['domain'],
      'mean %': round(r['mean'], 1),
      'std': None if r['std'] is None else round(r['std'], 1),
      'min %': round(r['min'], 1),
      'per seed %': ' / '.join(f'{v:.0f}' for v in r['scores'].values()),
      'token acc': _rounded(offline['action_token_accuracy'], 3),
      'action acc': _rounded(offline['action_accuracy'], 3),
      'action err': _rounded(offline['action_error'], 4),
      'token loss': _rounded(offline['action_token_loss'], 3),
    })
  return rows


def _rounded(value: float | None, digits: int) -> float | None:
  return None if value is None else round(value, digits)


def goal_lines(
  summary: Mapping[str, Any], goal_tasks: int, runs: Sequence[Mapping[str, Any]]
) -> list[str]:
  """The issue's goals, each stated with whether it is met."""
  seeds, tasks = summary['seeds'], summary['tasks']
  at_goal = summary['tasks_at_goal_every_seed']
  met = 'met' if len(at_goal) >= goal_tasks else 'NOT met'
  lines = [
    f'{len(at_goal)} of {len(tasks)} tasks at >= {summary["goal_percent"]:g}% of expert on '
    f'every one of {len(seeds)} seeds (goal: >= {goal_tasks}): {met}'
    + (f' [{", ".join(at_goal)}]' if at_goal else ''),
  ]
  below = summary['tasks_below_zero']
  if below:
    named = ', '.join(f'{t} (seed {", ".join(map(str, s))})' for t, s in below.items())
    lines.append(f'tasks below 0% on some seed (goal: none): {named}: NOT met')
  else:
    lines.append('no task below 0% on any seed (goal: none): met')
  lines.append('train minutes per seed: ' + ', '.join(
    f'seed {r["seed"]}: {r["train_minutes"]:.1f} ({r["step"]}/{r["total_steps"]} steps'
    + (', budget stop' if r['stopped_by_budget'] else '') + ')' for r in runs))
  return lines


# ----------------------------------------------------------------------------------------
# The commands of one seed
# ----------------------------------------------------------------------------------------


def run_overrides(
  overrides: Mapping[str, Any],
  total_steps: int,
  decay_steps: int,
  steps: int = 0,
  minutes: float = 0.0,
) -> dict[str, Any]:
  """The --config.* keys every command of a seed gets (config.seed aside).

  `steps` > 0 replaces total_steps and stretches decay_steps by the same factor (a schedule
  that ended at total_steps still ends there); `minutes` > 0 is the trainer's budget.
  """
  for key in OWN_KEYS:
    if key in overrides:
      raise ValueError(f'--config.{key} is set by the benchmark itself (--seeds, --minutes)')
  out = dict(overrides)
  if steps > 0:
    out['total_steps'] = steps
    out['optimizer.decay_steps'] = max(1, round(decay_steps * steps / total_steps))
  if minutes > 0:
    out['max_train_minutes'] = float(minutes)
  return out


def command(module: str, config_path: str, overrides: Mapping[str, Any], *args: str) -> list[str]:
  """`python -m MODULE --config=PATH --config.K=V ... ARGS` as an argument list."""
  flags_ = [f'--config.{k}={v}' for k, v in overrides.items()]
  return [sys.executable, '-m', module, f'--config={config_path}', *flags_, *args]


def _metrics_tail(workdir: str) -> dict[str, Any] | None:
  """The newest line of WORKDIR/metrics.jsonl, or None before the first logged step."""
  try:
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      lines = [line for line in f.read().splitlines() if line.strip()]
  except OSError:
    return None
  try:
    return json.loads(lines[-1]) if lines else None
  except json.JSONDecodeError:  # A line being written.
    return json.loads(lines[-2]) if len(lines) > 1 else None


def _clock(seconds: float) -> str:
  seconds = max(0, int(seconds))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def _run_logged(
  argv: Sequence[str], log_path: str, what: str, progress=None, every: float = 30.0
) -> float:
  """Runs `argv` with its output in `log_path`; returns its wall seconds, raises naming it."""
  start = time.monotonic()
  with open(log_path, 'w') as log:
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
      last = start
      while process.poll() is None:
        time.sleep(1.0)
        if progress is not None and time.monotonic() - last >= every:
          last = time.monotonic()
          progress()
    except BaseException:
      process.terminate()  # Ctrl-C here: the trainer saves at its next step (SIGTERM).
      process.wait()
      raise
  if process.returncode:
    with open(log_path) as f:
      tail = ''.join(f.readlines()[-15:])
    raise cli.CommandError(f'{what} failed (exit {process.returncode}); the end of {log_path}:\n'
                           f'{tail}')
  return time.monotonic() - start


def newest_result(workdir: str) -> tuple[int, dict[str, Any]]:
  """The evaluation of the newest step in WORKDIR/eval/ (what --step=-1 just wrote)."""
  directory = os.path.join(workdir, 'eval')
  steps = sorted(int(n[:-5]) for n in os.listdir(directory) if n[:-5].isdigit()
                 and n.endswith('.json'))
  if not steps:
    raise cli.CommandError(f'the evaluator left no eval/<step>.json in {workdir}')
  with open(os.path.join(directory, f'{steps[-1]}.json')) as f:
    result = json.load(f)
  if 'error' in result:
    raise cli.CommandError(f'evaluation of {workdir} step {steps[-1]}: {result["error"]}')
  return steps[-1], result


class Progress:
  """Progress lines with an ETA over all seeds: the seeds done so far set the pace."""

  def __init__(self, seeds: int, total_steps: int, minutes: float):
    self.seeds, self.total_steps, self.minutes = seeds, total_steps, minutes
    self.start = self.seed_start = time.monotonic()
    self.seed_seconds: list[float] = []  # Training and evaluation of each seed run here.

  def eta(self, index: int, step: int) -> float | None:
    """Seconds left over all seeds; None before anything sets a pace."""
    elapsed = time.monotonic() - self.seed_start
    if self.seed_seconds:
      per_seed = sum(self.seed_seconds) / len(self.seed_seconds)
    elif step > 0:  # The first seed: its training pace, capped by the budget.
      per_seed = elapsed / step * self.total_steps
      if self.minutes > 0:
        per_seed = min(per_seed, 60 * self.minutes)
    else:
      return None
    return max(per_seed - elapsed, 0.0) + per_seed * (self.seeds - index - 1)

  def line(self, index: int, phase: str, workdir: str) -> str:
    now = time.monotonic()
    record = _metrics_tail(workdir) if phase == 'training' else None
    step = int(record['step']) if record else 0
    text = f'[seed {index + 1}/{self.seeds}] {phase}, {_clock(now - self.seed_start)} into the seed'
    if record:
      text += f', step {step}/{self.total_steps}, loss {record["loss"]:.4f}'
    eta = self.eta(index, step)
    text += f'; {_clock(now - self.start)} so far'
    if eta is not None:
      text += f', ETA {_clock(eta)} for all seeds'
    return text


def run_seed(
  seed: int,
  index: int,
  config_path: str,
  overrides: Mapping[str, Any],
  root: str,
  settings: Mapping[str, Any],
  progress: Progress,
  every: float,
) -> dict[str, Any]:
  """Trains and evaluates seed `seed` in ROOT/seed_S; returns its record (and keeps it)."""
  workdir = os.path.join(root, f'seed_{seed}')
  record_path = os.path.join(workdir, 'learning_seed.json')
  if os.path.exists(record_path):
    with open(record_path) as f:
      record = json.load(f)
    if record.get('settings') == settings:
      print(f'[seed {index + 1}/{progress.seeds}] seed {seed}: reusing {record_path}', flush=True)
      return record
    changed = ', '.join(setting_differences(record.get('settings') or {}, settings)[:5])
    raise cli.CommandError(f'{record_path} was run with other settings ({changed}); remove it '
                           'or choose another --workdir')
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise cli.CommandError(
      f'{workdir} holds an unfinished run: resuming it would train past the budget; remove '
      'it or choose another --workdir')
  os.makedirs(workdir, exist_ok=True)
  progress.seed_start = time.monotonic()
  seeded = {**overrides, 'seed': seed}
  print(f'[seed {index + 1}/{progress.seeds}] seed {seed}: training into {workdir} '
        f'(log: {workdir}/train.log)', flush=True)
  train_seconds = _run_logged(
    command('gato_jax.train', config_path, seeded, f'--workdir={workdir}'),
    os.path.join(workdir, 'train.log'), f'training seed {seed}',
    lambda: print(progress.line(index, 'training', workdir), flush=True), every)
  print(f'[seed {index + 1}/{progress.seeds}] seed {seed}: trained in {_clock(train_seconds)}; '
        'evaluating', flush=True)
  eval_seconds = _run_logged(
    command('gato_jax.evaluator', config_path, seeded, f'--workdir={workdir}', '--step=-1'),
    os.path.join(workdir, 'eval.log'), f'evaluating seed {seed}',
    lambda: print(progress.line(index, 'evaluating', workdir), flush=True), every)
  progress.seed_seconds.append(train_seconds + eval_seconds)
  step, result = newest_result(workdir)
  final = _metrics_tail(workdir) or {}
  record = {
    'seed': seed,
    'settings': dict(settings),
    'workdir': workdir,
    'step': step,
    'total_steps': settings['total_steps'],
    'stopped_by_budget': step < settings['total_steps'],
    'train_minutes': train_seconds / 60,
    'eval_minutes': eval_seconds / 60,
    'final_loss': final.get('loss'),
    'eval': result,
  }
  with open(record_path, 'w') as f:
    json.dump(record, f, indent=2)
  return record


# ----------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------


def setting_differences(
  old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ''
) -> list[str]:
  """'key: old -> new' for each dotted key in which two seeds' settings differ."""
  lines = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      lines += setting_differences(a, b, f'{prefix}{key}.')
    elif a != b:
      lines.append(f'{prefix}{key}: {a!r} -> {b!r}')
  return lines


def main(argv: Sequence[str]) -> None:
  del argv
  args = flags.FLAGS
  if args.seeds < 1:
    raise ValueError('--seeds must be at least 1')
  if args.minutes < 0 or args.steps < 0:
    raise ValueError('--minutes and --steps must be >= 0 (0 = the config\'s own budget)')
  config = args.config
  config_path = config_flags.get_config_filename(args['config'])
  given = config_flags.get_override_values(args['config'])
  overrides = run_overrides(given, config.total_steps, config.optimizer.decay_steps,
                            args.steps, args.minutes)
  total_steps = overrides.get('total_steps', config.total_steps)
  # The resolved config too: a finished seed is reused only if the config file still says
  # what it said then (an edited configs/demo.py is another experiment).
  settings = {'config': config_path, 'overrides': {k: str(v) for k, v in overrides.items()},
              'total_steps': total_steps, 'minutes': args.minutes,
              'resolved_config': json.loads(config.to_json_best_effort(sort_keys=True))}
  os.makedirs(args.workdir, exist_ok=True)
  print(f'preparing the data of {config_path} (once, for every seed)', flush=True)
  _run_logged(command('data_pipelines.prepare', config_path, given),
              os.path.join(args.workdir, 'prepare.log'), 'data_pipelines.prepare')
  progress = Progress(args.seeds, total_steps, args.minutes)
  runs = [run_seed(seed, seed, config_path, overrides, args.workdir, settings, progress,
                   args.progress_seconds) for seed in range(args.seeds)]
  summary = aggregate({r['seed']: r['eval'] for r in runs}, args.goal_percent)
  budget = f'{total_steps} steps' + (f' or {args.minutes:g} minutes' if args.minutes else '')
  report.emit(
    'learning',
    f'learning over {args.seeds} seeds: {config_path}, {budget} per seed; percent of expert '
    '(mean, std, min over seeds) and the offline action metrics (mean over seeds)',
    table_rows(summary),
    args.json_out,
    config=config_path,
    overrides=settings['overrides'],
    minutes=args.minutes,
    total_steps=total_steps,
    summary=summary,
    goal_tasks=args.goal_tasks,
    seeds=[{k: v for k, v in r.items() if k != 'settings'} for r in runs],
  )
  for line in goal_lines(summary, args.goal_tasks, runs):
    print(line)


if __name__ == '__main__':
  config_flags.DEFINE_config_file('config', 'configs/demo.py', 'Experiment config.')
  flags.DEFINE_integer('seeds', 3, 'Seeds 0..seeds-1, each trained and evaluated.')
  flags.DEFINE_float('minutes', 0.0, 'Training wall clock per seed; 0 = total_steps decides.')
  flags.DEFINE_integer('steps', 0, 'total_steps per seed (decay_steps scaled alike); 0 = config.')
  flags.DEFINE_string('workdir', 'runs/learning', 'Each seed trains in WORKDIR/seed_S.')
  flags.DEFINE_float('goal_percent', 50.0, 'Percent of expert a task must reach on every seed.')
  flags.DEFINE_integer('goal_tasks', 4, 'Tasks that must reach --goal_percent on every seed.')
  flags.DEFINE_float('progress_seconds', 30.0, 'Seconds between progress lines.')
  flags.DEFINE_string('json_out', 'benchmarks/results/learning.json', 'Output JSON.')
  cli.run(main)
