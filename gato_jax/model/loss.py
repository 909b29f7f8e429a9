"""Gato's training loss: next-token cross-entropy on text and logged actions only.

Image, observation, separator and padding targets are context, never trained on (paper
§2.3). Accuracy is reported per kind of target, as a sum and a count, so that the trainer
can aggregate it across batches and hosts exactly before dividing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gato_jax.tokenizer import LOSS_KINDS, TokenKind

# Every kind except PAD and IMAGE, whose target is only the patch placeholder id.
METRIC_KINDS = tuple(k for k in TokenKind if k not in (TokenKind.PAD, TokenKind.IMAGE))


def next_token_loss(
    logits: jax.Array, tokens: jax.Array, kinds: jax.Array, loss_mask: jax.Array | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean cross-entropy over the targets whose kind is in LOSS_KINDS, and metrics.

  `loss_mask` [B, L] (the data pipeline's: 0 on prompt tokens, which condition but are not
  targets) further restricts the targets; the kind rule applies either way, so a mask can
  never make an observation or image token a target.

  logits [B, L, V] at t predict tokens[t + 1]: the last position has no target, and the
  first token is never one. Metrics: `loss`, `targets` (their count), `accuracy` over loss
  targets, `sequences` (rows with a target) and `sequence_nll` (the sum over rows of each
  row's mean cross-entropy, T5X's per-sequence loss normalization), and for every kind in
  METRIC_KINDS `correct/<kind>` and `count/<kind>` (sums) plus `accuracy/<kind>` (0 where
  the batch has none of that kind; weight by the count);
  likewise `nll/<kind>` (summed cross-entropy) and `loss/<kind>` (its mean), reported for
  every kind, targets or not, to watch what the model learns of the context.
  """
  logits = logits[:, :-1].astype(jnp.float32)
  targets, target_kinds = tokens[:, 1:], kinds[:, 1:]
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  weights = jnp.isin(target_kinds, jnp.asarray(LOSS_KINDS, target_kinds.dtype))
  if loss_mask is not None:
    weights = weights & (loss_mask[:, 1:] > 0)
  weights = weights.astype(jnp.float32)
  count = weights.sum()
  loss = (nll * weights).sum() / jnp.maximum(count, 1.0)
  # Per sequence: its targets' mean cross-entropy, for the 'sequences' normalization.
  row_count = weights.sum(axis=1)
  row_mean = (nll * weights).sum(axis=1) / jnp.maximum(row_count, 1.0)

  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  metrics = {
      'loss': loss,
      'targets': count,
      'accuracy': (correct * weights).sum() / jnp.maximum(count, 1.0),
      'sequences': (row_count > 0).sum().astype(jnp.float32),
      'sequence_nll': row_mean.sum(),
  }
  for kind in METRIC_KINDS:
    is_kind = (target_kinds == kind).astype(jnp.float32)
    n, hits = is_kind.sum(), (correct * is_kind).sum()
    name = kind.name.lower()
    metrics[f'correct/{name}'] = hits
    metrics[f'count/{name}'] = n
    metrics[f'accuracy/{name}'] = hits / jnp.maximum(n, 1.0)
    metrics[f'nll/{name}'] = (nll * is_kind).sum()
    metrics[f'loss/{name}'] = metrics[f'nll/{name}'] / jnp.maximum(n, 1.0)
  return loss, metrics
