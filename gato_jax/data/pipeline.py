"""From config to this host's batches: settings, a check of the datasets, the seqio mixture.

`mixture_dataset` is what `gato_jax.data.make_iterator` calls for `data.source='mixture'`:
it makes the config's settings current for the registered tasks, checks that every dataset
the mixture reads is there (`python -m data_pipelines.prepare` writes them; this library
only reads), checks every task against the model before anything runs, and asks seqio for
this process's shard of the mixture, converted (packed with `data.pack`) and batched.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import seqio
import tensorflow as tf
from absl import flags
from ml_collections import config_flags

from gato_jax import model as gato_model
from gato_jax import specs
from gato_jax.data import captions, episodes, options, public_rlds, sources, tasks
from gato_jax.data.feature_converter import GatoFeatureConverter
from gato_jax.data.preprocessors import PATCH_FEATURES, TOKEN_FEATURES


@dataclasses.dataclass(frozen=True)
class RequiredDataset:
  """One dataset a mixture reads from `data.data_dir`, which this library never writes."""

  what: str  # 'episodes <dataset>' or 'drawn-shape captions', for messages.
  path: str
  source: sources.EpisodeSource | None = None  # None for the drawn-shape captions.

  @property
  def prepared(self) -> bool:
    return episodes.is_prepared(self.path)


def required_datasets(config: Any) -> list[RequiredDataset]:
  """The episode and caption datasets `config.data.mixture` reads from `data.data_dir`.

  Datasets TFDS knows by name (c4, coco_captions) and local text files are not listed:
  they are read where TFDS or the config puts them.
  """
  tasks.register_from_config(config)
  data_dir, mixture = config.data.data_dir, config.data.mixture
  required = [
    RequiredDataset(f'episodes {s.dataset}', episodes.dataset_dir(s.dataset, data_dir), s)
    for s in tasks.episode_sources(mixture)
  ]
  if tasks.caption_tasks(mixture):
    required.append(RequiredDataset('drawn-shape captions', captions.shapes_dir(data_dir)))
  return required


def prepare_command() -> str:
  """The command that writes this run's datasets: `data_pipelines.prepare` with the running
  program's own --config and overrides when it was started with them."""
  config = '<the config this run was given>'
  overrides: dict[str, Any] = {}
  if 'config' in flags.FLAGS and flags.FLAGS.is_parsed() and flags.FLAGS['config'].present:
    config = config_flags.get_config_filename(flags.FLAGS['config'])
    overrides = config_flags.get_override_values(flags.FLAGS['config'])
  args = ''.join(f' --config.{k}={v}' for k, v in sorted(overrides.items()))
  return f'python -m data_pipelines.prepare --config={config}{args}'


def check_datasets(config: Any) -> None:
  """Every dataset the mixture reads is there and complete, or an error naming the command
  that writes them. The trainer only reads: generating data is `data_pipelines.prepare`'s job.
  """
  missing = [d for d in required_datasets(config) if not d.prepared]
  if missing:
    listed = '; '.join(f'{d.what} ({d.path})' for d in missing)
    raise FileNotFoundError(
      f'mixture {config.data.mixture} lacks {len(missing)} dataset(s) under data_dir '
      f'{config.data.data_dir}: {listed}. Write them first with: {prepare_command()}'
    )


def check_reachable(config: Any) -> None:
  """Every dataset the mixture reads in place (public RLDS sources, C4 and other TFDS names)
  opens, or an error naming the task, the dataset and where it looked, before any step.

  Offline, seqio would otherwise stop with "Task gato_c4 has no splits".
  """
  tasks.register_from_config(config)
  opts = options.current()
  for source in tasks.public_sources(config.data.mixture):
    public_rlds.builder(source, opts.public_data_dir or None)
  for task in tasks.members(config.data.mixture):
    if not isinstance(task.source, seqio.TfdsDataSource):
      continue
    loader = task.source.tfds_dataset
    try:
      loader.builder  # noqa: B018 (opening it is the check)
    except Exception as e:  # TFDS raises many types; the message names the dataset.
      reason = (str(e).strip() or type(e).__name__).splitlines()[0]
      raise public_rlds.DatasetUnavailableError(
        f'task {task.name}: cannot open TFDS dataset {loader.name} in '
        f'{loader.data_dir or "the default TFDS data directory"}: {reason}. A dataset TFDS '
        'prepares from the internet needs the network once; `python -m '
        'data_pipelines.public_rlds check --mixture=' + config.data.mixture + '` lists what a '
        'mixture cannot reach.'
      ) from e


def check_tasks(config: Any) -> None:
  """Every episode task fits the model, and a timestep fits a sequence, before any step."""
  tasks.register_from_config(config)
  for task in tasks.episode_specs(config.data.mixture):
    spec = specs.get_spec(task)
    gato_model.check_task_fits(spec, gato_model.ModelOptions.from_config(config))
    if spec.tokens_per_timestep > config.model.max_length:
      raise ValueError(
        f'task {task}: one timestep is {spec.tokens_per_timestep} tokens, more than config '
        f'key model.max_length ({config.model.max_length}); no window could hold an action'
      )


def mixture_dataset(
  config: Any, batch_size: int, process_index: int, process_count: int, seed: int
) -> tf.data.Dataset:
  """This process's endless, batched stream of `config.data.mixture`."""
  opts = options.from_config(config)
  options.configure(opts)
  tasks.register_from_config(config)
  try:
    seqio.get_mixture_or_task(config.data.mixture)
  except ValueError as e:
    raise ValueError(f'config key data.mixture: {e}') from e
  check_datasets(config)
  check_tasks(config)
  check_reachable(config)
  length = opts.sequence_length
  logging.info(
    'data: %s, shard %d of %d, seed %d', config.data.mixture, process_index, process_count, seed
  )
  return seqio.get_dataset(
    config.data.mixture,
    task_feature_lengths={k: length for k in (*TOKEN_FEATURES, *PATCH_FEATURES)},
    feature_converter=GatoFeatureConverter(pack=opts.pack),
    dataset_split='train',
    shuffle=True,
    num_epochs=None,
    shard_info=seqio.ShardInfo(process_index, process_count),
    seed=seed,
    batch_size=batch_size,
    verbose=False,
  )
