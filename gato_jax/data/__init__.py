"""Training data for Gato: seqio tasks and mixtures, and the host's batch iterator.

What the trainer consumes: `make_iterator(config, batch_size, process_index,
process_count)` returns a `DataIterator` whose batches are dicts of numpy arrays, the
model's input contract plus the loss mask (every array of gato_jax/model/inputs.py), for
this host only, each [b, L, ...].

`config.data.source` picks the stream: 'mixture' (the seqio mixture `config.data.mixture`)
or 'synthetic' (random batches of the same shapes, to measure the trainer without input).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from gato_jax import tokenizer
from gato_jax.data.iterator import CorruptDataError, DataIterator
from gato_jax.model import inputs
from gato_jax.model.batch import synthetic_batch

__all__ = ['CorruptDataError', 'DataIterator', 'batch_shapes', 'make_iterator', 'synthetic_dataset']

SOURCES = ('mixture', 'synthetic')


def batch_shapes(batch_size: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Shape and dtype of every array of a host's batch."""
  return inputs.shapes((batch_size, length), inputs.BATCH)


def synthetic_dataset(batch_size: int, length: int, vocab_size: int, seed: int) -> tf.data.Dataset:
  """An endless stream of random batches; a pure function of the seed and the batch index."""

  def make(index: np.int64) -> tuple[np.ndarray, ...]:
    batch = synthetic_batch(batch_size, length, vocab_size, seed=seed * 1_000_003 + int(index))
    batch['loss_mask'] = np.isin(batch['kinds'], tokenizer.LOSS_KINDS).astype(np.int32)
    batch['segment_ids'] = (batch['kinds'] != tokenizer.TokenKind.PAD).astype(np.int32)
    return tuple(batch[k] for k in inputs.BATCH)

  spec = batch_shapes(batch_size, length)
  dtypes = [tf.as_dtype(spec[k].dtype) for k in inputs.BATCH]
  shapes = {k: list(spec[k].shape) for k in inputs.BATCH}

  def to_dict(index: tf.Tensor) -> dict[str, tf.Tensor]:
    arrays = tf.numpy_function(make, [index], dtypes, stateful=False)
    return {k: tf.ensure_shape(a, shapes[k]) for k, a in zip(inputs.BATCH, arrays, strict=True)}

  return tf.data.Dataset.range(2**62).map(to_dict)


def make_iterator(
  config: ml_collections.ConfigDict,
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
  seed: int | None = None,
) -> DataIterator:
  """This host's iterator: `batch_size` is the host-local batch (global / process_count)."""
  source = config.data.source
  seed = config.seed if seed is None else seed
  length = config.model.max_length
  directories: list[str] = []  # Dataset directories read, to name a corrupt file.
  if source == 'synthetic':
    vocab = tokenizer.layout_from_config(config).vocab_size
    ds = synthetic_dataset(batch_size, length, vocab, seed + 7919 * process_index)
  elif source == 'mixture':
    from gato_jax.data import pipeline  # Imports seqio and registers the tasks.

    ds = pipeline.mixture_dataset(config, batch_size, process_index, process_count, seed)
    directories = [d.path for d in pipeline.required_datasets(config)]
  else:
    raise ValueError(f'config.data.source must be one of {SOURCES}, got {source!r}')
  return DataIterator(ds.prefetch(2), process_index, process_count, directories)
