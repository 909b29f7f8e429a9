"""Gato: the embedder, the decoder stack and the tied output layer, built from its options.

`from_config` builds it from a run's config: ModelOptions (options.py) checks `config.model`,
the tokenizer section gives the vocabulary.

The output layer reuses the token table (tied embeddings). The table has
`vocab_rows = vocab_size` rounded up to a multiple of `model.vocab_multiple` (128 by
default: whole TPU lanes, and a size every `tensor` mesh axis up to 128 divides); the
logits of the padding rows are set to -1e9, so no loss or sampling ever picks them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from gato_jax import sharding, specs, tokenizer
from gato_jax.model.embedding import Embedder
from gato_jax.model.options import DTYPES, ModelOptions
from gato_jax.model.transformer import DecoderStack, StackOptions

PADDED_LOGIT = -1e9  # Finite, so that 0 * logit never makes a NaN.

Cache = dict[str, jax.Array]


# model.* keys that change how a step runs (memory, kernels, compile time, training-only
# noise, context length), not the function the parameters compute: a checkpoint moves
# freely between their values. Every other model key must match the checkpoint's.
EXECUTION_KEYS = frozenset({
    'remat', 'remat_save', 'remat_offload', 'remat_patches', 'loss_chunks', 'scan_layers',
    'attention', 'dropout_rate', 'dtype', 'param_dtype', 'max_length'})


def check_task_fits(spec: specs.TaskSpec, model: ModelOptions) -> None:
  """Raises if a task's observation has more tokens than the local position table has rows.

  Inside jit an index past the table would silently reuse its last row, so the pipeline and
  the evaluator call this for every task before any of its data reaches the model.
  """
  needed = tokenizer.FIRST_OBSERVATION_POSITION + spec.observation_tokens
  if needed > model.local_positions:
    raise ValueError(
        f'task {spec.name!r} has {spec.observation_tokens} observation tokens per timestep, '
        f'which needs config key model.local_positions >= {needed} '
        f'(it is {model.local_positions})')


class Gato(nnx.Module):
  """Next-token logits over the whole vocabulary for a batch of mixed-modality sequences."""

  def __init__(self, options: ModelOptions, vocab_size: int, rngs: nnx.Rngs,
               first_value_row: int | None = None):
    """`first_value_row`: the continuous-value offset, which `value_embedding_init` needs."""
    ordinal = options.value_embedding_init == 'ordinal'
    if ordinal and first_value_row is None:
      raise ValueError("config key model.value_embedding_init='ordinal' needs the token "
                       'layout: build the model with gato.from_config')
    self.vocab_size = vocab_size
    self.vocab_rows = options.vocab_rows(vocab_size)
    self.max_length = options.max_length
    self.options = StackOptions(
        dtype=DTYPES[options.dtype], attention=options.attention, remat=options.remat,
        remat_save=options.remat_save, remat_offload=options.remat_offload,
        scan_layers=options.scan_layers, rope=options.position_encoding == 'rope')
    param_dtype = DTYPES[options.param_dtype]
    self.embedder = Embedder(self.vocab_rows, options.d_model, options.local_positions,
                             options.resnet_channels, options.resnet_groups, rngs, param_dtype,
                             first_value_row if ordinal else None, options.remat_patches,
                             options.pixel_normalization)
    self.dropout = nnx.Dropout(options.dropout_rate)
    self.stack = DecoderStack(options.num_layers, options.d_model, options.num_heads,
                              options.head_dim, options.mlp_dim, options.dropout_rate, rngs,
                              param_dtype)

  def __call__(self, batch: dict[str, jax.Array], *, key: jax.Array | None = None) -> jax.Array:
    """float32 logits [B, L, vocab_rows]; logits at t predict tokens[t + 1].

    `key` turns on training behaviour (dropout, sampled patch positions); without it the
    model is deterministic, as in evaluation.
    """
    return self.forward(batch, key=key)[0]

  def forward(
      self,
      batch: dict[str, jax.Array],
      *,
      key: jax.Array | None = None,
      cache: Cache | None = None,
  ) -> tuple[jax.Array, Cache | None]:
    """With a cache (see decode.py), appends the batch's tokens after the cached ones.

    The cache holds one sequence per row: a batch with `segment_ids` (packed rows) is
    refused there. Nothing that decodes packs (the evaluator's policy builds one context
    per row), and an unpacked batch needs no ids.
    """
    if cache is None:
      return self.logits(self.hidden(batch, key=key)), None
    if 'segment_ids' in batch:
      raise ValueError('the KV cache decodes one sequence per row: pass the batch without '
                       'segment_ids (packed rows are for training and full forward passes)')
    x, stack_key = self._embed(batch, key)
    index, length = cache['index'], batch['tokens'].shape[1]
    valid = jax.lax.dynamic_update_slice(
        cache['valid'], batch['kinds'] != tokenizer.TokenKind.PAD, (0, index))
    query = index + jnp.arange(length)
    slots = jnp.arange(valid.shape[1])
    # Causal over cache slots; padding slots hidden, except from themselves, so that no
    # row of the mask is empty (left-padded prompts in a batch of different lengths).
    mask = (slots[None, :] <= query[:, None]) & valid[:, None, None, :]
    mask = mask | (slots[None, :] == query[:, None])
    kv = (cache['k'], cache['v'])
    x, kv = self.stack(x, self.options, stack_key, kv, index, mask)
    cache = {'k': kv[0], 'v': kv[1], 'index': index + length, 'valid': valid}
    return self.logits(x), cache

  def hidden(self, batch: dict[str, jax.Array], *, key: jax.Array | None = None) -> jax.Array:
    """The final-normed [B, L, D] states that `logits` maps to the vocabulary.

    The trainer takes these instead of logits when it chunks the output layer
    (model.loss_chunks, gato_jax/model/loss.py). With `segment_ids` in the batch (packed
    rows, gato_jax/model/inputs.py) every segment is computed as if it were alone.
    """
    x, stack_key = self._embed(batch, key)
    return self.stack(x, self.options, stack_key, segment_ids=batch.get('segment_ids'))[0]

  def _embed(self, batch, key):
    """Embeddings after dropout, and the key left for the stack's dropout (or None)."""
    keys = [None] * 3 if key is None else list(jax.random.split(key, 3))
    x = self.embedder(batch, self.options.dtype, keys[0])
    return self.dropout(x, deterministic=key is None, rngs=keys[1]), keys[2]

  def logits(self, x: jax.Array) -> jax.Array:
    """[..., D] -> float32 [..., vocab_rows] through the tied token table."""
    table = self.embedder.tokens[...].astype(x.dtype)
    logits = jnp.einsum('bld,vd->blv', x, table, preferred_element_type=jnp.float32)
    real = jnp.arange(self.vocab_rows) < self.vocab_size
    logits = jnp.where(real, logits, PADDED_LOGIT)
    return sharding.constrain(logits, ('batch', 'length', 'vocab'))


def from_config(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> Gato:
  """The model a run's config describes: `config.model`, vocabulary from `config.tokenizer`."""
  layout = tokenizer.layout_from_config(config)
  return Gato(ModelOptions.from_config(config), layout.vocab_size, rngs, layout.continuous_offset)


def count_params(model: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
