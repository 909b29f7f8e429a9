"""The Gato feature converter: task features -> exactly the model's fixed-shape inputs.

Tasks keep image patches compact (one per IMAGE token) so that shuffle buffers and the
data-iterator checkpoint stay small; here they are padded to L and scattered to the
positions of their IMAGE tokens, which is the layout the model's embedding consumes.
Patches stay uint8: normalization happens on the device.

Every row gets `segment_ids` (gato_jax/model/inputs.py): 1 on an unpacked row's real
tokens, or with packing (`data.pack`) 1, 2, ... for the sequences laid into the row, 0 at
PAD. Packing runs here, after the mixture has sampled its tasks, so that the mixture's
rates still count sequences (packing per task would make a task of short sequences,
captions, count several per row) and short sequences of every task share rows.

seqio's own packing (`FeatureConverter(pack=True)`, `seqio.utils.trim_and_pack_dataset`)
does not fit these features: it finds each sequence's length by counting non-zero values,
and here zeros are real values (local position 0 of text, loss mask 0 of prompts, token
id 0), and it takes rank-1 features only (patches are [n, 16, 16, 3]). `pack_sequences` is
a small greedy packer in the tf.data graph instead; seqio is told pack=False.
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

from gato_jax import tokenizer
from gato_jax.data.preprocessors import PATCH_FEATURES, TOKEN_FEATURES
from gato_jax.model import inputs

_Spec = seqio.FeatureConverter.FeatureSpec
_COMPACT = (*TOKEN_FEATURES, *PATCH_FEATURES)  # A sequence's task features.


def pack_sequences(ds: tf.data.Dataset, length: int) -> tf.data.Dataset:
  """Sequences of at most `length` tokens -> rows of whole sequences, with `segment_ids`.

  Greedy, one open row: a sequence that fits joins it (and a row filled to `length` goes
  out at once); one that does not fit sends out the longer of the two, the open row or
  itself, and the shorter stays open to gather more. Long windows thus pass straight
  through while short captions and crops collect together. Each input sends out at most
  one row, so this is one `scan`: deterministic, and its open row is part of the tf.data
  iterator checkpoint, so a resumed stream packs exactly as an uninterrupted one.

  No sequence is cut or dropped: a finite stream ends with its open row (a sentinel
  element closes it). The output keeps the compact task layout, plus `segment_ids` [n].
  """
  specs = ds.element_spec

  def empty() -> dict[str, tf.Tensor]:
    row = {k: tf.zeros([0, *specs[k].shape[1:]], specs[k].dtype) for k in _COMPACT}
    return {**row, 'segment_ids': tf.zeros([0], tf.int32)}

  def mark(ex: dict[str, tf.Tensor], end: bool) -> dict[str, tf.Tensor]:
    return {**{k: ex[k] for k in _COMPACT}, 'end': tf.constant(end)}

  sentinel = tf.data.Dataset.from_tensors(mark(empty(), True))
  marked = ds.map(lambda ex: mark(ex, False)).concatenate(sentinel)

  def step(state, ex):
    row, segments = state
    sequence = {k: ex[k] for k in _COMPACT}
    have, size = tf.size(row['tokens']), tf.size(ex['tokens'])
    alone = {**sequence, 'segment_ids': tf.ones([size], tf.int32)}
    joined = {k: tf.concat([row[k], sequence[k]], 0) for k in _COMPACT}
    joined['segment_ids'] = tf.concat([row['segment_ids'], tf.fill([size], segments + 1)], 0)
    fits = have + size <= length
    # Each branch: (next open row, its segment count, send a row out?, the row sent out).

    def close():  # The end of a finite stream: the open row goes out, if it holds any.
      return empty(), 0, have > 0, row

    def join_full():  # Joined, and the row is full.
      return empty(), 0, True, joined

    def join():  # Joined; the row stays open.
      return joined, segments + 1, False, empty()

    def send_alone():  # Does not fit, and is longer than the open row: it goes alone.
      return row, segments, True, alone

    def reopen():  # Does not fit, and is shorter: the open row goes, this one opens the next.
      return alone, 1, True, row

    index = tf.where(
      ex['end'], 0,
      tf.where(fits, tf.where(have + size == length, 1, 2), tf.where(size >= have, 3, 4)))
    new_row, new_segments, emit, out = tf.switch_case(
      index, [close, join_full, join, send_alone, reopen])
    return (new_row, tf.cast(new_segments, tf.int32)), (emit, out)

  def sent(emit: tf.Tensor, row: dict[str, tf.Tensor]) -> tf.Tensor:
    return emit

  def row_of(emit: tf.Tensor, row: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    return row

  packed = marked.scan((empty(), tf.constant(0, tf.int32)), step)
  return packed.filter(sent).map(row_of)


class GatoFeatureConverter(seqio.FeatureConverter):
  """Each sequence (window, document, caption set) padded to L, or with `pack` several per
  row; either way the model's arrays, `segment_ids` included."""

  TASK_FEATURES = {
    k: _Spec(dtype=dtype, rank=rank) for k, (dtype, rank) in inputs.feature_specs().items()
  }
  MODEL_FEATURES = {
    k: _Spec(dtype=dtype, rank=rank)
    for k, (dtype, rank) in inputs.feature_specs(inputs.BATCH).items()
  }
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, pack: bool = False, **kwargs) -> None:
    """`pack`: Gato's packing (pack_sequences); seqio's own is never on (module doc)."""
    super().__init__(pack=False, **kwargs)
    self.packs = pack

  def _convert_features(
    self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
  ) -> tf.data.Dataset:
    length = task_feature_lengths['tokens']
    if self.packs:
      ds = pack_sequences(ds, length)
    else:
      ds = ds.map(lambda ex: {**ex, 'segment_ids': tf.ones_like(ex['kinds'])})

    def convert(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
      out = {}
      for k in (*TOKEN_FEATURES, 'segment_ids'):
        v = ex[k][:length]
        out[k] = tf.ensure_shape(tf.pad(v, [[0, length - tf.size(v)]]), [length])
      where = tf.where(out['kinds'] == int(tokenizer.TokenKind.IMAGE))
      tf.debugging.assert_equal(
        tf.shape(where)[0],
        tf.shape(ex['patches'])[0],
        message='a sequence must carry one patch per IMAGE token',
      )
      for k in PATCH_FEATURES:
        out[k] = tf.scatter_nd(where, ex[k], [length, *inputs.SPEC[k].trailing])
      return out

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    length = task_feature_lengths['tokens']
    return {k: length for k in inputs.BATCH}
