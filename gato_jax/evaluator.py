r"""The evaluator: its own process, scoring a run's checkpoints in the real environments.

  python -m gato_jax.evaluator --config=configs/demo.py --workdir=/tmp/gato_demo
  python -m gato_jax.evaluator --config=configs/demo.py --workdir=/tmp/gato_demo --step=1000
  python -m gato_jax.evaluator --config=configs/demo.py --workdir=/tmp/gato_demo --policy=expert

Without `--step` it watches `WORKDIR/checkpoints/` and evaluates every complete checkpoint
it has not scored yet, oldest first, until the run's last step (`config.total_steps`) is
done. `--step=N` scores one checkpoint and exits, waiting while that step is still being
written. `--policy=expert|random` scores the task's reference policies through the same
loop instead of a checkpoint: a check of the environments, the token path and the
references (they should land near 100% and 0%).

Only the `params` item is read, onto this process's own devices (one device: the model is
small next to a trainer's and sampling is sequential), whatever mesh wrote it. For each
task (`config.eval`, configs/common.py eval_config) the policy loop of gato_jax/policy.py
runs `eval.episodes` episodes, prompted with demonstrations from the task's dataset, and
the results go to

  WORKDIR/eval/<step>.json      per task: mean_return, ci95, episodes, failed_episodes,
                                normalized_score (percent of expert) and the raw returns;
                                the aggregate: tasks above each threshold per domain
  WORKDIR/eval/<step>.png       Gato's figure 5 for this checkpoint
  WORKDIR/tensorboard/eval/     the same scalars, by training step

and a table on stdout. The expert (100%) and random (0%) returns are those the dataset
recorded when it was generated (gato_jax/data/episodes.py, metadata.json). docs/evaluation.md
explains every field.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from gato_jax import checkpointing, envs, policy, scores, specs, tables
from gato_jax import tokenizer as tok
from gato_jax.model import check_task_fits, from_config

POLICIES = ('gato', 'expert', 'random')


# ----------------------------------------------------------------------------------------
# Settings, checked once at start-up
# ----------------------------------------------------------------------------------------


def eval_tasks(config: ml_collections.ConfigDict) -> list[str]:
  """`eval.tasks`, or the environment tasks of the training mixture when it is empty."""
  names = [t.strip() for t in config.eval.tasks.split(',') if t.strip()]
  if not names:
    from gato_jax.data import tasks  # Registers the seqio tasks; only needed here.

    names = tasks.episode_tasks(config.data.mixture)
    if not names:
      raise ValueError(
        f'config key eval.tasks is empty and mixture {config.data.mixture!r} '
        'has no environment tasks to evaluate'
      )
  for name in names:
    specs.get_spec(name)  # An unknown name raises, listing the known ones.
  return names


def max_steps(config: ml_collections.ConfigDict) -> int | None:
  """Episode cap: the one the dataset's references were measured with, unless overridden."""
  steps = config.eval.max_steps
  if steps < 0:
    steps = config.data.get('max_episode_steps', 0) if 'data' in config else 0
  return steps or None


