"""seqio data sources for the datasets this project writes: episodes, text files, captions.

`EpisodeSource` reads one task's RLDS episodes (gato_jax/data/episodes.py) and shards by
episode ranges (`tfds.even_splits`), so with `seqio.ShardInfo(process_index,
process_count)` each host reads its own disjoint part of every task without opening the
rest. Each example is one whole episode, steps stacked along time, plus the returns the
filter needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from gato_jax.data import captions, episodes, options, public_rlds, text

MAX_EPISODE_STEPS = 1 << 30  # Batches a whole `steps` dataset into one element.


def dataset_returns(dataset: str, data_dir: str) -> tuple[float, float]:
  """(expert return, random return) from the dataset's metadata.json.

  Unknown values are NaN: the filter then keeps every episode.
  """
  meta = episodes.read_metadata(dataset, data_dir)
  expert, random = meta.get('expert_return'), meta.get('random_return')
  return (
    math.nan if expert is None else float(expert),
    math.nan if random is None else float(random),
  )


class _TrainSource(seqio.DataSource):
  """A source with one 'train' split read on the fly: nothing for seqio to cache."""

  def __init__(self) -> None:
    super().__init__(splits=('train',), num_input_examples=None, caching_permitted=False)

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]


class EpisodeSource(_TrainSource):
  """One task's generated episodes; the data directory comes from options.current().

  `policy` picks the dataset: the expert's (the default), or e.g. 'random' for a dataset
  written with `data_pipelines.generate --policy=random`.
  """

  def __init__(self, task: str, policy: str = 'expert'):
    self.task, self.policy = task, policy
    self.dataset = episodes.dataset_name(task, policy)
    super().__init__()

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True  # Episode ranges (tfds.even_splits): each host opens only its own.

  def get_dataset(
    self,
    split: str = 'train',
    shuffle: bool = True,
    seed: int | None = None,
    shard_info: seqio.ShardInfo | None = None,
    *,
    sequence_length: Any = None,
    use_cached: bool = False,
    num_epochs: int | None = 1,
  ) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # The task repeats after preprocessing.
    opts = options.current()
    builder = episodes.load(self.dataset, opts.data_dir)
    if shard_info is not None and shard_info.num_shards > 1:
      split = tfds.even_splits(split, n=shard_info.num_shards)[shard_info.index]
    read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=1)
    ds = builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config)
    expert, random = dataset_returns(self.dataset, opts.data_dir)

    def whole_episode(example: dict[str, Any]) -> dict[str, Any]:
      steps = example['steps'].batch(MAX_EPISODE_STEPS).get_single_element()
      meta = example['episode_metadata']
      return {
        'observation': steps['observation'],
        'action': steps['action'],
        'episode_return': meta['episode_return'],
        'expert_return': tf.constant(expert, tf.float32),
        'random_return': tf.constant(random, tf.float32),
        'episode': tf.strings.join(
          [meta['env'], tf.strings.as_string(meta['seed'])], separator=' seed '
        ),
      }

    ds = ds.map(whole_episode)
    if shuffle:
      ds = ds.shuffle(opts.episode_shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds


class TextFileSource(_TrainSource):
  """Lines of local UTF-8 files (options.current().text_files), one document per line.

  Not shardable at the source: seqio shards its lines by example instead.
  """

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def get_dataset(
    self,
    split: str = 'train',
    shuffle: bool = True,
    seed: int | None = None,
    shard_info: seqio.ShardInfo | None = None,
    *,
    sequence_length: Any = None,
    use_cached: bool = False,
    num_epochs: int | None = 1,
  ) -> tf.data.Dataset:
    del split, shard_info, sequence_length, use_cached, num_epochs
    files = options.current().text_files
    if not files:
      raise ValueError('the local text task needs files: set config key data.text_files')
    ds = text.local_text_dataset(files)
    if shuffle:
      ds = ds.shuffle(1024, seed=seed, reshuffle_each_iteration=True)
    return ds


def caption_dataset_fn(name: str) -> Any:
  """A seqio FunctionDataSource dataset_fn for `captions.caption_dataset`."""

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    ds = captions.caption_dataset(name, split=split, data_dir=options.current().data_dir)
    if shuffle_files:
      ds = ds.shuffle(256, seed=seed, reshuffle_each_iteration=True)
    return ds

  return dataset_fn


class PublicEpisodeSource(_TrainSource):
  """A public RLDS dataset read in place (gato_jax/data/public_rlds.py), sharded by episode
  ranges like EpisodeSource; config key data.public_data_dir, when set, is where every public
  dataset is read from (a local mirror) instead of each source's own data_dir."""

  def __init__(self, source: public_rlds.Source):
    self.source = source
    super().__init__()

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def get_dataset(
    self,
    split: str = 'train',
    shuffle: bool = True,
    seed: int | None = None,
    shard_info: seqio.ShardInfo | None = None,
    *,
    sequence_length: Any = None,
    use_cached: bool = False,
    num_epochs: int | None = 1,
  ) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # The task repeats after preprocessing.
    opts = options.current()
    shard = None if shard_info is None else (shard_info.index, shard_info.num_shards)
    ds = public_rlds.episode_dataset(
      self.source, opts.public_data_dir or None, split, shard, shuffle=shuffle, seed=seed
    )
    if shuffle:
      ds = ds.shuffle(opts.episode_shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds
