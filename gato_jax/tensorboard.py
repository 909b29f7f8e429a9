"""TensorBoard scalars, written by the trainer (metrics.py) and the evaluator (reporting.py).

tf.summary.scalar lives in the tensorboard package; the core op with the scalars plugin's
tag writes the same event without it, so TensorFlow (the data pipeline's dependency) is
all this needs. Paths go through tf.io.gfile: a gs:// workdir works like a local one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class ScalarWriter:
  """Appends scalars to the event files under `logdir`; a non-finite value is left out."""

  def __init__(self, logdir: str):
    import tensorflow as tf  # Imported only by the process that writes.
    from tensorflow.core.framework import summary_pb2

    self._tf = tf
    self._writer = tf.summary.create_file_writer(logdir)
    plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars')
    self._metadata = summary_pb2.SummaryMetadata(plugin_data=plugin).SerializeToString()

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    tf = self._tf
    with self._writer.as_default(step=step):
      for name, value in scalars.items():
        if math.isfinite(value):
          tf.summary.write(name, tf.constant(value, tf.float32), metadata=self._metadata)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
