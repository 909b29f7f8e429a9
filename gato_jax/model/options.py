"""The model's settings, typed and checked once: `config.model` crosses into the model here.

  options = ModelOptions.from_config(config)  # Raises ValueError naming `model.<key>`.
  model = Gato(options, vocab_size, rngs)

Every key is defined, with its comment and default, in configs/models.py `model_config`;
this class is what the model, the FLOP count (gato_jax/metrics.py) and gato_jax.aot read,
so that no untyped ConfigDict travels past the boundary. An instance is always valid:
`__post_init__` checks every field, so `dataclasses.replace(options, remat='full')` is
checked too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from gato_jax import tokenizer
from gato_jax.model import splash
from gato_jax.model.embedding import VALUE_EMBEDDING_INITS
from gato_jax.model.transformer import (
    ATTENTION_IMPLEMENTATIONS,
    POSITION_ENCODINGS,
    REMAT_NAMES,
    REMAT_POLICIES,
)

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
POSITIVE_INTS = ('num_layers', 'd_model', 'num_heads', 'head_dim', 'mlp_dim', 'local_positions',
                 'resnet_channels', 'resnet_groups', 'vocab_multiple', 'max_length')
CHOICES = {'dtype': DTYPES, 'param_dtype': DTYPES, 'remat': REMAT_POLICIES,
           'attention': ATTENTION_IMPLEMENTATIONS, 'value_embedding_init': VALUE_EMBEDDING_INITS,
           'position_encoding': POSITION_ENCODINGS,
           'pixel_normalization': tokenizer.PIXEL_NORMALIZATIONS}


def names(value: str | tuple[str, ...]) -> tuple[str, ...]:
  """'a, b' -> ('a', 'b'): the comma-separated lists of remat_save and remat_offload."""
  if isinstance(value, tuple):
    return value
  return tuple(n.strip() for n in (value or '').split(',') if n.strip())


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """`config.model` as the model reads it (meanings: configs/models.py)."""

  num_layers: int
  d_model: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  max_length: int
  dropout_rate: float
  local_positions: int
  resnet_channels: int
  resnet_groups: int
  vocab_multiple: int
  dtype: str
  param_dtype: str
  remat: str
  remat_save: tuple[str, ...]  # In the config, a comma-separated string.
  remat_offload: tuple[str, ...]  # Likewise.
  remat_patches: bool
  loss_chunks: int
  scan_layers: bool
  attention: str
  value_embedding_init: str
  position_encoding: str
  pixel_normalization: str

  @classmethod
  def from_config(cls, config: Any) -> ModelOptions:
    """The options of a run's config (its `model` section)."""
    return cls.from_model_config(config.model)

  @classmethod
  def from_model_config(cls, model: Mapping[str, Any]) -> ModelOptions:
    """The options of a `config.model` section; raises ValueError naming a bad key."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(model.keys()) - set(fields))
    if unknown:
      raise ValueError(f'config key model.{unknown[0]} is not a model option; the options '
                       f'are {fields} (configs/models.py)')
    missing = [f for f in fields if f not in model]
    if missing:
      raise ValueError(f'config key model.{missing[0]} is missing (configs/models.py has '
                       'every model option with its default)')
    return cls(**{f: model[f] for f in fields})

  def __post_init__(self):
    for key in ('remat_save', 'remat_offload'):
      object.__setattr__(self, key, names(getattr(self, key)))
    self._validate()

  def _validate(self) -> None:
    for key in POSITIVE_INTS:
      value = getattr(self, key)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f'config key model.{key} must be a positive int, got {value!r}')
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'config key model.dropout_rate must be in [0, 1), got {self.dropout_rate}')
    for key, allowed in CHOICES.items():
      if getattr(self, key) not in allowed:
        raise ValueError(f'config key model.{key} must be one of {sorted(allowed)}, '
                         f'got {getattr(self, key)!r}')
    for key in ('scan_layers', 'remat_patches'):
      if not isinstance(getattr(self, key), bool):
        raise ValueError(f'config key model.{key} must be a bool, got {getattr(self, key)!r}')
    chunks = self.loss_chunks
    if not isinstance(chunks, int) or chunks <= 0 or self.max_length % chunks:
      raise ValueError(f'config key model.loss_chunks must be a positive int dividing '
                       f'model.max_length ({self.max_length}), got {chunks!r}')
    for key in ('remat_save', 'remat_offload'):
      unknown = [n for n in getattr(self, key) if n not in REMAT_NAMES]
      if unknown:
        raise ValueError(f'config key model.{key} names unknown tensors {unknown}; known: '
                         f'{list(REMAT_NAMES)}')
      if getattr(self, key) and self.remat != 'names':
        raise ValueError(f"config key model.{key} is set, which needs model.remat='names' "
                         f'(it is {self.remat!r})')
    both = set(self.remat_save) & set(self.remat_offload)
    if both:
      raise ValueError(f'config keys model.remat_save and model.remat_offload both name '
                       f'{sorted(both)}')
    if self.attention == 'splash':
      splash.block_size(self.max_length)
    if self.position_encoding == 'rope' and self.head_dim % 2:
      raise ValueError(f'config key model.head_dim must be even for '
                       f"model.position_encoding='rope', got {self.head_dim}")
    if self.resnet_channels % self.resnet_groups:
      raise ValueError(f'config key model.resnet_channels ({self.resnet_channels}) must be a '
                       f'multiple of model.resnet_groups ({self.resnet_groups})')

  def vocab_rows(self, vocab_size: int) -> int:
    """Rows of the token table (the logits' width): `vocab_size` rounded up to a multiple of
    `vocab_multiple`. The model, the FLOP count and the trainer all read it here."""
    return -(-vocab_size // self.vocab_multiple) * self.vocab_multiple
