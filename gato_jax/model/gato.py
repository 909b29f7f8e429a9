"""Gato: the embedder, the decoder stack and the tied output layer, built from config.

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
from gato_jax.model import splash
from gato_jax.model.embedding import VALUE_EMBEDDING_INITS, Embedder
from gato_jax.model.transformer import (
    ATTENTION_IMPLEMENTATIONS,
    POSITION_ENCODINGS,
    REMAT_NAMES,
    REMAT_POLICIES,
    DecoderStack,
    StackOptions,
)

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
PADDED_LOGIT = -1e9  # Finite, so that 0 * logit never makes a NaN.

Cache = dict[str, jax.Array]


def validate_config(model: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad `model.*` key; run once at start-up."""
  positive = ('num_layers', 'd_model', 'num_heads', 'head_dim', 'mlp_dim', 'local_positions',
              'resnet_channels', 'resnet_groups', 'vocab_multiple', 'max_length')
  for key in positive:
    value = model.get(key)
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f'config key model.{key} must be a positive int, got {value!r}')
  if not 0.0 <= model.dropout_rate < 1.0:
    raise ValueError(f'config key model.dropout_rate must be in [0, 1), got {model.dropout_rate}')
  choices = {'dtype': DTYPES, 'param_dtype': DTYPES, 'remat': REMAT_POLICIES,
             'attention': ATTENTION_IMPLEMENTATIONS, 'value_embedding_init': VALUE_EMBEDDING_INITS,
             'position_encoding': POSITION_ENCODINGS}
  for key, allowed in choices.items():
    if model.get(key) not in allowed:
      raise ValueError(f'config key model.{key} must be one of {sorted(allowed)}, '
                       f'got {model.get(key)!r}')
  for key in ('scan_layers', 'remat_patches'):
    if not isinstance(model.get(key), bool):
      raise ValueError(f'config key model.{key} must be a bool, got {model.get(key)!r}')
  chunks = model.get('loss_chunks')
  if not isinstance(chunks, int) or chunks <= 0 or model.max_length % chunks:
    raise ValueError(f'config key model.loss_chunks must be a positive int dividing '
                     f'model.max_length ({model.max_length}), got {chunks!r}')
  for key in ('remat_save', 'remat_offload'):
    unknown = [n for n in names(model.get(key)) if n not in REMAT_NAMES]
    if unknown:
      raise ValueError(f'config key model.{key} names unknown tensors {unknown}; known: '
                       f'{list(REMAT_NAMES)}')
    if names(model.get(key)) and model.remat != 'names':
      raise ValueError(f"config key model.{key} is set, which needs model.remat='names' "
                       f'(it is {model.remat!r})')
  both = set(names(model.remat_save)) & set(names(model.remat_offload))
  if both:
    raise ValueError(f'config keys model.remat_save and model.remat_offload both name '
                     f'{sorted(both)}')
  if model.attention == 'splash':
    splash.block_size(model.max_length)
  if model.position_encoding == 'rope' and model.head_dim % 2:
    raise ValueError(f'config key model.head_dim must be even for '
                     f"model.position_encoding='rope', got {model.head_dim}")
  if model.resnet_channels % model.resnet_groups:
    raise ValueError(f'config key model.resnet_channels ({model.resnet_channels}) must be a '
                     f'multiple of model.resnet_groups ({model.resnet_groups})')


# model.* keys that change how a step runs (memory, kernels, compile time, training-only
# noise, context length), not the function the parameters compute: a checkpoint moves
# freely between their values. Every other model key must match the checkpoint's.
EXECUTION_KEYS = frozenset({
    'remat', 'remat_save', 'remat_offload', 'remat_patches', 'loss_chunks', 'scan_layers',
    'attention', 'dropout_rate', 'dtype', 'param_dtype', 'max_length'})


def checkpoint_differences(saved: Any, config: ml_collections.ConfigDict) -> list[str]:
  """'model.KEY: checkpoint X, config Y' for each setting that changes what a model computes.

  `saved` is the config a checkpoint's `meta` item recorded (a dict or ConfigDict). Keys
  it does not have (checkpoints older than the key) are not compared.
  """
  saved_model = dict(saved.get('model') or {})
  differ = [
      f'model.{k}: checkpoint {saved_model[k]!r}, config {config.model.get(k)!r}'
      for k in sorted(config.model.keys())
      if k not in EXECUTION_KEYS and k in saved_model and saved_model[k] != config.model[k]
  ]
  saved_vocab = dict(saved.get('tokenizer') or {}).get('text_vocab_size')
  if saved_vocab is not None and saved_vocab != config.tokenizer.text_vocab_size:
    differ.append(f'tokenizer.text_vocab_size: checkpoint {saved_vocab}, '
                  f'config {config.tokenizer.text_vocab_size}')
  return differ


def names(value: str) -> tuple[str, ...]:
  """'a, b' -> ('a', 'b'): the comma-separated lists of remat_save and remat_offload."""
  return tuple(n.strip() for n in (value or '').split(',') if n.strip())


def check_task_fits(spec: specs.TaskSpec, model: ml_collections.ConfigDict) -> None:
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

  def __init__(self, model: ml_collections.ConfigDict, vocab_size: int, rngs: nnx.Rngs,
               first_value_row: int | None = None):
    """`first_value_row`: the continuous-value offset, which `value_embedding_init` needs."""
    validate_config(model)
    ordinal = model.value_embedding_init == 'ordinal'
    if ordinal and first_value_row is None:
      raise ValueError("config key model.value_embedding_init='ordinal' needs the token "
                       'layout: build the model with gato.from_config')
    self.vocab_size = vocab_size
    self.vocab_rows = -(-vocab_size // model.vocab_multiple) * model.vocab_multiple
    self.max_length = model.max_length
    self.options = StackOptions(
        dtype=DTYPES[model.dtype], attention=model.attention, remat=model.remat,
        remat_save=names(model.remat_save), remat_offload=names(model.remat_offload),
        scan_layers=model.scan_layers, rope=model.position_encoding == 'rope')
    param_dtype = DTYPES[model.param_dtype]
    self.embedder = Embedder(self.vocab_rows, model.d_model, model.local_positions,
                             model.resnet_channels, model.resnet_groups, rngs, param_dtype,
                             first_value_row if ordinal else None, model.remat_patches)
    self.dropout = nnx.Dropout(model.dropout_rate)
    self.stack = DecoderStack(model.num_layers, model.d_model, model.num_heads, model.head_dim,
                              model.mlp_dim, model.dropout_rate, rngs, param_dtype)

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
    """With a cache (see decode.py), appends the batch's tokens after the cached ones."""
    if cache is None:
      return self.logits(self.hidden(batch, key=key)), None
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
    (model.loss_chunks, gato_jax/model/loss.py).
    """
    x, stack_key = self._embed(batch, key)
    return self.stack(x, self.options, stack_key)[0]

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
  return Gato(config.model, layout.vocab_size, rngs, layout.continuous_offset)


def count_params(model: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
