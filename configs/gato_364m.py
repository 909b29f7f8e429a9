"""Gato 364M (paper appendix C.1): context 1024, the 32,000-piece text vocabulary.

  python -m gato_jax.model.summary --config=configs/gato_364m.py
  python -m gato_jax.aot --config=configs/gato_364m.py:v5e-16
  python -m benchmarks.model --config=configs/gato_364m.py --batch_size=8
"""

import ml_collections

from configs import models


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: a slice preset of configs/slices.py (`configs/gato_364m.py:v5e-16`), or none."""
  config = models.paper_config('364m', arg)
  # Short sequences (captions, text crops, short episodes) share rows: docs/performance.md.
  config.data.pack = True
  return config
