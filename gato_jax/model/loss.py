"""Gato's training loss: next-token cross-entropy on text and logged actions only.

Image, observation, separator and padding targets are context, never trained on (paper
§2.3). Accuracy is reported per kind of target, as a sum and a count, so that the trainer
can aggregate it across batches and hosts exactly before dividing.

The output layer's float32 logits, [B, L, vocab] with a 33k vocabulary, are the largest
activation of a step: at gato_1b2's 32 sequences per chip they are 4 GiB, and softmax and
its gradient need two more such arrays. `chunked_token_stats` runs the output layer and the
cross-entropy over `chunks` slices of the sequence one at a time and recomputes each in the
backward pass, so that only one slice's logits ever exist (MaxText's vocabulary tiling).
Both paths reduce to the same per-token statistics and give the same loss.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gato_jax.tokenizer import LOSS_KINDS, TokenKind

# Every kind except PAD and IMAGE, whose target is only the patch placeholder id.
METRIC_KINDS = tuple(k for k in TokenKind if k not in (TokenKind.PAD, TokenKind.IMAGE))


def shifted_targets(
    tokens: jax.Array, kinds: jax.Array, loss_mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(targets, target kinds, weights), each [B, L]: position t's target is token t + 1.

  The last position has no target: it gets kind PAD and weight 0, so that every array
  keeps the model's length (which chunking needs) and the statistics are unchanged. In a
  packed row (`segment_ids`), a segment's last token has no target either (kind PAD): the
  next token starts another sequence, which nothing before it may predict.
  """
  def shift(x, fill):
    return jnp.concatenate([x[:, 1:], jnp.full_like(x[:, :1], fill)], axis=1)

  targets, target_kinds = shift(tokens, 0), shift(kinds, int(TokenKind.PAD))
  if segment_ids is not None:
    # Kind PAD, as an unpacked row's last token gets: no loss and no per-kind metric.
    target_kinds = jnp.where(shift(segment_ids, 0) == segment_ids, target_kinds,
                             int(TokenKind.PAD))
  weights = jnp.isin(target_kinds, jnp.asarray(LOSS_KINDS, target_kinds.dtype))
  if loss_mask is not None:
    weights = weights & (shift(loss_mask, 0) > 0)
  return targets, target_kinds, weights.astype(jnp.float32)


def token_stats(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(cross-entropy, 1.0 where the argmax is the target), float32 [...] from [..., V]."""
  logits = logits.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return nll, correct


def chunked_token_stats(
    hidden: jax.Array,
    logits_fn: Callable[[jax.Array], jax.Array],
    targets: jax.Array,
    chunks: int,
) -> tuple[jax.Array, jax.Array]:
  """`token_stats(logits_fn(hidden), targets)`, one of `chunks` length slices at a time.

  hidden [B, L, D]; L must be a multiple of `chunks` (gato.validate_config checks it).
  Each slice's logits are recomputed in the backward pass instead of being kept.
  """
  b, length, d = hidden.shape
  if length % chunks:
    raise ValueError(f'config key model.loss_chunks={chunks} must divide the sequence '
                     f'length {length}')
  h = hidden.reshape(b, chunks, length // chunks, d).swapaxes(0, 1)
  t = targets.reshape(b, chunks, length // chunks).swapaxes(0, 1)

  @jax.checkpoint
  def chunk(args):
    h_c, t_c = args
    return token_stats(logits_fn(h_c), t_c)

  nll, correct = jax.lax.map(chunk, (h, t))
  unchunk = lambda x: x.swapaxes(0, 1).reshape(b, length)  # noqa: E731
  return unchunk(nll), unchunk(correct)


def sequence_sums(values: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
  """Sums of [B, L] `values` per sequence: per row, or per (row, segment) of packed rows.

  Packed: one slot per row and segment id (ids are below L), [B * L] in all, most empty.
  """
  if segment_ids is None:
    return values.sum(axis=1)
  b, length = values.shape
  slots = (jnp.arange(b)[:, None] * length + segment_ids).reshape(-1)
  return jax.ops.segment_sum(values.reshape(-1), slots, num_segments=b * length)


def loss_from_stats(
    nll: jax.Array, correct: jax.Array, target_kinds: jax.Array, weights: jax.Array,
    segment_ids: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The mean cross-entropy over weighted targets, and the metrics of `next_token_loss`.

  `segment_ids` (packed rows): `sequences` and `sequence_nll` count each packed sequence,
  not each row, so the 'sequences' normalization means the same packed or not.
  """
  count = weights.sum()
  loss = (nll * weights).sum() / jnp.maximum(count, 1.0)
  # Per sequence: its targets' mean cross-entropy, for the 'sequences' normalization.
  seq_count = sequence_sums(weights, segment_ids)
  seq_mean = sequence_sums(nll * weights, segment_ids) / jnp.maximum(seq_count, 1.0)
  metrics = {
      'loss': loss,
      'targets': count,
      'accuracy': (correct * weights).sum() / jnp.maximum(count, 1.0),
      'sequences': (seq_count > 0).sum().astype(jnp.float32),
      'sequence_nll': seq_mean.sum(),
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


def next_token_loss(
    logits: jax.Array, tokens: jax.Array, kinds: jax.Array, loss_mask: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
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
  `segment_ids` [B, L]: packed rows, each segment a sequence (shifted_targets,
  loss_from_stats).
  """
  targets, target_kinds, weights = shifted_targets(tokens, kinds, loss_mask, segment_ids)
  nll, correct = token_stats(logits, targets)
  return loss_from_stats(nll, correct, target_kinds, weights, segment_ids)
