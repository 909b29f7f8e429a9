"""Gato 1.18B (paper appendix C.1): context 1024, the 32,000-piece text vocabulary.

  python -m gato_jax.model.summary --config=configs/gato_1b2.py
  python benchmarks/model.py --config=configs/gato_1b2.py --batch_size=8
"""

import ml_collections

from configs import common, models


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.tokenizer = common.tokenizer_config()  # T5's 32,000 SentencePiece pieces.
  config.model = models.model_config('1b2')  # Layers, widths and options: configs/models.py.
  config.mesh = common.mesh_config()  # All devices on 'data' unless overridden.
  config.axis_rules = common.logical_axis_rules()  # Logical axis -> mesh axis.
  config.seed = 0  # Parameter initialization.
  return config
