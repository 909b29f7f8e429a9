"""The Gato feature converter: task features -> exactly the model's fixed-shape inputs.

Tasks keep image patches compact (one per IMAGE token) so that shuffle buffers and the
data-iterator checkpoint stay small; here they are padded to L and scattered to the
positions of their IMAGE tokens, which is the layout the model's embedding consumes.
Patches stay uint8: normalization happens on the device.
"""

from __future__ import annotations

from collections.abc import Mapping

import seqio
import tensorflow as tf

from gato_jax import tokenizer
from gato_jax.data.preprocessors import PATCH_FEATURES, TOKEN_FEATURES
from gato_jax.model import inputs

_Spec = seqio.FeatureConverter.FeatureSpec


class GatoFeatureConverter(seqio.FeatureConverter):
  """No packing: each sequence is one window (or document, or caption set) padded to L."""

  TASK_FEATURES = {
    k: _Spec(dtype=dtype, rank=rank) for k, (dtype, rank) in inputs.feature_specs().items()
  }
  MODEL_FEATURES = TASK_FEATURES
  PACKING_FEATURE_DTYPES = {}

  def __init__(self, **kwargs) -> None:
    super().__init__(pack=False, **kwargs)

  def _convert_features(
    self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]
  ) -> tf.data.Dataset:
    length = task_feature_lengths['tokens']

    def convert(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
      out = {}
      for k in TOKEN_FEATURES:
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
    return {k: length for k in (*TOKEN_FEATURES, *PATCH_FEATURES)}
