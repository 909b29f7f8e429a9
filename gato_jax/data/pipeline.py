"""From config to this host's batches: settings, datasets on first use, the seqio mixture.

`mixture_dataset` is what `gato_jax.data.make_iterator` calls for `data.source='mixture'`:
it makes the config's settings current for the registered tasks, generates missing
datasets when the config allows it (the CPU demo does; a pod reads prepared ones), checks
every task against the model before anything runs, and asks seqio for this process's shard
of the mixture, converted and batched.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import seqio
import tensorflow as tf

from gato_jax import model as gato_model
from gato_jax import specs
from gato_jax.data import options
from gato_jax.data.feature_converter import GatoFeatureConverter
from gato_jax.data.preprocessors import PATCH_FEATURES, TOKEN_FEATURES

WAIT_FOR_DATA_S = 3600  # How long other processes wait for process 0 to generate data.


def _prepared(path: str) -> bool:
  return tf.io.gfile.exists(f'{path}/dataset_info.json')


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


def ensure_datasets(config: Any, process_index: int = 0) -> None:
  """Generates the mixture's missing episode and caption datasets (process 0 only).

  With `data.generate_missing` off, a missing dataset is an error that names the task and
  the command that generates it. Other processes wait for process 0's datasets to appear,
  so that every host reads the same episodes.
  """
  from data_pipelines import captions, episodes, tasks  # noqa: PLC0415

  data, mixture = config.data, config.data.mixture
  counts = episode_counts(data)
  episode_sources = {f'episodes {s.dataset}': s for s in tasks.episode_sources(mixture)}
  needed = {
    what: episodes.dataset_dir(s.dataset, data.data_dir) for what, s in episode_sources.items()
  }
  caption_builder = None
  if tasks.caption_tasks(mixture):
    caption_builder = captions.GatoShapesCaptions(
      data_dir=data.data_dir, examples=data.caption_examples, seed=config.seed
    )
    needed['drawn-shape captions'] = str(caption_builder.data_path)
  missing = {what: path for what, path in needed.items() if not _prepared(path)}
  if data.generate_missing:
    for what, source in episode_sources.items():
      if what not in missing:
        _check_generated(source, data, counts.get(source.task, data.episodes_per_task))
  if not missing:
    return
  if not data.generate_missing:
    commands = [
      f'python -m data_pipelines.generate --task={s.task} --policy={s.policy} '
      f'--data_dir={data.data_dir}'
      for what, s in episode_sources.items()
      if what in missing
    ]
    if 'drawn-shape captions' in missing:
      commands.append(f'python -m data_pipelines.captions --data_dir={data.data_dir}')
    raise FileNotFoundError(
      f'mixture {mixture} lacks {", ".join(sorted(missing))} under {data.data_dir} (config '
      f'data.generate_missing is off); generate them with: ' + '; '.join(commands)
    )
  if process_index != 0:
    deadline = time.monotonic() + WAIT_FOR_DATA_S
    while any(not _prepared(p) for p in missing.values()):
      if time.monotonic() > deadline:
        raise TimeoutError(f'process 0 did not write {sorted(missing)} under {data.data_dir}')
      time.sleep(5)
    return
  for what, path in missing.items():
    print(f'generating {what} into {path} (first use; config data.generate_missing)', flush=True)
  for what, source in episode_sources.items():
    if what in missing:
      episodes.generate(
        source.task,
        data.data_dir,
        policy=source.policy,
        episodes=counts.get(source.task, data.episodes_per_task),
        seed=config.seed,
        max_steps=data.max_episode_steps or None,
        random_episodes=data.random_episodes,
      )
  if caption_builder is not None:
    caption_builder.download_and_prepare()


def _check_generated(source: Any, data: Any, episodes_wanted: int) -> None:
  """A dataset generated earlier with another episode count is an error, not a silent reuse.

  With `data.generate_missing` on, the config describes the data; training on what an
  older config wrote would make its figures unreproducible from the config.
  """
  from data_pipelines import episodes  # noqa: PLC0415

  written = episodes.read_metadata(source.dataset, data.data_dir).get('episodes')
  if written is not None and written != episodes_wanted:
    path = episodes.dataset_dir(source.dataset, data.data_dir)
    key = 'data.task_episodes' if source.task in episode_counts(data) else 'data.episodes_per_task'
    raise ValueError(
      f'{path} holds {written} episodes of {source.task} but config key {key} asks for '
      f'{episodes_wanted}; remove that directory to generate it again, or use another '
      'data.data_dir'
    )


def check_tasks(config: Any) -> None:
  """Every episode task fits the model, and a timestep fits a sequence, before any step."""
  from data_pipelines import tasks  # noqa: PLC0415

  for task in tasks.episode_tasks(config.data.mixture):
    spec = specs.get_spec(task)
    gato_model.check_task_fits(spec, config.model)
    if spec.tokens_per_timestep > config.model.max_length:
      raise ValueError(
        f'task {task}: one timestep is {spec.tokens_per_timestep} tokens, more than config '
        f'key model.max_length ({config.model.max_length}); no window could hold an action'
      )


def mixture_dataset(
  config: Any, batch_size: int, process_index: int, process_count: int, seed: int
) -> tf.data.Dataset:
  """This process's endless, batched stream of `config.data.mixture`."""
  from data_pipelines import tasks  # noqa: F401, PLC0415 (registers the tasks)

  opts = options.from_config(config)
  options.configure(opts)
  try:
    seqio.get_mixture_or_task(config.data.mixture)
  except ValueError as e:
    raise ValueError(f'config key data.mixture: {e}') from e
  ensure_datasets(config, process_index)
  check_tasks(config)
  length = opts.sequence_length
  logging.info(
    'data: %s, shard %d of %d, seed %d', config.data.mixture, process_index, process_count, seed
  )
  return seqio.get_dataset(
    config.data.mixture,
    task_feature_lengths={k: length for k in (*TOKEN_FEATURES, *PATCH_FEATURES)},
    feature_converter=GatoFeatureConverter(),
    dataset_split='train',
    shuffle=True,
    num_epochs=None,
    shard_info=seqio.ShardInfo(process_index, process_count),
    seed=seed,
    batch_size=batch_size,
    verbose=False,
  )
