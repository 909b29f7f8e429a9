"""Text sources for Gato's language data: TFDS text datasets by name, or local files offline.

Both give a tf.data.Dataset of {'text': string}, what the seqio text task consumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds


def local_text_dataset(paths: Sequence[str]) -> tf.data.Dataset:
  """One example per non-empty line of UTF-8 text files (documents separated by newlines)."""
  missing = [p for p in paths if not tf.io.gfile.exists(p)]
  if missing:
    raise FileNotFoundError(f'text files not found: {missing}')
  ds = tf.data.TextLineDataset(list(paths))
  ds = ds.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0)
  return ds.map(lambda line: {'text': line})


def tfds_text_dataset(
  name: str = 'c4/en', split: str = 'train', data_dir: str | None = None, text_key: str = 'text'
) -> tf.data.Dataset:
  """A TFDS text dataset by name (c4, wikipedia, ...), its `text_key` renamed to 'text'."""
  ds = tfds.load(name, split=split, data_dir=data_dir)
  if text_key not in ds.element_spec:
    raise ValueError(
      f'dataset {name}: no field {text_key!r} (fields: {sorted(ds.element_spec)}); pass text_key='
    )
  return ds.map(lambda example: {'text': example[text_key]})
