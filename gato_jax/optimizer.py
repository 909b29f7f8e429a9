"""The optimizer of the reference (gato_reference.md §4): AdamW, warmup then cosine decay.

Gradient clipping by global norm comes before AdamW (reproductions use norm 1.0; the paper
does not say). Gradient accumulation is not an optax wrapper here: the train step splits
its batch into `config.grad_accum_steps` micro-batches and sums their gradients before one
update, so one step is one update and the checkpointed step count means the same thing
with or without accumulation.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup from 0 to `peak`, then cosine decay to `final` at `decay_steps`."""
  o = config.optimizer
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=o.learning_rate,
    warmup_steps=o.warmup_steps,
    decay_steps=max(o.decay_steps, o.warmup_steps + 1),
    end_value=o.final_learning_rate,
  )


def decay_mask(params: Any) -> Any:
  """Weight decay on matrices and tables only: decaying norm scales and biases to 0 hurts."""
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  o = config.optimizer
  adamw = optax.adamw(
    learning_rate_schedule(config),
    b1=o.b1,
    b2=o.b2,
    eps=o.eps,
    weight_decay=o.weight_decay,
    mask=decay_mask,
  )
  if o.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), adamw)
  return adamw


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad `optimizer.*` key."""
  o = config.optimizer
  for key in ('learning_rate', 'eps'):
    if not o[key] > 0:
      raise ValueError(f'config key optimizer.{key} must be > 0, got {o[key]!r}')
  for key in ('final_learning_rate', 'weight_decay', 'grad_clip_norm'):
    if not o[key] >= 0:
      raise ValueError(f'config key optimizer.{key} must be >= 0, got {o[key]!r}')
  for key in ('b1', 'b2'):
    if not 0 <= o[key] < 1:
      raise ValueError(f'config key optimizer.{key} must be in [0, 1), got {o[key]!r}')
  for key in ('warmup_steps', 'decay_steps'):
    if not isinstance(o[key], int) or o[key] < 0:
      raise ValueError(f'config key optimizer.{key} must be an int >= 0, got {o[key]!r}')
  if not isinstance(o.get('host_offload'), bool):
    raise ValueError(f'config key optimizer.host_offload must be a bool, '
                     f'got {o.get("host_offload")!r}')
