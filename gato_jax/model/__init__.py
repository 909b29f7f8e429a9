"""Gato in Flax NNX: embeddings, decoder-only transformer, masked loss and KV-cached decoding.

Input contract: a batch is a dict of arrays over B sequences of L positions, one table of
names, dtypes and shapes in gato_jax/model/inputs.py (the seqio feature converter emits
exactly those; see docs/model.md).

The embedding at position t is ResNet(patch) + row + column embeddings at IMAGE positions
and the token table's row elsewhere, plus the local position embedding where
local_positions > 0. Logits at t predict tokens[t + 1] (loss.next_token_loss).
"""

from gato_jax.model.gato import (
  EXECUTION_KEYS,
  Gato,
  check_task_fits,
  count_params,
  from_config,
)
from gato_jax.model.options import ModelOptions

__all__ = [
  'EXECUTION_KEYS',
  'Gato',
  'ModelOptions',
  'check_task_fits',
  'count_params',
  'from_config',
]
