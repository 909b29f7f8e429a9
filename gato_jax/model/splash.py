"""Causal self-attention through Pallas's TPU splash (flash) kernel: `model.attention='splash'`.

XLA's attention materializes the [B, H, L, L] score matrix (and its float32 softmax) in
every layer's forward and backward pass. The splash kernel streams key/value blocks
through VMEM with an online softmax and skips the blocks the causal mask hides, so the
scores never reach HBM and about half the attention FLOPs are never spent. MaxText uses
it by default on TPU.

The kernel works on one device's shard: `splash_attention` wraps it in a shard_map over
the active mesh (gato_jax/sharding.py), batch split like every activation and heads split
over `tensor`. It lowers only for TPU; on other devices the model refuses the setting
rather than run something else (Pallas's interpreter, which tests use, is orders of
magnitude slower).
"""

from __future__ import annotations

import functools

import jax
from jax.experimental.pallas.ops.tpu import splash_attention as splash

from gato_jax import sharding

# Query and key/value block edge. 512 is MaxText's default on v5e/v5p; sequences shorter
# than it use one block.
BLOCK = 512
ACTIVATION_AXES = ('batch', 'length', 'heads', 'kv')


def block_size(length: int) -> int:
  """The kernel's block edge for sequences of `length`; raises if it cannot tile them."""
  block = min(BLOCK, length)
  if length % block or block % 128:
    raise ValueError(
      f"model.attention='splash' needs config key model.max_length to be a multiple of "
      f'{BLOCK}, or a multiple of 128 below it; got {length}')
  return block


def _local(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None,
           interpret: bool) -> jax.Array:
  """One shard: [b, L, h, K] each (and segment ids [b, L] or None) -> [b, L, h, K]."""
  _, length, heads, head_dim = q.shape
  block = block_size(length)
  sizes = splash.BlockSizes(
    block_q=block, block_kv=block, block_kv_compute=block,
    block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
    block_q_dq=block, block_kv_dq=block)
  mask = splash.MultiHeadMask([splash.CausalMask((length, length))] * heads)
  # The kernel's output and softmax statistics carry the name 'context': remat 'names'
  # that saves 'context' then keeps both, and the backward pass never re-runs the kernel.
  kernel = splash.make_splash_mha(
    mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret,
    residual_checkpoint_name='context')
  # The kernel does not scale the scores; jax.nn.dot_product_attention's 1/sqrt(K) here.
  heads_first = lambda x: x.swapaxes(1, 2)  # noqa: E731
  q = q * (head_dim ** -0.5)
  if segment_ids is None:
    out = jax.vmap(kernel)(heads_first(q), heads_first(k), heads_first(v))
  else:
    # Packed rows: the kernel ands its causal mask with "same segment", block by block.
    def one_row(q, k, v, ids):
      return kernel(q, k, v, segment_ids=splash.SegmentIds(q=ids, kv=ids))

    out = jax.vmap(one_row)(heads_first(q), heads_first(k), heads_first(v), segment_ids)
  return heads_first(out)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                     segment_ids: jax.Array | None = None,
                     interpret: bool = False) -> jax.Array:
  """Causal attention of q, k, v [B, L, H, K] -> [B, L, H, K] (no cache).

  `segment_ids` [B, L] (packed rows) keeps attention inside each segment.
  `interpret=True` runs the kernel in Pallas's interpreter, on any device (tests only).
  """
  local = functools.partial(_local, interpret=interpret)
  context = sharding.active()
  devices = jax.devices() if context is None else context[0].devices.flat
  platforms = {d.platform for d in devices}
  if platforms != {'tpu'} and not interpret:
    raise ValueError(
      f"config key model.attention='splash' is a TPU kernel, but the mesh's devices are "
      f"{sorted(platforms)}: use 'xla' (or 'cudnn' on GPUs)")
  if context is None:
    return local(q, k, v, segment_ids)
  mesh, rules = context
  spec = sharding.logical_to_spec(ACTIVATION_AXES, rules, q.shape, mesh)
  if segment_ids is None:
    return jax.shard_map(lambda q, k, v: local(q, k, v, None), mesh=mesh,
                         in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)
  # The ids split over the batch like the activations; every head shard sees all of them.
  ids_spec = sharding.logical_to_spec(ACTIVATION_AXES[:2], rules, segment_ids.shape, mesh)
  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec, ids_spec),
                       out_specs=spec, check_vma=False)(q, k, v, segment_ids)
