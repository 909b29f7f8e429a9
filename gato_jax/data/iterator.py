"""The host's training-data iterator: numpy batches out, its position saved and restored.

The trainer pulls host-local batches (the model's input contract plus `loss_mask`, see
gato_jax/data/__init__.py) and stores the iterator's position in every checkpoint, so that
a resumed run sees exactly the batches an uninterrupted one would. The position is the
tf.data iterator's own checkpoint (shuffle buffers, RNG states, file offsets), as in T5X:
one file set per process, named for the process index and count, because each host reads
its own shard.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf


class CorruptDataError(ValueError):
  """A dataset file failed its checksum, or was cut short, while the stream read it."""


def _tf_message(error: tf.errors.OpError) -> str:
  """A TF error's own words, without the op and function names around them."""
  text = re.sub(r'\{\{[^}]*\}\}|\[Op:[^\]]*\].*$', '', error.message, flags=re.S)
  return ' '.join(text.split()) or type(error).__name__


def _shard_lengths(directory: str) -> dict[str, int]:
  """Record counts per shard file, from the dataset_info.json TFDS wrote with the data."""
  try:
    with tf.io.gfile.GFile(os.path.join(directory, 'dataset_info.json')) as f:
      info = json.load(f)
  except (tf.errors.NotFoundError, ValueError):
    return {}
  lengths = {}
  for split in info.get('splits', []):
    counts = [int(n) for n in split.get('shardLengths', [])]
    for i, n in enumerate(counts):
      name = f'{info.get("name")}-{split["name"]}.tfrecord-{i:05d}-of-{len(counts):05d}'
      lengths[name] = n
  return lengths


def corrupt_files(directories: Sequence[str]) -> list[str]:
  """`<file>: <what is wrong>` for every record file under `directories` that is damaged.

  tf.data's errors ("corrupted record at 1562", "expected to contain 6 elements but
  contained only 4") name no file: the stream interleaves many. Each file is read once
  more on its own, with TFRecord's checksums, and its record count is compared with the
  dataset's dataset_info.json, to find the ones at fault. Only called after a failure, so
  a healthy run never pays for it.
  """
  bad = []
  for directory in directories:
    lengths = _shard_lengths(directory)
    for path in sorted(tf.io.gfile.glob(os.path.join(directory, '*.tfrecord*'))):
      records = 0
      try:
        for _ in tf.data.TFRecordDataset(path):
          records += 1
      except (tf.errors.DataLossError, tf.errors.OutOfRangeError) as e:
        bad.append(f'{path}: {_tf_message(e)}')
        continue
      expected = lengths.get(os.path.basename(path))
      if expected is not None and records != expected:
        bad.append(f'{path}: {records} records, but dataset_info.json says {expected} '
                   '(truncated?)')
  return bad


def state_prefix(directory: str, process_index: int, process_count: int) -> str:
  return os.path.join(directory, f'data-{process_index}-of-{process_count}')


class DataIterator:
  """Iterates a batched tf.data.Dataset as dicts of numpy arrays; save/restore its position.

  The pipeline may hold `tf.numpy_function` steps (tokenization runs in numpy); they are
  pure functions of their inputs, so the checkpoint ignores them as external state.
  """

  def __init__(self, dataset: tf.data.Dataset, process_index: int = 0, process_count: int = 1,
               directories: Sequence[str] = ()):
    """`directories`: the dataset directories the stream reads, for naming a corrupt file."""
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    options.deterministic = True
    self.dataset = dataset.with_options(options)
    self.process_index, self.process_count = process_index, process_count
    self.directories = tuple(directories)
    self._iterator = iter(self.dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

  def __iter__(self) -> DataIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    try:
      return {k: v.numpy() for k, v in next(self._iterator).items()}
    except (tf.errors.DataLossError, tf.errors.FailedPreconditionError) as e:
      # FailedPrecondition: TFDS found fewer records than its dataset_info.json promised.
      raise CorruptDataError(self._corruption(e)) from e

  def _corruption(self, error: tf.errors.OpError) -> str:
    """The message for a damaged dataset: which file, and what to do about it."""
    found = corrupt_files(self.directories)
    if found:
      where = '; '.join(found)
      return (f'corrupt training data: {where}. Remove that dataset directory and write it '
              'again (python -m data_pipelines.prepare)')
    read = ', '.join(self.directories) or 'datasets TFDS reads by name'
    return (f'corrupt training data in one of {read} (no single file fails on its own): '
            f'{_tf_message(error)}')

  @property
  def element_spec(self) -> dict[str, Any]:
    return self.dataset.element_spec

  def save(self, directory: str) -> str:
    """Writes this process's position under `directory`; returns the file prefix."""
    tf.io.gfile.makedirs(directory)
    prefix = state_prefix(directory, self.process_index, self.process_count)
    return self._checkpoint.write(prefix)

  def restore(self, directory: str) -> None:
    """Continues from the position saved by the same process of a run of the same size.

    A different process count reads different shards, so there is no position to take
    over: that raises, and the trainer decides (it restarts the stream with a new seed).
    """
    prefix = state_prefix(directory, self.process_index, self.process_count)
    if not tf.io.gfile.exists(prefix + '.index'):
      found = sorted(tf.io.gfile.glob(os.path.join(directory, 'data-*.index')))
      raise FileNotFoundError(
        f'no data-iterator state for process {self.process_index} of {self.process_count} '
        f'at {prefix} (found: {[os.path.basename(f) for f in found]})'
      )
    self._checkpoint.read(prefix).assert_consumed()
