"""How the model creates its weights: each one carries logical axis names, nothing else.

Layers say what an axis *means* (`embed`, `mlp`, `heads`, ...); the rules table in config
says where it lives on the mesh, and `gato_jax.sharding` applies it. Eager sharding is off
for every parameter, so a model can be built on one device, under `nnx.eval_shape`, or
inside a jit whose `out_shardings` place it, without a mesh in scope.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Initializer = Callable[..., jax.Array]


def param(
    rngs: nnx.Rngs,
    init: Initializer,
    shape: Sequence[int],
    axes: Sequence[str | None],
    dtype: Any = jnp.float32,
) -> nnx.Param:
  """A parameter whose `out_sharding` metadata holds its logical axis names."""
  if len(axes) != len(shape):
    raise ValueError(f'{len(shape)}-d parameter {tuple(shape)} needs {len(shape)} axis names, '
                     f'got {tuple(axes)}')
  value = init(rngs.params(), tuple(shape), dtype)
  return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


def dense_init(fan_in_axes: int) -> Initializer:
  """Fan-in over the leading `fan_in_axes` axes of a multi-axis projection kernel.

  An attention kernel [embed, heads, kv] has fan-in `embed`; [heads, kv, embed] has
  fan-in heads * kv. variance_scaling needs to be told which axes those are.
  """
  in_axes = tuple(range(fan_in_axes))
  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    out_axes = tuple(range(fan_in_axes, len(shape)))
    return jax.nn.initializers.variance_scaling(
        1.0, 'fan_in', 'truncated_normal', in_axis=in_axes, out_axis=out_axes
    )(key, shape, dtype)
  return init