def sampling_options(config: ml_collections.ConfigDict) -> policy.SamplingOptions:
  e = config.eval
  prompt_tokens = e.prompt_tokens
  if prompt_tokens == 0 and 'data' in config:
    prompt_tokens = config.data.get('prompt_length', 0)  # 0 there too: L // 4 (policy.py).
  return policy.SamplingOptions(
    temperature=float(e.temperature),
    prompt_mode=e.prompt_mode,
    prompt_tokens=prompt_tokens,
    slide_to=e.slide_to,
    use_cache=bool(e.use_cache),
  )


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad `eval.*` key."""
  if 'eval' not in config:
    raise ValueError('config has no `eval` section (configs/common.py eval_config)')
  e = config.eval
  for key in ('episodes', 'batch_size', 'prompt_episodes'):
    if not isinstance(e[key], int) or e[key] <= 0:
      raise ValueError(f'config key eval.{key} must be a positive int, got {e[key]!r}')
  if e.prompt_mode not in policy.PROMPT_MODES:
    raise ValueError(
      f'config key eval.prompt_mode must be one of {policy.PROMPT_MODES}, got {e.prompt_mode!r}'
    )
  if not e.temperature >= 0:
    raise ValueError(f'config key eval.temperature must be >= 0, got {e.temperature}')
  for key in ('poll_seconds', 'wait_seconds'):
    if not e[key] > 0:
      raise ValueError(f'config key eval.{key} must be positive, got {e[key]}')


# ----------------------------------------------------------------------------------------
# One task
# ----------------------------------------------------------------------------------------


def demonstrations(
  task: str, data_dir: str, count: int, references: dict[str, Any], min_return_fraction: float
) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
  """Prompt candidates: the dataset's first `count` episodes that training would keep.

  The training filter's rule (`episodes.min_kept_return`): at least `min_return_fraction`
  of the way from the random to the expert return.
  """
  from gato_jax.data import episodes  # TFDS, imported only when a dataset is read.

  expert, random = references.get('expert_return'), references.get('random_return')
  bar = episodes.min_kept_return(expert, random, min_return_fraction)
  read = itertools.islice(episodes.read_episodes(task, data_dir), count)
  return [e.acted_steps() for e in read if e.episode_return >= bar]


def evaluate_task(
  task: str,
  config: ml_collections.ConfigDict,
  model: nnx.Module | None,
  policy_kind: str = 'gato',
  vocabulary: Any = None,
) -> dict[str, Any]:
  """Rolls out `eval.episodes` episodes of one task and summarizes them (module docstring)."""
  from gato_jax.data import episodes  # TFDS, imported only when a dataset is read.

  e, data_dir = config.eval, config.data.data_dir
  spec = specs.get_spec(task)
  check_task_fits(spec, config.model)
  task_tokenizer = spec.tokenizer(tok.layout_from_config(config), vocabulary)
  references = episodes.read_metadata(task, data_dir)
  if policy_kind == 'gato':
    fraction = config.data.get('min_return_fraction', 0.0)
    demos = demonstrations(task, data_dir, e.prompt_episodes, references, fraction)
    actor = policy.GatoPolicy(model, task_tokenizer, demos, sampling_options(config), seed=e.seed)
  else:
    actor = policy.EnvPolicy(task_tokenizer, policy_kind)
  start = time.perf_counter()
  results = policy.run_episodes(
    task,
    task_tokenizer,
    actor,
    episodes=e.episodes,
    batch_size=e.batch_size,
    seed=e.seed,
    max_steps=max_steps(config),
    max_failures=None if e.max_failures < 0 else e.max_failures,
  )
  seconds = time.perf_counter() - start
  return summarize(task, results, references, seconds)


def summarize(
  task: str,
  results: Sequence[policy.EpisodeResult],
  references: dict[str, Any],
  seconds: float = 0.0,
) -> dict[str, Any]:
  """Mean return, its 95% interval and the expert-normalized score of one task's episodes."""
  done = [r for r in results if not r.failed]
  returns = [r.episode_return for r in done]
  mean, ci95 = scores.mean_ci95(returns)
  expert, random = references.get('expert_return'), references.get('random_return')
  normalized = normalized_ci95 = None
  note = None
  if expert is None or random is None or not expert > random:
    note = (
      f'not normalized: the dataset records expert_return={expert} and '
      f'random_return={random}; an expert-normalized score needs expert > random'
    )
  else:
    normalized = scores.normalized_score(mean, expert, random)
    if ci95 is not None:
      normalized_ci95 = 100.0 * ci95 / (expert - random)
  out = {
    'domain': envs.task_domain(task),
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
    'thresholds': list(scores.THRESHOLDS),
    'tasks_above': scores.tasks_above(normalized, domains),
  }


def evaluate(
  config: ml_collections.ConfigDict,
  model: nnx.Module | None,
  policy_kind: str = 'gato',
) -> dict[str, Any]:
  """Every task of `config.eval`; returns {'tasks': {...}, 'aggregate': {...}}."""
  vocabulary = None
  names = eval_tasks(config)
  for task in names:
    spec = specs.get_spec(task)
    check_task_fits(spec, config.model)  # Every task before the first episode runs.
    if vocabulary is None and any(isinstance(f, tok.TextField) for f in spec.observation):
      vocabulary = tok.vocabulary_from_config(config)
  task_results = {}
  for task in names:
    logging.info('evaluating %s (%s policy)', task, policy_kind)
    task_results[task] = evaluate_task(task, config, model, policy_kind, vocabulary)
  return {'tasks': task_results, 'aggregate': aggregate(task_results)}


