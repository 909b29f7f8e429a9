"""Incremental decoding: prefill a prompt once, then extend it a few tokens at a time.

The cache holds every layer's keys and values for `max_length` slots, the number of
slots filled so far (`index`, shared by the batch) and which slots hold real tokens
(`valid`, so that left-padded prompts of different lengths batch together). Any chunk of
the input batch format can be appended: one action token while sampling, or a whole new
observation (image patches included) when the environment answers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gato_jax.model.gato import Cache, Gato


def init_cache(model: Gato, batch_size: int, max_length: int | None = None,
               dtype: Any = None) -> Cache:
  """An empty cache; `max_length` defaults to the model's context length."""
  max_length = model.max_length if max_length is None else max_length
  blocks = model.stack.blocks.attention
  layers, _, heads, head_dim = blocks.key.shape
  dtype = model.options.dtype if dtype is None else dtype
  shape = (layers, batch_size, max_length, heads, head_dim)
  return {
      'k': jnp.zeros(shape, dtype),
      'v': jnp.zeros(shape, dtype),
      'index': jnp.zeros((), jnp.int32),
      'valid': jnp.zeros((batch_size, max_length), bool),
  }


@nnx.jit(donate_argnums=2)
def extend(model: Gato, batch: dict[str, jax.Array], cache: Cache) -> tuple[jax.Array, Cache]:
  """Appends `batch` ([B, T] in the model's input format) after the cached tokens.

  Returns the chunk's logits [B, T, vocab_rows] and the updated cache. Writing past
  `max_length` is the caller's error: dynamic_update_slice would clamp the write
  position and overwrite the last slots.
  """
  return model.forward(batch, cache=cache)


def prefill(model: Gato, batch: dict[str, jax.Array],
            max_length: int | None = None) -> tuple[jax.Array, Cache]:
  """Runs a whole prompt through the model and returns its logits and the filled cache."""
  cache = init_cache(model, batch['tokens'].shape[0], max_length)
  return extend(model, batch, cache)
