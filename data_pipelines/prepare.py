r"""Writes every dataset a config's training mixture reads and does not have yet.

  python -m data_pipelines.prepare --config=configs/demo.py
  python -m gato_jax.train --config=configs/demo.py --workdir=runs/demo

The trainer and the evaluator only read data: a dataset missing under `data.data_dir` stops
them with an error that names this command. This step rolls out the mixture's episode
datasets (`data.episodes_per_task`, `data.task_episodes`, `data.random_episodes`,
`data.max_episode_steps`, seeded by `seed`) and draws its shape captions
(`data.caption_examples`). A complete dataset is kept, never rewritten; one written with
another episode count than the config asks for is an error, so that the config describes
the data a run trained on. Run it once, on one machine, before a multi-host job starts.

Datasets are independent, so `--processes` (default: this machine's cores) writes several
at once, each in its own process, longest first; what each writes is the same as alone.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

from absl import app, flags
from ml_collections import config_flags

from data_pipelines import captions, rollouts
from gato_jax import cli, envs, specs
from gato_jax.data import episodes, pipeline

_CONFIG: Any = None  # The --config flag, defined only when run as a script (see the end).
_PROCESSES: Any = None  # Likewise --processes.
# Rough cost of one episode step by domain, so the longest datasets start first and two
# processes finish together (the demo: Meta-World ~50 s, Breakout ~20 s, the rest ~15 s).
_STEP_COST = {'metaworld': 4.0, 'atari': 4.0}


def episode_counts(data: Any) -> dict[str, int]:
  """`data.task_episodes` ('task=n,task=n'): episodes to generate, where not the default."""
  counts = {}
  for item in filter(None, (data.get('task_episodes', '') or '').split(',')):
    task, _, n = item.partition('=')
    if not n.strip().isdigit() or int(n) <= 0:
      raise ValueError(
        f"config key data.task_episodes: {item!r} is not 'task=<episodes>' with episodes > 0"
      )
    specs.get_spec(task.strip())  # An unknown task raises, listing the known ones.
    counts[task.strip()] = int(n)
  return counts


def _check_count(dataset: pipeline.RequiredDataset, data: Any, counts: dict[str, int]) -> None:
  """A dataset written earlier with another episode count is an error, not a silent reuse."""
  source = dataset.source
  wanted = counts.get(source.task, data.episodes_per_task)
  written = episodes.read_metadata(source.dataset, data.data_dir).get('episodes')
  if written is not None and written != wanted:
    key = 'data.task_episodes' if source.task in counts else 'data.episodes_per_task'
    raise ValueError(
      f'{dataset.path} holds {written} episodes of {source.task} but config key {key} asks '
      f'for {wanted}; remove that directory to generate it again, or use another '
      'data.data_dir'
    )


def prepare(config: Any, processes: int = 1) -> list[pipeline.RequiredDataset]:
  """Generates the missing datasets of `config.data.mixture`, `processes` at a time;
  returns those it wrote."""
  data = config.data
  if data.source != 'mixture':
    print(f'data.source is {data.source!r}: no dataset to prepare')
    return []
  counts = episode_counts(data)
  key = 'config key data.'
  rollouts.check_settings(
    data.episodes_per_task, data.random_episodes, data.max_episode_steps or None,
    {'episodes': key + 'episodes_per_task', 'random_episodes': key + 'random_episodes',
     'max_steps': key + 'max_episode_steps'})
  rollouts.check_data_dir(data.data_dir, key + 'data_dir')
  required = pipeline.required_datasets(config)
  for dataset in required:
    if dataset.source is not None and dataset.prepared:
      _check_count(dataset, data, counts)
  missing = [d for d in required if not d.prepared]
  if not missing:
    print(f'mixture {data.mixture}: all {len(required)} datasets are in {data.data_dir}')
    return []
  for dataset in missing:
    print(f'generating {dataset.what} into {dataset.path}', flush=True)
  jobs = sorted((_job(d, config, counts) for d in missing), key=lambda j: -j[0])
  processes = min(processes, len(jobs))
  if processes <= 1:
    for _, what, args in jobs:
      _write(what, args)
    return missing
  # spawn, not fork: TensorFlow and the simulators hold threads a forked child would copy
  # in an unknown state.
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
    futures = {pool.submit(_write, what, args): what for _, what, args in jobs}
    for future in concurrent.futures.as_completed(futures):
      if future.exception() is not None:
        pool.shutdown(cancel_futures=True)  # The running ones finish or clean up after them.
        raise RuntimeError(f'generating {futures[future]} failed: '
                           f'{future.exception()}') from future.exception()
  return missing


def _job(dataset: pipeline.RequiredDataset, config: Any, counts: dict[str, int]
         ) -> tuple[float, str, dict[str, Any]]:
  """(estimated cost, what, arguments of `_write`) of one missing dataset."""
  data, source = config.data, dataset.source
  if source is None:
    return (data.caption_examples / 100, dataset.what,
            {'data_dir': data.data_dir, 'examples': data.caption_examples, 'seed': config.seed})
  episodes_ = counts.get(source.task, data.episodes_per_task)
  domain = envs.task_domain(source.task)
  cost = episodes_ * (data.max_episode_steps or 500) * _STEP_COST.get(domain, 1.0) / 1000
  return cost, dataset.what, {
    'task': source.task, 'data_dir': data.data_dir, 'policy': source.policy,
    'episodes': episodes_, 'seed': config.seed, 'max_steps': data.max_episode_steps or None,
    'random_episodes': data.random_episodes}


def _write(what: str, args: dict[str, Any]) -> str:
  """Writes one dataset (in this process or a pool's); module-level so that spawn can call it."""
  if 'task' in args:
    args = dict(args)
    rollouts.generate(args.pop('task'), args.pop('data_dir'), **args)
  else:
    captions.GatoShapesCaptions(**args).download_and_prepare()
  return what


def main(argv: Sequence[str]) -> None:
  del argv
  if _CONFIG.value is None:
    raise app.UsageError('--config is required, e.g. --config=configs/demo.py')
  if _PROCESSES.value < 1:
    raise app.UsageError(f'--processes must be at least 1, got {_PROCESSES.value}')
  prepare(_CONFIG.value, _PROCESSES.value)


if __name__ == '__main__':
  # Defined here, not at import, so that tests importing several scripts that each take
  # --config do not register the flag twice.
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to an ml_collections config.')
  _PROCESSES = flags.DEFINE_integer(
    'processes', os.cpu_count() or 1, 'Datasets written at once, each in its own process.')
  # Interrupted, TFDS keeps nothing that looks finished (see rollouts.generate).
  with cli.sigterm_during_startup('data_pipelines.prepare', 'before the datasets are complete'):
    cli.run(main)
