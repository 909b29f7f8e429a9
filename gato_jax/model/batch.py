"""A synthetic batch that honours the model's input contract (see gato_jax/model/__init__.py).

Benchmarks and sharding tests need inputs that exercise every embedding path (token table,
patch ResNet, patch and local positions) without a data pipeline; this is the one place
that builds them.
"""

from __future__ import annotations

import numpy as np

from gato_jax import tokenizer


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
  patches = rng.integers(0, 256, (batch_size, length, 16, 16, 3), dtype=np.uint8)
  return {
    'tokens': rng.integers(0, vocab, (batch_size, length)).astype(np.int32),
    'kinds': kinds.astype(np.int32),
    'local_positions': np.where(kinds == kind.TEXT, 0, 2).astype(np.int32),
    'patches': np.where(image[..., None, None, None], patches, 0).astype(np.uint8),
    'patch_positions': np.where(image[..., None], [0, 16, 32, 48], 0).astype(np.int32),
  }
