"""The trainer tests' run: the demo config shrunk to seconds, on the synthetic data source.

python -m gato_jax.train --config=tests/tiny_train_config.py --workdir=/tmp/tiny
"""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
  config = demo.get_config()
  config.model.max_length = 32
  if 'data' not in config:
    config.data = ml_collections.ConfigDict()
  config.data.source = 'synthetic'  # Random batches: no dataset to generate.
  config.total_steps = 10
  config.batch_size = 8
  config.checkpoint_every_steps = 3
  config.log_every_steps = 1  # Every step's loss, to compare runs step by step.
  config.optimizer.warmup_steps = 2
  config.optimizer.decay_steps = 10
  return config


def with_overrides(**overrides) -> ml_collections.ConfigDict:
  """The tiny run with dotted keys overridden: with_overrides(**{'mesh.fsdp': 2})."""
  config = get_config()
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config
