"""The pre-norm decoder-only transformer stack, with an optional KV cache.

The layers are always created stacked (one parameter tree with a leading `layers` axis),
and always run through `nnx.scan`. `scan_layers=False` fully unrolls that scan, which gives
XLA the same straight-line program a Python loop would, without changing the parameter
tree: checkpoints move freely between the two settings, and both give the same numbers.

Dropout keys are arguments, not module state, so the model's state is its parameters and
nothing else (no RNG counters to shard, checkpoint or thread through the scan).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from gato_jax import sharding
from gato_jax.model import splash
from gato_jax.model.params import dense_init, param

REMAT_POLICIES = {
    # Keeps every activation: fastest, most memory.
    'none': None,
    # Keeps matmul outputs, recomputes the cheap elementwise work (norms, GELU, dropout).
    'minimal': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # Keeps only each layer's input; the whole layer is recomputed in the backward pass.
    'full': jax.checkpoint_policies.nothing_saveable,
    # Keeps the tensors model.remat_save names, moves those model.remat_offload names to
    # host memory and back for the backward pass, and recomputes the rest (remat_policy).
    'names': None,
}
# The activations a block tags with jax.ad_checkpoint.checkpoint_name, for remat 'names'.
# Per layer and sequence position: query/key/value/context are heads x head_dim wide,
# attention_out and mlp_out d_model, mlp_hidden mlp_dim (4 d_model).
REMAT_NAMES = ('query', 'key', 'value', 'context', 'attention_out', 'mlp_hidden', 'mlp_out')


def remat_policy(remat: str, save: tuple[str, ...] = (), offload: tuple[str, ...] = ()):
  """The jax.checkpoint policy of a model.remat setting (None: no remat at all)."""
  if remat != 'names':
    return REMAT_POLICIES[remat]
  if not offload:
    return jax.checkpoint_policies.save_only_these_names(*save)
  return jax.checkpoint_policies.save_and_offload_only_these_names(
      names_which_can_be_saved=list(save), names_which_can_be_offloaded=list(offload),
      offload_src='device', offload_dst='pinned_host')


ATTENTION_IMPLEMENTATIONS = ('xla', 'cudnn', 'splash')
POSITION_ENCODINGS = ('none', 'rope')
ROPE_BASE = 10_000.0  # Wavelengths from 2*pi to about 2*pi*10^4 positions.


def rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
  """Rotates query or key pairs [B, L, H, K] by angles proportional to their position.

  A query at position i and a key at j then score by their content and by i - j alone:
  relative, so a left-padded or slid context, whose absolute positions shift, scores the
  same. The two halves of the head dimension form the pairs. `positions` is [L] (every
  row alike) or [B, L] (packed rows, whose positions restart at each segment).
  """
  half = x.shape[-1] // 2
  inverse = ROPE_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., :, None, None] * inverse  # [(B,) L, 1, K/2]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def segment_positions(segment_ids: jax.Array) -> jax.Array:
  """[B, L] -> [B, L]: each position's offset from the start of its segment.

  A segment starts wherever the id changes, so a packed row's sequences each count from 0
  as they would alone, and an unpacked row counts 0, 1, ... over its real tokens.
  """
  index = jnp.arange(segment_ids.shape[1])
  starts = jnp.concatenate(
      [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], 1)
  return index - jax.lax.cummax(jnp.where(starts, index, 0), axis=1)


@dataclasses.dataclass(frozen=True)
class StackOptions:
  """How the stack runs; everything here is static under jit."""

  dtype: Any = jnp.float32
  attention: str = 'xla'
  remat: str = 'none'
  remat_save: tuple[str, ...] = ()
  remat_offload: tuple[str, ...] = ()
  scan_layers: bool = True
  rope: bool = False


class LayerNorm(nnx.Module):
  """LayerNorm whose statistics are always taken in float32, whatever the compute dtype."""

  def __init__(self, dim: int, rngs: nnx.Rngs, param_dtype: Any = jnp.float32):
    self.scale = param(rngs, jax.nn.initializers.ones, (dim,), ('norm',), param_dtype)
    self.bias = param(rngs, jax.nn.initializers.zeros, (dim,), ('norm',), param_dtype)

  def __call__(self, x: jax.Array, dtype: Any) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + 1e-6)
    return (y * self.scale[...] + self.bias[...]).astype(dtype)


class Attention(nnx.Module):
  """Multi-head self-attention through `jax.nn.dot_product_attention`."""

  def __init__(self, d_model: int, num_heads: int, head_dim: int, rngs: nnx.Rngs,
               param_dtype: Any = jnp.float32):
    qkv_shape, qkv_axes = (d_model, num_heads, head_dim), ('embed', 'heads', 'kv')
    self.query = param(rngs, dense_init(1), qkv_shape, qkv_axes, param_dtype)
    self.key = param(rngs, dense_init(1), qkv_shape, qkv_axes, param_dtype)
    self.value = param(rngs, dense_init(1), qkv_shape, qkv_axes, param_dtype)
    self.out = param(rngs, dense_init(2), (num_heads, head_dim, d_model),
                     ('heads', 'kv', 'embed'), param_dtype)

  def __call__(
      self,
      x: jax.Array,
      options: StackOptions,
      cache: tuple[jax.Array, jax.Array] | None = None,
      cache_index: jax.Array | None = None,
      mask: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """With a cache, `cache_index` is where this chunk starts (also its first position).

    `segment_ids` [B, L] (packed rows, no cache): attention stays inside each segment and
    positions restart at each.
    """
    dtype = options.dtype
    act_axes = ('batch', 'length', 'heads', 'kv')
    q = jnp.einsum('bld,dhk->blhk', x, self.query[...].astype(dtype))
    k = jnp.einsum('bld,dhk->blhk', x, self.key[...].astype(dtype))
    v = jnp.einsum('bld,dhk->blhk', x, self.value[...].astype(dtype))
    if options.rope:
      if segment_ids is not None:
        positions = segment_positions(segment_ids)
      else:
        positions = jnp.arange(x.shape[1]) + (0 if cache is None else cache_index)
      q, k = rotary(q, positions), rotary(k, positions)
    q, k, v = (sharding.constrain(a, act_axes) for a in (q, k, v))
    q, k, v = (checkpoint_name(a, n) for a, n in ((q, 'query'), (k, 'key'), (v, 'value')))
    if cache is None:
      # Training and full forward: a plain causal mask. Padding sits after the real
      # tokens, so causality alone keeps it from reaching them. Packed rows add a
      # same-segment mask: splash takes the ids themselves and never builds [L, L];
      # jax.nn.dot_product_attention has no segment argument (its sequence lengths
      # describe one sequence per row), so it gets a [B, 1, L, L] boolean mask.
      if options.attention == 'splash':
        y = splash.splash_attention(q, k, v, segment_ids=segment_ids)
      else:
        same = None
        if segment_ids is not None:
          same = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
        y = jax.nn.dot_product_attention(q, k, v, mask=same, is_causal=True,
                                         implementation=options.attention)
    else:
      # Cached decoding writes this chunk's keys/values at `cache_index` and attends to
      # the whole cache under an explicit mask. The XLA kernel is used here whatever the
      # config says: cuDNN's fused attention does not take arbitrary masks with short
      # query chunks.
      k_cache, v_cache = cache
      start = (0, cache_index, 0, 0)
      k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), start)
      v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), start)
      cache = (k_cache, v_cache)
      y = jax.nn.dot_product_attention(q, k_cache.astype(dtype), v_cache.astype(dtype),
                                       mask=mask, implementation='xla')
    y = sharding.constrain(y, act_axes)
    if options.attention != 'splash' or cache is not None:
      y = checkpoint_name(y, 'context')  # The splash kernel names its own residuals.
    out = jnp.einsum('blhk,hkd->bld', y, self.out[...].astype(dtype))
    return checkpoint_name(out, 'attention_out'), cache


class Mlp(nnx.Module):
  """The feed-forward block: d_model -> mlp_dim -> d_model with a GELU."""

  def __init__(self, d_model: int, mlp_dim: int, rngs: nnx.Rngs, param_dtype: Any = jnp.float32):
    self.wi = param(rngs, dense_init(1), (d_model, mlp_dim), ('embed', 'mlp'), param_dtype)
    self.bi = param(rngs, jax.nn.initializers.zeros, (mlp_dim,), ('mlp',), param_dtype)
    self.wo = param(rngs, dense_init(1), (mlp_dim, d_model), ('mlp', 'embed'), param_dtype)
    self.bo = param(rngs, jax.nn.initializers.zeros, (d_model,), ('embed',), param_dtype)

  def __call__(self, x: jax.Array, dtype: Any) -> jax.Array:
    h = checkpoint_name(x @ self.wi[...].astype(dtype), 'mlp_hidden')
    h = jax.nn.gelu(h + self.bi[...].astype(dtype))
    h = sharding.constrain(h, ('batch', 'length', 'mlp'))
    return checkpoint_name(h @ self.wo[...].astype(dtype), 'mlp_out') + self.bo[...].astype(dtype)


class Block(nnx.Module):
  """x + Drop(Attn(LN(x))), then x + Drop(MLP(LN(x)))."""

  def __init__(self, d_model: int, num_heads: int, head_dim: int, mlp_dim: int,
               dropout_rate: float, rngs: nnx.Rngs, param_dtype: Any = jnp.float32):
    self.attention_norm = LayerNorm(d_model, rngs, param_dtype)
    self.attention = Attention(d_model, num_heads, head_dim, rngs, param_dtype)
    self.mlp_norm = LayerNorm(d_model, rngs, param_dtype)
    self.mlp = Mlp(d_model, mlp_dim, rngs, param_dtype)
    self.dropout = nnx.Dropout(dropout_rate)

  def __call__(self, x, options: StackOptions, key=None, cache=None, cache_index=None,
               mask=None, segment_ids=None):
    keys = (None, None) if key is None else tuple(jax.random.split(key))
    h, cache = self.attention(self.attention_norm(x, options.dtype), options, cache,
                              cache_index, mask, segment_ids)
    x = x + self.dropout(h, deterministic=key is None, rngs=keys[0])
    h = self.mlp(self.mlp_norm(x, options.dtype), options.dtype)
    x = x + self.dropout(h, deterministic=key is None, rngs=keys[1])
    return sharding.constrain(x, ('batch', 'length', 'embed')), cache


class DecoderStack(nnx.Module):
  """`num_layers` Blocks with their parameters stacked along a leading `layers` axis."""

  def __init__(self, num_layers: int, d_model: int, num_heads: int, head_dim: int,
               mlp_dim: int, dropout_rate: float, rngs: nnx.Rngs,
               param_dtype: Any = jnp.float32):
    self.num_layers = num_layers

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: 'layers'})
    def create(key: jax.Array) -> Block:
      return Block(d_model, num_heads, head_dim, mlp_dim, dropout_rate,
                   nnx.Rngs(params=key), param_dtype)

    self.blocks = create(jax.random.split(rngs.params(), num_layers))
    self.final_norm = LayerNorm(d_model, rngs, param_dtype)

  def __call__(
      self,
      x: jax.Array,
      options: StackOptions,
      key: jax.Array | None = None,
      cache: tuple[jax.Array, jax.Array] | None = None,
      cache_index: jax.Array | None = None,
      mask: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
  ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """x [B, L, D] -> final-normed [B, L, D]; `cache` holds [layers, B, S, H, K] arrays.

    `segment_ids` [B, L]: packed rows (Attention); never with a cache.
    """
    keys = None if key is None else jax.random.split(key, self.num_layers)

    def layer(block: Block, x, layer_key, layer_cache):
      return block(x, options, layer_key, layer_cache, cache_index, mask, segment_ids)

    if options.remat != 'none':
      policy = remat_policy(options.remat, options.remat_save, options.remat_offload)
      layer = nnx.remat(layer, policy=policy, prevent_cse=False)

    @nnx.scan(
        in_axes=(nnx.Carry, 0, 0, 0),
        out_axes=(nnx.Carry, 0),
        unroll=1 if options.scan_layers else self.num_layers,
        transform_metadata={nnx.PARTITION_NAME: 'layers'},
    )
    def run(x, block, layer_key, layer_cache):
      return layer(block, x, layer_key, layer_cache)

    x, cache = run(x, self.blocks, keys, cache)
    return self.final_norm(x, options.dtype), cache
