"""Training data for Gato: seqio tasks and mixtures, and the host's batch iterator.

What the trainer consumes: `make_iterator(config, batch_size, process_index,
process_count)` returns a `DataIterator` whose batches are dicts of numpy arrays, the
model's input contract (gato_jax/model/__init__.py) plus the loss mask, for this host only:

  tokens           int32 [b, L]
  kinds            int32 [b, L]   tokenizer.TokenKind; PAD = 0 after the real tokens
  local_positions  int32 [b, L]
  patches          uint8 [b, L, 16, 16, 3]
  patch_positions  int32 [b, L, 4]
  loss_mask        int32 [b, L]   1 where the token is a training target (text and
                                  logged actions outside prompts)

`config.data.source` picks the stream: 'mixture' (the seqio mixture `config.data.mixture`)
or 'synthetic' (random batches of the same shapes, to measure the trainer without input).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import tensorflow as tf

from gato_jax import tokenizer
from gato_jax.data.iterator import DataIterator
from gato_jax.model.batch import synthetic_batch

__all__ = ['DataIterator', 'batch_shapes', 'make_iterator', 'synthetic_dataset']

SOURCES = ('mixture', 'synthetic')
_KEYS = ('tokens', 'kinds', 'local_positions', 'patches', 'patch_positions', 'loss_mask')


def batch_shapes(batch_size: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Shape and dtype of every array of a batch, as listed above."""
  p = tokenizer.PATCH_SIZE
  shapes = {
    'tokens': ((batch_size, length), np.int32),
    'kinds': ((batch_size, length), np.int32),
    'local_positions': ((batch_size, length), np.int32),
    'patches': ((batch_size, length, p, p, 3), np.uint8),
    'patch_positions': ((batch_size, length, 4), np.int32),
    'loss_mask': ((batch_size, length), np.int32),
  }
  return {k: jax.ShapeDtypeStruct(*shapes[k]) for k in _KEYS}


def synthetic_dataset(batch_size: int, length: int, vocab_size: int, seed: int) -> tf.data.Dataset:
  """An endless stream of random batches; a pure function of the seed and the batch index."""

  def make(index: np.int64) -> tuple[np.ndarray, ...]:
    batch = synthetic_batch(batch_size, length, vocab_size, seed=seed * 1_000_003 + int(index))
    loss = np.isin(batch['kinds'], tokenizer.LOSS_KINDS).astype(np.int32)
    return (*(batch[k] for k in _KEYS[:-1]), loss)

  spec = batch_shapes(batch_size, length)
  dtypes = [tf.as_dtype(spec[k].dtype) for k in _KEYS]
  shapes = {k: list(spec[k].shape) for k in _KEYS}

  def to_dict(index: tf.Tensor) -> dict[str, tf.Tensor]:
    arrays = tf.numpy_function(make, [index], dtypes, stateful=False)
    return {k: tf.ensure_shape(a, shapes[k]) for k, a in zip(_KEYS, arrays, strict=True)}

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
  if source == 'synthetic':
    vocab = tokenizer.layout_from_config(config).vocab_size
    ds = synthetic_dataset(batch_size, length, vocab, seed + 7919 * process_index)
  elif source == 'mixture':
    from gato_jax.data import pipeline  # Imports seqio and registers the tasks.

    ds = pipeline.mixture_dataset(config, batch_size, process_index, process_count, seed)
  else:
    raise ValueError(f'config.data.source must be one of {SOURCES}, got {source!r}')
  return DataIterator(ds.prefetch(2), process_index, process_count)
