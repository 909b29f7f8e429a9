"""The pipeline's settings from config, read by the seqio tasks when a dataset is built.

seqio tasks are registered once, at import, under fixed names (T5X style); what differs
between runs (where the data lives, the token layout and text vocabulary, the prompt and
filtering rates) comes from `config.data` and `config.tokenizer`. `configure(config)` makes
them current before any task builds a dataset, as `seqio.set_tfds_data_dir_override` does
for TFDS names.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gato_jax import tokenizer

BAD_EXAMPLE_MODES = ('raise', 'drop')


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  """Every knob of the Gato data pipeline (configs/common.py data_config documents them)."""

  data_dir: str
  layout: tokenizer.TokenLayout
  vocabulary: Any  # A seqio.Vocabulary: text observations, text and captions.
  sequence_length: int  # L: tokens per training sequence.
  min_return_fraction: float = 0.8
  prompt_probability: float = 0.25
  prompt_end_probability: float = 0.5
  prompt_length: int = 0  # Tokens a prompt may take; 0 = a quarter of L.
  bad_examples: str = 'raise'
  episode_shuffle_buffer: int = 16
  caption_pairs: int = 5
  caption_image_size: int = 64
  caption_max_tokens: int = 32
  text_files: tuple[str, ...] = ()
  public_data_dir: str = ''  # Where every public RLDS dataset is read from; '' = its own.
  pack: bool = False  # Several short sequences per row, numbered by segment ids.

  @property
  def prompt_tokens(self) -> int:
    return self.prompt_length or self.sequence_length // 4


_CURRENT: PipelineOptions | None = None


def _require(data: Any, key: str, check: Any, expected: str) -> Any:
  value = data[key] if key in data else None
  if value is None or not check(value):
    raise ValueError(f'config key data.{key} must be {expected}, got {value!r}')
  return value


def from_config(config: Any) -> PipelineOptions:
  """`config.data` + `config.tokenizer` + `config.model.max_length`, checked key by key."""
  if 'data' not in config:
    raise ValueError('config has no `data` section (configs/common.py data_config)')
  data = config.data
  fraction = lambda x: isinstance(x, int | float) and 0.0 <= x <= 1.0  # noqa: E731
  natural = lambda x: isinstance(x, int) and x >= 0  # noqa: E731
  positive = lambda x: isinstance(x, int) and x > 0  # noqa: E731
  length = config.model.max_length
  prompt_length = _require(data, 'prompt_length', natural, 'an int >= 0')
  if prompt_length >= length:
    raise ValueError(
      f'config key data.prompt_length ({prompt_length}) must be below model.max_length '
      f'({length}): a prompt leaves room for the sequence it conditions'
    )
  image_size = _require(data, 'caption_image_size', positive, 'a positive int')
  if image_size % tokenizer.PATCH_SIZE:
    raise ValueError(
      f'config key data.caption_image_size must be a multiple of {tokenizer.PATCH_SIZE}, '
      f'got {image_size}'
    )
  files = data.get('text_files', '') or ''
  return PipelineOptions(
    data_dir=_require(data, 'data_dir', lambda x: isinstance(x, str) and x, 'a directory'),
    layout=tokenizer.layout_from_config(config),
    vocabulary=tokenizer.vocabulary_from_config(config),
    sequence_length=length,
    min_return_fraction=_require(data, 'min_return_fraction', fraction, 'in [0, 1]'),
    prompt_probability=_require(data, 'prompt_probability', fraction, 'in [0, 1]'),
    prompt_end_probability=_require(data, 'prompt_end_probability', fraction, 'in [0, 1]'),
    prompt_length=prompt_length,
    bad_examples=_require(
      data, 'bad_examples', lambda x: x in BAD_EXAMPLE_MODES, f'one of {BAD_EXAMPLE_MODES}'
    ),
    episode_shuffle_buffer=_require(data, 'episode_shuffle_buffer', positive, 'a positive int'),
    caption_pairs=_require(data, 'caption_pairs', positive, 'a positive int'),
    caption_image_size=image_size,
    caption_max_tokens=_require(data, 'caption_max_tokens', positive, 'a positive int'),
    text_files=tuple(f for f in files.split(',') if f),
    public_data_dir=data.get('public_data_dir', '') or '',
    pack=_require(data, 'pack', lambda x: isinstance(x, bool), 'a bool'),
  )


def configure(options: PipelineOptions) -> None:
  global _CURRENT
  _CURRENT = options


def current() -> PipelineOptions:
  if _CURRENT is None:
    raise RuntimeError(
      'the Gato seqio tasks need their settings: call gato_jax.data.options.configure('
      'options.from_config(config)) (gato_jax.data.make_iterator does) before get_dataset'
    )
  return _CURRENT