# ----------------------------------------------------------------------------------------
# Reporting: JSON, TensorBoard, PNG, table
# ----------------------------------------------------------------------------------------


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
      }
    )
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


def scalars(result: dict[str, Any]) -> dict[str, float]:
  """Flat TensorBoard tags: per task, per domain at 50% of expert, and overall."""
  out = {}
  for task, r in result['tasks'].items():
    out[f'eval/{task}/mean_return'] = r['mean_return']
    out[f'eval/{task}/failed_episodes'] = r['failed_episodes']
    if r['normalized_score'] is not None:
      out[f'eval/{task}/normalized_score'] = r['normalized_score']
  agg = result['aggregate']
  at_50 = agg['thresholds'].index(50)
  for domain, counts in agg['tasks_above'].items():
    out[f'eval/tasks_above_50/{domain}'] = counts[at_50]
  for key in ('mean_normalized_score', 'median_normalized_score'):
    if agg[key] is not None:
      out[f'eval/{key}'] = agg[key]
  return {k: float(v) for k, v in out.items() if math.isfinite(v)}


def write_tensorboard(workdir: str, step: int, values: dict[str, float]) -> None:
  import tensorflow as tf  # The data pipeline's dependency; no tensorboard package needed.
  from tensorflow.core.framework import summary_pb2

  # tf.summary.scalar lives in the tensorboard package; the core op with the scalars
  # plugin's tag writes the same event without it (as gato_jax/metrics.py does).
  plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars')
  metadata = summary_pb2.SummaryMetadata(plugin_data=plugin).SerializeToString()
  writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard', 'eval'))
  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)
  writer.close()


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
    write_tensorboard(workdir, name, scalars(result))
  print(
    f'\nevaluation of {name} ({result["policy"]} policy):\n{table(result)}\nwrote {path}',
    flush=True,
  )
  return path


# ----------------------------------------------------------------------------------------
# Checkpoints: one step, or watching a run
# ----------------------------------------------------------------------------------------


def check_checkpoint_config(config: ml_collections.ConfigDict, workdir: str, step: int) -> None:
  """Refuses a checkpoint trained as another model than the evaluator's config describes.

  Every model setting that changes the computed function counts (model.EXECUTION_KEYS are
  the exceptions), not only parameter shapes: a rope checkpoint run without rope loads
  fine and scores wrong.
  """
  differ = checkpointing.model_differences(config, workdir, step)
  if differ:
    raise ValueError(
      f'checkpoint {step} in {workdir} was trained with a different model than '
      f'--config describes: {"; ".join(differ)}'
    )


def wait_for_step(workdir: str, step: int, timeout: float, poll: float) -> None:
  """Returns once `step` is complete; waits while Orbax is still writing it."""
  deadline = time.monotonic() + timeout
  while step not in checkpointing.complete_steps(workdir):
    pending = tf.io.gfile.glob(os.path.join(checkpointing.checkpoint_dir(workdir), f'{step}.*tmp*'))
    # Orbax may finish (rename tmp -> step) between the two looks: only then is it complete.
    if not pending and step in checkpointing.complete_steps(workdir):
      return
    if not pending:
      raise FileNotFoundError(
        f'no checkpoint for step {step} in {checkpointing.checkpoint_dir(workdir)}, complete '
        f'or being written (complete steps: {checkpointing.complete_steps(workdir)})'
      )
    if time.monotonic() > deadline:
      raise TimeoutError(
        f'checkpoint {step} was still being written after {timeout:.0f} s ({pending[0]})'
      )
    logging.info('checkpoint %d is still being written; waiting', step)
    time.sleep(min(poll, 5.0))


