"""Gato in Flax NNX: embeddings, decoder-only transformer, masked loss and KV-cached decoding.

Input contract (the seqio feature converter emits exactly this; see docs/model.md). A batch
is a dict of arrays, B sequences of L positions:

  tokens            int32 [B, L]   ids in TokenLayout's vocabulary (the image placeholder id
                                   at IMAGE positions)
  kinds             int32 [B, L]   tokenizer.TokenKind values; PAD = 0 marks padding, which
                                   comes after a sequence's real tokens
  local_positions   int32 [B, L]   0 = none, 1 = separator/action, 2.. observation tokens
  patches           uint8 [B, L, 16, 16, 3]  pixels at IMAGE positions, zeros elsewhere;
                                   normalized on device by tokenizer.normalize_patches
  patch_positions   int32 [B, L, 4]  (row_lo, row_hi, col_lo, col_hi) buckets in [0, 128)
                                   at IMAGE positions, zeros elsewhere

The embedding at position t is ResNet(patch) + row + column embeddings at IMAGE positions
and the token table's row elsewhere, plus the local position embedding where
local_positions > 0. Logits at t predict tokens[t + 1] (loss.next_token_loss).
"""

from gato_jax.model.gato import (
  EXECUTION_KEYS,
  Gato,
  check_task_fits,
  checkpoint_differences,
  count_params,
  from_config,
)
from gato_jax.model.options import ModelOptions

__all__ = [
  'EXECUTION_KEYS',
  'Gato',
  'ModelOptions',
  'check_task_fits',
  'checkpoint_differences',
  'count_params',
  'from_config',
]
