"""Gato 79M (paper appendix C.1): context 1024, the 32,000-piece text vocabulary.

  python -m gato_jax.model.summary --config=configs/gato_79m.py
  python -m benchmarks.model --config=configs/gato_79m.py --batch_size=8
"""

import ml_collections

from configs import models


def get_config() -> ml_collections.ConfigDict:
  return models.paper_config('79m')