def evaluate_checkpoint(
  config: ml_collections.ConfigDict, workdir: str, step: int, model: nnx.Module
) -> dict[str, Any]:
  """Restores `step`'s parameters into `model` and scores it; writes and prints the result."""
  check_checkpoint_config(config, workdir, step)
  checkpointing.restore_params(workdir, step, model)  # No params item: FileNotFoundError.
  start = time.perf_counter()
  result = {
    'step': step,
    'policy': 'gato',
    'time': time.time(),
    'eval_config': config.eval.to_dict(),
    **evaluate(config, model),
  }
  result['seconds'] = time.perf_counter() - start
  report(workdir, step, result)
  return result


def pending_steps(workdir: str) -> list[int]:
  """Complete checkpoints without a result yet, oldest first (a restarted watcher resumes)."""
  return [
    s
    for s in checkpointing.complete_steps(workdir)
    if not tf.io.gfile.exists(result_path(workdir, s))
  ]


def watch(
  config: ml_collections.ConfigDict,
  workdir: str,
  model: nnx.Module,
  last_step: int | None = None,
  idle_timeout: float | None = None,
) -> list[int]:
  """Evaluates every new complete checkpoint until `last_step` is scored (or idle too long).

  A checkpoint that cannot be evaluated (missing parameters, a mismatched model, a task
  whose environments keep failing) is logged and recorded in its JSON as an error, so the
  watcher moves on to the next one.
  """
  done, idle_since = [], time.monotonic()
  while True:
    steps = pending_steps(workdir)
    for step in steps:
      try:
        evaluate_checkpoint(config, workdir, step, model)
      except (FileNotFoundError, ValueError, RuntimeError) as e:
        logging.error('checkpoint %d cannot be evaluated: %s', step, e)
        write_json(result_path(workdir, step), {'step': step, 'error': f'{type(e).__name__}: {e}'})
      done.append(step)
    if steps:
      idle_since = time.monotonic()
    finished = last_step is not None and any(s >= last_step for s in done)
    if finished or (idle_timeout is not None and time.monotonic() - idle_since > idle_timeout):
      return done
    time.sleep(config.eval.poll_seconds)


# ----------------------------------------------------------------------------------------
# The process
# ----------------------------------------------------------------------------------------


def make_model(config: ml_collections.ConfigDict) -> nnx.Module:
  """The model on this process's first device, whatever mesh trained the checkpoints."""
  with jax.default_device(jax.local_devices()[0]):
    return from_config(config, nnx.Rngs(0))


def define_flags() -> None:
  """The command line's flags, defined only when this runs as a program, so that importing
  the evaluator (tests, notebooks) does not claim --config next to another tool's."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'The training run directory.')
  flags.DEFINE_integer(
    'step',
    None,
    'Evaluate this checkpoint once and exit (-1: the newest complete one); without it, '
    'watch for new checkpoints.',
  )
  flags.DEFINE_enum(
    'policy', 'gato', POLICIES, "'gato' scores checkpoints; 'expert' or 'random' the references."
  )
  flags.DEFINE_float(
    'idle_timeout',
    None,
    'Stop watching after this many seconds without a new checkpoint (default: wait for '
    'config.total_steps).',
  )


def main(argv: Sequence[str]) -> None:
  del argv
  args = flags.FLAGS
  config, workdir = args.config, args.workdir
  if config is None or not workdir:
    raise app.UsageError('--config and --workdir are required')
  validate(config)
  if args.policy != 'gato':
    result = {
      'step': None,
      'policy': args.policy,
      'time': time.time(),
      'eval_config': config.eval.to_dict(),
      **evaluate(config, None, args.policy),
    }
    report(workdir, args.policy, result)
    return
  model = make_model(config)
  if args.step is not None:
    step = args.step
    if step == -1:
      steps = checkpointing.complete_steps(workdir)
      if not steps:
        raise app.UsageError(f'--step=-1: no complete checkpoint in {workdir}/checkpoints')
      step = steps[-1]
    wait_for_step(workdir, step, config.eval.wait_seconds, config.eval.poll_seconds)
    evaluate_checkpoint(config, workdir, step, model)
    return
  last = config.get('total_steps')
  logging.info(
    'watching %s for checkpoints up to step %s', checkpointing.checkpoint_dir(workdir), last
  )
  watch(config, workdir, model, last_step=last, idle_timeout=args.idle_timeout)


if __name__ == '__main__':
  define_flags()
  app.run(main)
