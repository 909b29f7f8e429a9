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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from absl import app
from ml_collections import config_flags

from data_pipelines import captions, rollouts
from gato_jax import cli, specs
from gato_jax.data import episodes, pipeline

_CONFIG: Any = None  # The --config flag, defined only when run as a script (see the end).


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


def prepare(config: Any) -> list[pipeline.RequiredDataset]:
  """Generates the missing datasets of `config.data.mixture`; returns those it wrote."""
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
  for dataset in missing:
    source = dataset.source
    if source is None:
      builder = captions.GatoShapesCaptions(
        data_dir=data.data_dir, examples=data.caption_examples, seed=config.seed
      )
      builder.download_and_prepare()
      continue
    rollouts.generate(
      source.task,
      data.data_dir,
      policy=source.policy,
      episodes=counts.get(source.task, data.episodes_per_task),
      seed=config.seed,
      max_steps=data.max_episode_steps or None,
      random_episodes=data.random_episodes,
    )
  return missing


def main(argv: Sequence[str]) -> None:
  del argv
  if _CONFIG.value is None:
    raise app.UsageError('--config is required, e.g. --config=configs/demo.py')
  prepare(_CONFIG.value)


if __name__ == '__main__':
  # Defined here, not at import, so that tests importing several scripts that each take
  # --config do not register the flag twice.
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to an ml_collections config.')
  # Interrupted, TFDS keeps nothing that looks finished (see rollouts.generate).
  with cli.sigterm_during_startup('data_pipelines.prepare', 'before the datasets are complete'):
    cli.run(main)
