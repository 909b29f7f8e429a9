"""Token, image-patch and position embeddings: one d_model vector per sequence position.

Image positions get a ResNet v2 block over their 16x16 patch plus learned row and column
embeddings of the patch's place in the image; every other position looks its id up in the
token table. Observation and action tokens (local position > 0) then add a learned
embedding of their position inside the timestep.

The 1024 continuous-value rows of the token table are ordered (bin 600 lies between 599
and 601), which a randomly initialized table does not know: a small model on little data
must learn the order of each rarely seen bin separately. `ordinal_table_init` starts
those rows as smooth functions of the value, so near bins start near each other;
training is free to move them apart. The paper's plain normal init stays the default.

The ResNet runs on every position and its output is kept only at IMAGE positions: shapes
stay static under jit, at a cost of a few percent of the transformer's FLOPs. Its
activations are as large as several of a layer's; `model.remat_patches` recomputes them in
the backward pass instead of keeping them (gato_jax.aot measures what that saves).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from gato_jax import sharding, tokenizer
from gato_jax.model.params import dense_init, param

PATCH = tokenizer.PATCH_SIZE
VALUE_EMBEDDING_INITS = ('normal', 'ordinal')
# Ordinal init: frequencies in cycles per unit of value, geometric from one slow half-wave
# over [-1, 1] (monotonic in the value) to one cycle per 8 bins (2/1024 of a unit each).
_ORDINAL_FREQUENCIES = (0.25, tokenizer.NUM_BINS / 16)


def ordinal_table_init(first_value_row: int, d_model: int) -> Any:
  """Normal init, except rows [first_value_row, +1024): random mixes of sin/cos of the value.

  Each value row has the same expected norm as a normal row (about 1), and the similarity
  of two rows falls off smoothly with the distance of their bin centres.
  """
  normal = jax.nn.initializers.normal(d_model ** -0.5)

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    rows, width = shape
    if first_value_row + tokenizer.NUM_BINS > rows:
      raise ValueError(f'the token table has {rows} rows; continuous values need rows '
                       f'[{first_value_row}, {first_value_row + tokenizer.NUM_BINS})')
    table_key, mix_key = jax.random.split(key)
    table = normal(table_key, shape, jnp.float32)
    centres = (jnp.arange(tokenizer.NUM_BINS) + 0.5) * (2.0 / tokenizer.NUM_BINS) - 1.0
    low, high = _ORDINAL_FREQUENCIES
    frequencies = jnp.geomspace(low, high, max(width // 2, 1))
    angles = 2.0 * jnp.pi * centres[:, None] * frequencies[None, :]
    features = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)  # Norm² = width/2.
    # Each entry's variance is (width/2) * 2/width² = 1/width, as a normal row's entries.
    values = features @ (jax.random.normal(mix_key, (features.shape[1], width)) * 2 ** 0.5 / width)
    table = jax.lax.dynamic_update_slice(table, values, (first_value_row, 0))
    return table.astype(dtype)

  return init


class GroupNorm(nnx.Module):
  """GroupNorm over [N, H, W, C] (the paper's replacement for the block's BatchNorm)."""

  def __init__(self, channels: int, groups: int, rngs: nnx.Rngs, param_dtype: Any):
    if channels % groups:
      raise ValueError(f'resnet channels ({channels}) must be a multiple of the GroupNorm '
                       f'groups ({groups})')
    self.groups = groups
    self.scale = param(rngs, jax.nn.initializers.ones, (channels,), ('channels',), param_dtype)
    self.bias = param(rngs, jax.nn.initializers.zeros, (channels,), ('channels',), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    g = x.astype(jnp.float32).reshape(n, h, w, self.groups, c // self.groups)
    mean = g.mean((1, 2, 4), keepdims=True)
    var = jnp.square(g - mean).mean((1, 2, 4), keepdims=True)
    y = ((g - mean) * jax.lax.rsqrt(var + 1e-6)).reshape(n, h, w, c)
    return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


def _conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (stride, stride), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


class PatchResNet(nnx.Module):
  """One ResNet v2 (pre-activation) block per patch, then a projection to d_model.

  A stride-2 3x3 stem takes the 16x16x3 patch to 8x8xC; the block is
  x + conv(GELU(GN(conv(GELU(GN(x)))))); a final GN + GELU and a linear map of the
  flattened 8x8xC features give the patch's d_model vector.
  """

  def __init__(self, d_model: int, channels: int, groups: int, rngs: nnx.Rngs,
               param_dtype: Any = jnp.float32):
    conv_axes = (None, None, None, 'channels')
    self.stem = param(rngs, dense_init(3), (3, 3, 3, channels), conv_axes, param_dtype)
    self.norm1 = GroupNorm(channels, groups, rngs, param_dtype)
    self.conv1 = param(rngs, dense_init(3), (3, 3, channels, channels), conv_axes, param_dtype)
    self.norm2 = GroupNorm(channels, groups, rngs, param_dtype)
    self.conv2 = param(rngs, dense_init(3), (3, 3, channels, channels), conv_axes, param_dtype)
    self.norm_out = GroupNorm(channels, groups, rngs, param_dtype)
    half = PATCH // 2
    self.project = param(rngs, dense_init(3), (half, half, channels, d_model),
                         (None, None, 'channels', 'embed'), param_dtype)
    self.project_bias = param(rngs, jax.nn.initializers.zeros, (d_model,), ('embed',),
                              param_dtype)

  def __call__(self, patches: jax.Array, dtype: Any) -> jax.Array:
    """float [..., 16, 16, 3] (already normalized) -> [..., d_model]."""
    lead = patches.shape[:-3]
    x = _conv(patches.reshape(-1, PATCH, PATCH, 3).astype(dtype), self.stem[...], 2)
    h = _conv(jax.nn.gelu(self.norm1(x)), self.conv1[...], 1)
    h = _conv(jax.nn.gelu(self.norm2(h)), self.conv2[...], 1)
    x = jax.nn.gelu(self.norm_out(x + h))
    y = jnp.einsum('nhwc,hwcd->nd', x, self.project[...].astype(dtype))
    return (y + self.project_bias[...].astype(dtype)).reshape(*lead, -1)


def patch_position_buckets(intervals: jax.Array, key: jax.Array | None) -> jax.Array:
  """[..., 2] half-open [lo, hi) bucket intervals -> one bucket each.

  With a key (training), a bucket drawn uniformly inside the interval; without (evaluation),
  the interval's mean rounded half up, floor((lo + hi) / 2), which for integers
  lo..hi-1 is round-half-up of their mean (lo + hi - 1) / 2 and always lies in [lo, hi).
  """
  lo, hi = intervals[..., 0], jnp.maximum(intervals[..., 1], intervals[..., 0] + 1)
  if key is None:
    return (lo + hi) // 2
  u = jax.random.uniform(key, lo.shape)
  return jnp.minimum(lo + jnp.floor(u * (hi - lo)).astype(lo.dtype), hi - 1)


class Embedder(nnx.Module):
  """Turns the model's input batch (see gato_jax/model/__init__.py) into [B, L, D]."""

  def __init__(self, vocab_rows: int, d_model: int, local_positions: int,
               resnet_channels: int, resnet_groups: int, rngs: nnx.Rngs,
               param_dtype: Any = jnp.float32, first_value_row: int | None = None,
               remat_patches: bool = False, pixel_normalization: str = 'paper'):
    """`first_value_row`, when given, turns on `ordinal_table_init` for the token table.

    `remat_patches` keeps only the patches for the backward pass and recomputes the ResNet
    from them: its activations are ~8 d_model-sized arrays per position, kept otherwise.
    `pixel_normalization`: one of tokenizer.PIXEL_NORMALIZATIONS.
    """
    self.remat_patches = remat_patches
    self.pixel_normalization = pixel_normalization
    table_init = jax.nn.initializers.normal(d_model ** -0.5)
    tokens_init = (table_init if first_value_row is None
                   else ordinal_table_init(first_value_row, d_model))
    self.tokens = param(rngs, tokens_init, (vocab_rows, d_model), ('vocab', 'embed'),
                        param_dtype)
    self.patches = PatchResNet(d_model, resnet_channels, resnet_groups, rngs, param_dtype)
    buckets = tokenizer.POSITION_BUCKETS
    self.patch_rows = param(rngs, table_init, (buckets, d_model), ('buckets', 'embed'),
                            param_dtype)
    self.patch_cols = param(rngs, table_init, (buckets, d_model), ('buckets', 'embed'),
                            param_dtype)
    self.local_positions = param(rngs, table_init, (local_positions, d_model),
                                 ('local_positions', 'embed'), param_dtype)

  def __call__(self, batch: dict[str, jax.Array], dtype: Any,
               key: jax.Array | None = None) -> jax.Array:
    """`key` is given while training: it samples the patch position buckets."""
    tokens, kinds = batch['tokens'], batch['kinds']
    x = jnp.take(self.tokens[...], tokens, axis=0, mode='clip').astype(dtype)

    patches = tokenizer.normalize_patches(batch['patches'], self.pixel_normalization)
    intervals = batch['patch_positions'].reshape(*tokens.shape, 2, 2)  # [B, L, row/col, lo/hi]
    buckets = patch_position_buckets(intervals, key)
    resnet = lambda module, p: module(p, dtype)  # noqa: E731
    if self.remat_patches:
      resnet = nnx.remat(resnet)
    image = (resnet(self.patches, patches)
             + jnp.take(self.patch_rows[...], buckets[..., 0], axis=0).astype(dtype)
             + jnp.take(self.patch_cols[...], buckets[..., 1], axis=0).astype(dtype))
    x = jnp.where((kinds == tokenizer.TokenKind.IMAGE)[..., None], image, x)

    # jit cannot raise on a position past the table's end (it would clip to the last row):
    # model.check_task_fits refuses such tasks before their data gets here.
    local = batch['local_positions']
    local_emb = jnp.take(self.local_positions[...], local, axis=0, mode='clip').astype(dtype)
    x = x + jnp.where((local > tokenizer.LOCAL_POSITION_NONE)[..., None], local_emb, 0)
    return sharding.constrain(x, ('batch', 'length', 'embed'))
