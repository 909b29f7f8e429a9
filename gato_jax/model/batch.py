"""A synthetic batch that honours the model's input contract (gato_jax/model/inputs.py).

Benchmarks and sharding tests need inputs that exercise every embedding path (token table,
patch ResNet, patch and local positions) without a data pipeline; this is the one place
that builds them.
"""

from __future__ import annotations

import numpy as np

from gato_jax import tokenizer
from gato_jax.model import inputs


def synthetic_batch(
  batch_size: int, length: int, vocab: int, seed: int = 0
) -> dict[str, np.ndarray]:
  """Random text, image, observation and action positions; pixels only at image positions."""
  rng = np.random.default_rng(seed)
  kind = tokenizer.TokenKind
  kinds = rng.choice(
    [kind.TEXT, kind.IMAGE, kind.OBSERVATION_CONTINUOUS, kind.ACTION_CONTINUOUS],
    (batch_size, length),
  )
  image = kinds == kind.IMAGE
  patch_shape = inputs.SPEC['patches'].trailing
  patches = rng.integers(0, 256, (batch_size, length, *patch_shape), dtype=np.uint8)
  batch = inputs.zeros((batch_size, length))
  batch['tokens'][...] = rng.integers(0, vocab, (batch_size, length))
  batch['kinds'][...] = kinds
  batch['local_positions'][...] = np.where(kinds == kind.TEXT, 0, 2)
  batch['patches'][image] = patches[image]
  batch['patch_positions'][image] = [0, 16, 32, 48]
  return batch
