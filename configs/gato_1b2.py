"""Gato 1.18B (paper appendix C.1): context 1024, the 32,000-piece text vocabulary.

  python -m gato_jax.model.summary --config=configs/gato_1b2.py
  python -m gato_jax.aot --config=configs/gato_1b2.py:v5e-16
  python -m benchmarks.model --config=configs/gato_1b2.py --batch_size=8
"""

import ml_collections

from configs import models


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg`: a slice preset of configs/slices.py (`configs/gato_1b2.py:v5e-16`), or none."""
  return models.paper_config('1b2', arg)
