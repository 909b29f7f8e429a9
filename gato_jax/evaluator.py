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

A checkpoint is scored as the model it was trained as: the settings that fix what its
parameters compute come from the config its `meta` item recorded (`run_config`), and a
line names each one --config's file gives otherwise; one set on the command line
(--config.model.KEY=...) that the checkpoint contradicts is refused, naming the key.
--config supplies everything else: `eval.*`, the data directory, execution keys.

Only the `params` item is read, onto this process's own devices (one device: the model is
small next to a trainer's and sampling is sequential), whatever mesh wrote it. For each
task (`config.eval`, configs/common.py eval_config) the policy loop of gato_jax/policy.py
runs `eval.episodes` episodes (gato_jax/envs/runner.py), prompted with demonstrations from
the task's dataset; gato_jax/scores.py summarizes them and gato_jax/reporting.py writes
WORKDIR/eval/<step>.json and .png, TensorBoard scalars and a table on stdout. The expert
(100%) and random (0%) returns are those the dataset recorded when it was generated
(gato_jax/data/episodes.py, metadata.json). Each task also gets teacher-forced action
metrics on held-out expert episodes (`offline`, gato_jax/action_metrics.py), as do the
dataset-only sources of `eval.offline_tasks` (`offline_only`). docs/evaluation.md explains
every field.
"""

from __future__ import annotations

import copy
import itertools
import json
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

from gato_jax import action_metrics, checkpointing, fingerprint, policy, reporting, scores, specs
from gato_jax import tokenizer as tok
from gato_jax.envs import runner
from gato_jax.model import ModelOptions, check_task_fits, from_config

POLICIES = ('gato', 'expert', 'random')
# ----------------------------------------------------------------------------------------
# Settings, checked once at start-up
# ----------------------------------------------------------------------------------------


def eval_tasks(config: ml_collections.ConfigDict) -> list[str]:
  """`eval.tasks`, or the environment tasks of the training mixture when it is empty (none
  when it has none and `eval.offline_tasks` names dataset-only tasks to score)."""
  names = [t.strip() for t in config.eval.tasks.split(',') if t.strip()]
  if not names:
    from gato_jax.data import tasks  # Registers the seqio tasks; only needed here.

    tasks.register_from_config(config)
    names = tasks.episode_tasks(config.data.mixture)
    if not names and config.eval.offline_tasks.strip():
      return []  # Only dataset-only tasks to score (eval.offline_tasks).
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
  if not isinstance(e.offline_episodes, int) or e.offline_episodes < 0:
    raise ValueError(
      f'config key eval.offline_episodes must be an int >= 0, got {e.offline_episodes!r}'
    )
  if not e.temperature >= 0:
    raise ValueError(f'config key eval.temperature must be >= 0, got {e.temperature}')
  for key in ('poll_seconds', 'wait_seconds', 'writer_alive_seconds'):
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


def offline_seed(config: ml_collections.ConfigDict) -> int:
  """First seed of the held-out expert episodes: a million past the closed-loop episodes'
  (eval.seed), which are themselves far from the dataset's expert (0, 1, ...) and random
  (1_000_000, ...) seeds, so no level was trained on or is also played."""
  return config.eval.seed + 1_000_000


def offline_metrics(
  task: str,
  config: ml_collections.ConfigDict,
  model: nnx.Module,
  task_tokenizer: specs.TaskTokenizer,
) -> dict[str, Any] | None:
  """Teacher-forced action metrics (gato_jax/action_metrics.py) on `eval.offline_episodes`
  held-out expert episodes, capped as the played ones are; None when that is 0."""
  count = config.eval.offline_episodes
  if count == 0:
    return None
  start = time.perf_counter()
  held_out = action_metrics.expert_episodes(
    task, task_tokenizer, count, offline_seed(config), max_steps(config), config.eval.batch_size
  )
  out = action_metrics.evaluate_episodes(model, task_tokenizer, held_out, model.max_length)
  out['seconds'] = time.perf_counter() - start
  return out


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
  check_task_fits(spec, ModelOptions.from_config(config))
  task_tokenizer = spec.tokenizer(tok.layout_from_config(config), vocabulary)
  references = episodes.read_metadata(task, data_dir)
  if policy_kind == 'gato':
    fraction = config.data.get('min_return_fraction', 0.0)
    demos = demonstrations(task, data_dir, e.prompt_episodes, references, fraction)
    actor = policy.GatoPolicy(model, task_tokenizer, demos, sampling_options(config), seed=e.seed)
  else:
    actor = runner.EnvPolicy(task_tokenizer, policy_kind)
  start = time.perf_counter()
  results = runner.run_episodes(
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
  summary = scores.summarize(task, results, references, seconds)
  # The reference policies have no model to score: their `offline` is None.
  summary['offline'] = (
    offline_metrics(task, config, model, task_tokenizer) if policy_kind == 'gato' else None
  )
  return summary


def evaluate(
  config: ml_collections.ConfigDict,
  model: nnx.Module | None,
  policy_kind: str = 'gato',
) -> dict[str, Any]:
  """Every task of `config.eval`; returns {'tasks': {...}, 'aggregate': {...}}."""
  vocabulary = None
  names = eval_tasks(config)
  options = ModelOptions.from_config(config)
  for task in names:
    spec = specs.get_spec(task)
    check_task_fits(spec, options)  # Every task before the first episode runs.
    if vocabulary is None and any(isinstance(f, tok.TextField) for f in spec.observation):
      vocabulary = tok.vocabulary_from_config(config)
  sources = offline_sources(config) if policy_kind == 'gato' else []
  for source in sources:
    spec = specs.get_spec(source.spec)
    check_task_fits(spec, options)
    if vocabulary is None and any(isinstance(f, tok.TextField) for f in spec.observation):
      vocabulary = tok.vocabulary_from_config(config)
  task_results = {}
  for task in names:
    logging.info('evaluating %s (%s policy)', task, policy_kind)
    task_results[task] = evaluate_task(task, config, model, policy_kind, vocabulary)
  out = {'tasks': task_results, 'aggregate': scores.aggregate(task_results)}
  if sources:
    out['offline_only'] = {
      s.name: dataset_offline_metrics(s, config, model, vocabulary) for s in sources
    }
  return out


# ----------------------------------------------------------------------------------------
# Dataset-only tasks: teacher-forced metrics from a public dataset's logged episodes
# ----------------------------------------------------------------------------------------


def offline_sources(config: ml_collections.ConfigDict) -> list[Any]:
  """`eval.offline_tasks`: public RLDS sources (gato_jax/data/public_rlds.py: the catalog's
  and `data.public_sources`), each checked to exist before any episode runs."""
  names = [n.strip() for n in config.eval.offline_tasks.split(',') if n.strip()]
  if not names or config.eval.offline_episodes == 0:
    return []
  from gato_jax.data import public_rlds, tasks  # Registers the catalog's sources.

  tasks.register_from_config(config)
  try:
    return [public_rlds.get(n) for n in names]
  except ValueError as e:
    raise ValueError(f'config key eval.offline_tasks: {e}') from None


def dataset_offline_metrics(
  source: Any, config: ml_collections.ConfigDict, model: nnx.Module, vocabulary: Any
) -> dict[str, Any]:
  """Teacher-forced action metrics on the first `eval.offline_episodes` episodes of
  `eval.offline_split` of a public source, read as training reads them (acted steps only)."""
  from gato_jax.data import episodes, public_rlds

  e = config.eval
  spec = specs.get_spec(source.spec)
  task_tokenizer = spec.tokenizer(tok.layout_from_config(config), vocabulary)
  start = time.perf_counter()
  data_dir = config.data.get('public_data_dir', '') or None
  read = public_rlds.episode_dataset(source, data_dir, split=e.offline_split)
  held_out = []
  for example in read.take(e.offline_episodes).as_numpy_iterator():
    # as_numpy's arrays are read-only; check_steps decodes text in place.
    writable = {k: np.array(v) for k, v in example['observation'].items()}
    observations, actions = spec.check_steps(writable, example['action'])
    held_out.append(episodes.acted_steps(observations, actions))
  out = action_metrics.evaluate_episodes(model, task_tokenizer, held_out, model.max_length)
  out.update(spec=source.spec, split=e.offline_split, seconds=time.perf_counter() - start)
  return out


# ----------------------------------------------------------------------------------------
# Checkpoints: the model each was trained as, one step, or watching a run
# ----------------------------------------------------------------------------------------


def run_config(
  config: ml_collections.ConfigDict,
  workdir: str,
  step: int,
  explicit: Sequence[str] = (),
  allowed: frozenset[str] = frozenset(),
) -> ml_collections.ConfigDict:
  """The config checkpoint `step` is scored with: --config, as the model it was trained as.

  Every setting of the run's fingerprint (fingerprint.config_differences: model.* but
  EXECUTION_KEYS, tokenizer.*, and data.mixture, whose env tasks are the default eval
  tasks) comes from the config the checkpoint's `meta` item recorded, with one printed
  line for each that --config gives otherwise: a rope checkpoint is scored as rope
  whatever --config's file says. A key in `explicit` (set on the command line, e.g.
  'model.position_encoding') that the checkpoint contradicts is refused instead, naming
  it, unless it is in `allowed` (--allow_config_change): then --config's value is used,
  with a printed line. Without a `meta` item --config is used as it is (logged by
  fingerprint.model_differences).
  """
  differ = fingerprint.model_differences(config, workdir, step)
  keep = [d for d in differ if fingerprint.is_allowed(d.key, allowed)]
  refused = [str(d) for d in differ if d.key in explicit and d not in keep]
  if refused:
    raise ValueError(
      f'checkpoint {step} in {workdir} was trained as another model than the command line '
      f'asks for: {"; ".join(refused)} (without those flags it is scored as trained; '
      '--allow_config_change=KEY scores it with the flag\'s value on purpose)'
    )
  for d in keep:
    print(f'checkpoint {step}: {d}: using the config\'s (--allow_config_change)', flush=True)
  differ = [d for d in differ if d not in keep]
  if not differ:
    return config
  out = copy.deepcopy(config)
  with out.ignore_type():  # JSON keeps ints and floats apart less strictly than ConfigDict.
    for d in differ:
      section, name = d.key.split('.')
      out[section][name] = d.checkpoint  # As recorded, or as implied (fingerprint).
      print(f"checkpoint {step}: {d}: using the checkpoint's", flush=True)
  return out


def command_line_keys() -> tuple[str, ...]:
  """The fingerprint keys this process's command line set (--config.K=V): `model.*`,
  `tokenizer.*` and RUN_KEYS."""
  overrides = config_flags.get_override_values(flags.FLAGS['config'])
  return tuple(
    k for k in overrides
    if k.split('.')[0] in fingerprint.SECTIONS or k in fingerprint.RUN_KEYS
  )


class Models:
  """The model each checkpoint is scored with, built from the config `run_config` gave.

  A run's checkpoints share their model settings, so one model is built and only its
  parameters are restored per checkpoint; a checkpoint of other settings gets its own.
  """

  def __init__(self):
    self.model: nnx.Module | None = None
    self._settings: tuple[str, ...] | None = None

  def restore(self, config: ml_collections.ConfigDict, workdir: str, step: int) -> nnx.Module:
    settings = tuple(config[s].to_json_best_effort(sort_keys=True) for s in fingerprint.SECTIONS)
    if settings != self._settings:
      self.model, self._settings = make_model(config), settings
    checkpointing.restore_params(workdir, step, self.model)  # No params: FileNotFoundError.
    return self.model


def last_modified(path: str) -> float:
  """Seconds since the newest change to anything under `path` (gfile: gs:// too)."""
  newest = tf.io.gfile.stat(path).mtime_nsec
  for directory, subdirectories, files in tf.io.gfile.walk(path):
    for name in subdirectories + files:
      try:
        newest = max(newest, tf.io.gfile.stat(os.path.join(directory, name)).mtime_nsec)
      except tf.errors.NotFoundError:  # Orbax renamed or removed it meanwhile.
        pass
  return time.time() - newest / 1e9


def being_written(workdir: str, step: int) -> list[str]:
  """`step`'s tmp directories (Orbax's `<step>.orbax-checkpoint-tmp*`)."""
  return tf.io.gfile.glob(os.path.join(checkpointing.checkpoint_dir(workdir), f'{step}.*tmp*'))


def wait_for_step(
  workdir: str, step: int, timeout: float, poll: float, alive: float = 600.0
) -> None:
  """Returns once `step` is complete; waits while a live writer is still writing it.

  A writer is alive while something in the step's tmp directory changed within `alive`
  seconds (`eval.writer_alive_seconds`). A leftover of a killed trainer stops the wait at
  once with an error naming it, instead of the whole `timeout`.
  """
  deadline = time.monotonic() + timeout
  while step not in checkpointing.complete_steps(workdir):
    pending = being_written(workdir, step)
    # Orbax may finish (rename tmp -> step) between the two looks: only then is it complete.
    if not pending and step in checkpointing.complete_steps(workdir):
      return
    if not pending:
      raise FileNotFoundError(
        f'no checkpoint for step {step} in {checkpointing.checkpoint_dir(workdir)}, complete '
        f'or being written (complete steps: {checkpointing.complete_steps(workdir)})'
      )
    try:
      idle = last_modified(pending[0])
    except tf.errors.NotFoundError:
      continue  # Renamed while looked at: the next look finds it complete.
    if idle > alive:
      raise FileNotFoundError(
        f'checkpoint {step} is not complete, and nothing has written to its leftover '
        f'{pending[0]} for {idle:.0f} s (more than eval.writer_alive_seconds={alive:g}): '
        'the trainer that wrote it is gone. Score a complete step instead '
        f'(complete steps: {checkpointing.complete_steps(workdir)})'
      )
    if time.monotonic() > deadline:
      raise TimeoutError(
        f'checkpoint {step} was still being written after {timeout:.0f} s ({pending[0]})'
      )
    logging.info('checkpoint %d is still being written; waiting', step)
    time.sleep(min(poll, 5.0))


def check_workdir(workdir: str) -> None:
  """Fails at start-up, naming the directory, rather than after every episode has run.

  The workdir must exist (a watcher on a mistyped path would otherwise wait forever), and
  WORKDIR/eval must be writable: the results, the plots and the table come at the end.
  """
  if not tf.io.gfile.isdir(workdir):
    raise FileNotFoundError(
      f'--workdir {workdir} does not exist or is not a directory: there is no run to evaluate'
      ' (start the evaluator once the trainer has created it)'
    )
  for directory in (reporting.eval_dir(workdir), os.path.join(workdir, 'tensorboard', 'eval')):
    existing = directory  # Probed where it would be created: nothing is left behind.
    while not tf.io.gfile.exists(existing) and existing != workdir:
      existing = os.path.dirname(existing)
    probe = os.path.join(existing, f'.writable-{os.getpid()}')
    try:
      with tf.io.gfile.GFile(probe, 'w') as f:
        f.write('')
      tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as e:
      raise PermissionError(
        f'cannot write the evaluation results to {directory} ({type(e).__name__}: {e}); '
        'nothing was evaluated. Make it writable, or copy the checkpoints to a workdir that is'
      ) from e


def newest_good_step(workdir: str) -> int:
  """--step=-1: the newest complete step whose parameters verify; damaged ones are logged."""
  step = checkpointing.newest_verified_step(workdir, ('params', 'meta'))
  if step is not None:
    return step
  steps = checkpointing.complete_steps(workdir)
  raise FileNotFoundError(
    f'--step=-1: no complete checkpoint in {checkpointing.checkpoint_dir(workdir)} '
    + (f'verifies (damaged: {steps})' if steps else '')
  )


def evaluate_checkpoint(
  config: ml_collections.ConfigDict,
  workdir: str,
  step: int,
  models: Models | None = None,
  explicit: Sequence[str] = (),
  allowed: frozenset[str] = frozenset(),
) -> dict[str, Any]:
  """Scores `step` as the model it was trained as (`run_config`); writes and prints it.

  Damaged bytes (checkpointing.verify_step) raise DamagedCheckpoint naming the file
  before anything is read: `meta` here, the parameters in `restore_params`.
  """
  checkpointing.verify_step(workdir, step, ('meta',))
  config = run_config(config, workdir, step, explicit, allowed)
  model = (models or Models()).restore(config, workdir, step)
  start = time.perf_counter()
  result = {
    'step': step,
    'policy': 'gato',
    'time': time.time(),
    'eval_config': config.eval.to_dict(),
    **evaluate(config, model),
  }
  result['seconds'] = time.perf_counter() - start
  reporting.report(workdir, step, result)
  return result


def pending_steps(workdir: str) -> list[int]:
  """Complete checkpoints without a result yet, oldest first (a restarted watcher resumes).

  A step whose result is an `error` is pending again once the step was written after that
  result: the trainer set a damaged step aside and saved it afresh.
  """
  return [s for s in checkpointing.complete_steps(workdir) if not scored(workdir, s)]


def scored(workdir: str, step: int) -> bool:
  path = reporting.result_path(workdir, step)
  if not tf.io.gfile.exists(path):
    return False
  with tf.io.gfile.GFile(path) as f:
    if 'error' not in json.load(f):
      return True
  rewritten = tf.io.gfile.stat(checkpointing.step_dir(workdir, step)).mtime_nsec
  return rewritten <= tf.io.gfile.stat(path).mtime_nsec


def watch(
  config: ml_collections.ConfigDict,
  workdir: str,
  last_step: int | None = None,
  idle_timeout: float | None = None,
  explicit: Sequence[str] = (),
  allowed: frozenset[str] = frozenset(),
) -> list[int]:
  """Evaluates every new complete checkpoint until `last_step` is scored (or idle too long).

  A checkpoint that cannot be evaluated (missing parameters, damaged bytes, a model the
  command line contradicts, a task whose environments keep failing, any error of the
  restore) is logged and recorded in its JSON as `error`, so the watcher moves on to the
  next one. A tmp directory of a step nothing writes to any more is named once and skipped.
  """
  models = Models()
  done, idle_since, leftovers = [], time.monotonic(), set()
  while True:
    steps = pending_steps(workdir)
    for step in steps:
      try:
        evaluate_checkpoint(config, workdir, step, models, explicit, allowed)
      except Exception as e:  # TensorStore raises bare Exceptions; one step never ends the watch.
        logging.error('checkpoint %d cannot be evaluated: %s', step, e)
        error = {'step': step, 'error': f'{type(e).__name__}: {e}'}
        reporting.write_json(reporting.result_path(workdir, step), error)
      done.append(step)
    if steps:
      idle_since = time.monotonic()
    for leftover in dead_leftovers(workdir, config.eval.writer_alive_seconds) - leftovers:
      logging.warning('skipping %s: nothing has written to it for more than '
                      'eval.writer_alive_seconds; the trainer that wrote it is gone', leftover)
      leftovers.add(leftover)
    finished = last_step is not None and any(s >= last_step for s in done)
    if finished or (idle_timeout is not None and time.monotonic() - idle_since > idle_timeout):
      return done
    time.sleep(config.eval.poll_seconds)


def dead_leftovers(workdir: str, alive: float) -> set[str]:
  """Tmp step directories nothing has written to within `alive` seconds."""
  dead = set()
  for path in tf.io.gfile.glob(os.path.join(checkpointing.checkpoint_dir(workdir), '*.*tmp*')):
    try:
      if last_modified(path) > alive:
        dead.add(path)
    except tf.errors.NotFoundError:
      pass  # Committed or cleaned up while looked at.
  return dead


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
  flags.DEFINE_list(
    'allow_config_change', [],
    'Config keys (comma-separated) whose --config value is used even where a checkpoint '
    'recorded another; each such key is printed.',
  )


def main(argv: Sequence[str]) -> None:
  del argv
  args = flags.FLAGS
  config, workdir = args.config, args.workdir
  if config is None or not workdir:
    raise app.UsageError('--config and --workdir are required')
  validate(config)
  if args.policy != 'gato':
    tf.io.gfile.makedirs(workdir)  # The references need no run: only somewhere to write.
    check_workdir(workdir)
    result = {
      'step': None,
      'policy': args.policy,
      'time': time.time(),
      'eval_config': config.eval.to_dict(),
      **evaluate(config, None, args.policy),
    }
    reporting.report(workdir, args.policy, result)
    return
  explicit = command_line_keys()
  check_workdir(workdir)
  allowed = fingerprint.parse_allowed(args.allow_config_change, config)
  if args.step is not None:
    step = newest_good_step(workdir) if args.step == -1 else args.step
    e = config.eval
    wait_for_step(workdir, step, e.wait_seconds, e.poll_seconds, e.writer_alive_seconds)
    evaluate_checkpoint(config, workdir, step, explicit=explicit, allowed=allowed)
    return
  last = config.get('total_steps')
  logging.info(
    'watching %s for checkpoints up to step %s', checkpointing.checkpoint_dir(workdir), last
  )
  watch(config, workdir, last, args.idle_timeout, explicit, allowed)


if __name__ == '__main__':
  from gato_jax import cli  # Only the program needs it: the last line names the cause.

  define_flags()
  cli.run(main)
