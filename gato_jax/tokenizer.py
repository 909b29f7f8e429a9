"""Gato's token layout, its value codecs, and the fields a TaskSpec is declared with.

Every modality becomes integers in one flat vocabulary, except image patches, which stay
pixels and are embedded by the model's ResNet block. The layout (see docs/tokenization.md):

    [0, V)                      text, from a seqio vocabulary (V = text_vocab_size)
    [V, V + 1024)               discrete values
    [V + 1024, V + 2048)        continuous values, mu-law companded then binned
    V + 2048                    the '|' separator between observation and action
    V + 2049                    placeholder id at image-patch positions (never a target)

Discrete values get their own range, instead of the paper's literal [0, 1024) overlap with
text, so that a token's id alone says what it is and action sampling can be restricted to
one range. Every offset comes from `TokenLayout`, which is built from the text vocabulary
size in config; no other module writes a literal 32000.

A `TaskSpec` (gato_jax/specs/) declares one embodiment with the fields below and tokenizes
its data into this layout: the same spec tokenizes stored episodes in the data pipeline and
live observations in the evaluator, so training and deployment see identical token streams.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import numpy as np

NUM_BINS = 1024  # Uniform bins over [-1, 1] for continuous values; also the discrete range.
MU = 100.0  # mu-law parameters from the paper's appendix B.
M = 256.0
PATCH_SIZE = 16
POSITION_BUCKETS = 128  # Quantization of a patch's normalized row/column interval.

# Local positions: 0 for tokens outside an episode (text documents, padding), 1 shared by
# the separator and every action token, then 2, 3, ... for the observation tokens.
LOCAL_POSITION_NONE = 0
LOCAL_POSITION_ACTION = 1
FIRST_OBSERVATION_POSITION = 2


class TokenKind(enum.IntEnum):
  """What a token is; the loss mask and per-kind metrics are derived from it."""

  PAD = 0
  TEXT = 1  # Text of a document or caption: a training target.
  OBSERVATION_TEXT = 2  # Text inside an observation (a BabyAI mission): context only.
  IMAGE = 3
  OBSERVATION_DISCRETE = 4
  OBSERVATION_CONTINUOUS = 5
  SEPARATOR = 6
  ACTION_DISCRETE = 7
  ACTION_CONTINUOUS = 8


LOSS_KINDS = (TokenKind.TEXT, TokenKind.ACTION_DISCRETE, TokenKind.ACTION_CONTINUOUS)


def loss_mask(kinds: np.ndarray) -> np.ndarray:
  """Gato trains only on text and on the logged agent's actions."""
  return np.isin(kinds, np.asarray(LOSS_KINDS, dtype=kinds.dtype))


@dataclasses.dataclass(frozen=True)
class TokenLayout:
  """Where each kind of value lives in the shared vocabulary."""

  text_vocab_size: int

  def __post_init__(self):
    if self.text_vocab_size <= 0:
      raise ValueError(f'text_vocab_size must be positive, got {self.text_vocab_size}')

  @property
  def discrete_offset(self) -> int:
    return self.text_vocab_size

  @property
  def continuous_offset(self) -> int:
    return self.text_vocab_size + NUM_BINS

  @property
  def separator(self) -> int:
    return self.text_vocab_size + 2 * NUM_BINS

  @property
  def image_placeholder(self) -> int:
    return self.separator + 1

  @property
  def vocab_size(self) -> int:
    """Size of the model's embedding table and logits."""
    return self.image_placeholder + 1

  def action_token_range(self, kind: str) -> tuple[int, int]:
    """[start, stop) of the ids an action of this kind may sample."""
    if kind == 'discrete':
      return self.discrete_offset, self.discrete_offset + NUM_BINS
    if kind == 'continuous':
      return self.continuous_offset, self.continuous_offset + NUM_BINS
    raise ValueError(f"action kind must be 'discrete' or 'continuous', got {kind!r}")


# ----------------------------------------------------------------------------------------
# Value codecs. numpy in, numpy out; vectorized over any shape.
# ----------------------------------------------------------------------------------------


def mu_law_encode(x: np.ndarray, mu: float = MU, m: float = M) -> np.ndarray:
  """Compands to [-1, 1] for |x| <= m; larger magnitudes land beyond ±1 and saturate later."""
  x = np.asarray(x, dtype=np.float64)
  return (np.sign(x) * np.log1p(np.abs(x) * mu) / np.log1p(m * mu)).astype(np.float32)


def mu_law_decode(y: np.ndarray, mu: float = MU, m: float = M) -> np.ndarray:
  """Inverse of `mu_law_encode`."""
  y = np.asarray(y, dtype=np.float64)
  return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(m * mu)) / mu).astype(np.float32)


def continuous_to_tokens(x: np.ndarray, offset: int, mu_law: bool = True) -> np.ndarray:
  """Bins values into [offset, offset + 1024); values past ±1 after companding saturate.

  NaN and ±inf raise a ValueError naming the first one's index: they have no bin, and a
  token made from one would be garbage that trains or acts silently (np.floor of NaN cast
  to int32 is an arbitrary id).
  """
  x = np.asarray(x)
  finite = np.isfinite(x)
  if not finite.all():
    index = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise ValueError(
      f'continuous_to_tokens: value {x[index]} at index {index if x.ndim != 1 else index[0]} '
      f'is not finite ({int((~finite).sum())} of {x.size} values); NaN and inf have no token'
    )
  y = mu_law_encode(x) if mu_law else np.asarray(x, dtype=np.float32)
  bins = np.floor((y.astype(np.float64) + 1.0) / 2.0 * NUM_BINS)
  return (np.clip(bins, 0, NUM_BINS - 1) + offset).astype(np.int32)


def tokens_to_continuous(tokens: np.ndarray, offset: int, mu_law: bool = True) -> np.ndarray:
  """Decodes each token to its bin's centre (then inverts mu-law)."""
  bins = np.asarray(tokens, dtype=np.int64) - offset
  if bins.size and (bins.min() < 0 or bins.max() >= NUM_BINS):
    raise ValueError(
      f'continuous tokens must lie in [{offset}, {offset + NUM_BINS}), '
      f'got values in [{bins.min() + offset}, {bins.max() + offset}]'
    )
  y = (-1.0 + (bins + 0.5) * (2.0 / NUM_BINS)).astype(np.float32)
  return mu_law_decode(y) if mu_law else y


def patchify(images: np.ndarray) -> np.ndarray:
  """[..., H, W, C] -> [..., H/16 * W/16, 16, 16, C], patches in raster order, dtype kept.

  The pipeline keeps patches uint8 until they reach the device; `normalize_patches` scales
  them there.
  """
  *lead, h, w, c = images.shape
  if h % PATCH_SIZE or w % PATCH_SIZE:
    raise ValueError(f'image height and width must be multiples of {PATCH_SIZE}, got {h}x{w}')
  rows, cols = h // PATCH_SIZE, w // PATCH_SIZE
  x = images.reshape(*lead, rows, PATCH_SIZE, cols, PATCH_SIZE, c)
  x = np.moveaxis(x, -4, -3)  # [..., rows, cols, 16, 16, C]
  return x.reshape(*lead, rows * cols, PATCH_SIZE, PATCH_SIZE, c)


# How uint8 pixels become the patch embedding's input (config key model.pixel_normalization).
# 'paper': [-1, 1] divided by sqrt(patch size) = 4, as Reed et al. write; black is -0.25.
# 'unit': [0, 1]; black is 0. On a dark frame (Atari) the paper's scaling gives every patch
# the same large black offset, which after the ResNet's GroupNorm and the transformer's
# LayerNorm drowns the few pixels that matter: the demo model never read Breakout's ball
# with it, and does with 'unit' (docs/performance.md, "Breakout alone").
PIXEL_NORMALIZATIONS = ('paper', 'unit')


def normalize_patches(patches: Any, pixels: str = 'paper') -> Any:
  """uint8 pixels to float32 by `pixels`, one of PIXEL_NORMALIZATIONS.

  Plain arithmetic, so it works on numpy and on jax arrays alike.
  """
  x = patches.astype('float32')
  if pixels == 'paper':
    return (x * (2.0 / 255.0) - 1.0) / np.sqrt(PATCH_SIZE).astype('float32')
  if pixels == 'unit':
    return x * (1.0 / 255.0)
  raise ValueError(f'pixel normalization must be one of {PIXEL_NORMALIZATIONS}, got {pixels!r}')


def image_to_patches(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] -> float32 [H/16 * W/16, 16, 16, 3] in raster order, scaled per Gato."""
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'image must have shape [H, W, 3], got {image.shape}')
  if image.dtype != np.uint8:
    raise ValueError(f'image must be uint8, got {image.dtype}')
  return normalize_patches(patchify(image))


def patch_position_intervals(height: int, width: int) -> np.ndarray:
  """int32 [P, 4]: each patch's (row_lo, row_hi, col_lo, col_hi) in [0, 128) buckets.

  Intervals are half-open and never empty. The model samples a bucket inside them while
  training and takes their rounded mean at evaluation (paper appendix C.3).
  """

  def intervals(n: int) -> np.ndarray:
    edges = np.floor(np.arange(n + 1) / n * POSITION_BUCKETS).astype(np.int32)
    lo = edges[:-1]
    return np.stack([lo, np.maximum(edges[1:], lo + 1)], axis=-1)

  rows = intervals(height // PATCH_SIZE)
  cols = intervals(width // PATCH_SIZE)
  r = np.repeat(rows, len(cols), axis=0)
  c = np.tile(cols, (len(rows), 1))
  return np.concatenate([r, c], axis=-1).astype(np.int32)


# ----------------------------------------------------------------------------------------
# Fields: what a TaskSpec's observations and action are made of (gato_jax/specs/).
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TextField:
  """A string observation, encoded to exactly `max_tokens` ids (padded with the pad id).

  A fixed count keeps tokens per timestep known from the spec alone. Longer text raises,
  unless `truncate` says cutting it is acceptable for this task.
  """

  name: str
  max_tokens: int
  truncate: bool = False

  @property
  def num_tokens(self) -> int:
    return self.max_tokens


@dataclasses.dataclass(frozen=True)
class ImageField:
  """A uint8 [height, width, 3] image; height and width are multiples of 16."""

  name: str
  height: int
  width: int

  def __post_init__(self):
    if self.height % PATCH_SIZE or self.width % PATCH_SIZE or self.height <= 0 or self.width <= 0:
      raise ValueError(
        f'image field {self.name!r}: height and width must be positive multiples of '
        f'{PATCH_SIZE}, got {self.height}x{self.width}'
      )

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.height, self.width, 3)

  @property
  def num_tokens(self) -> int:
    return (self.height // PATCH_SIZE) * (self.width // PATCH_SIZE)


@dataclasses.dataclass(frozen=True)
class DiscreteField:
  """Integers in [0, num_values), num_values <= 1024, flattened row-major."""

  name: str
  shape: tuple[int, ...] = ()
  num_values: int = NUM_BINS

  def __post_init__(self):
    object.__setattr__(self, 'shape', tuple(self.shape))
    if not 0 < self.num_values <= NUM_BINS:
      raise ValueError(
        f'discrete field {self.name!r}: num_values must be in [1, {NUM_BINS}], '
        f'got {self.num_values}'
      )

  @property
  def num_tokens(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class ContinuousField:
  """Floats, flattened row-major, binned into 1024 tokens.

  `low`/`high` (both or neither) map a bounded range such as a Box action space linearly
  onto [-1, 1] first. Then values are mu-law companded if `mu_law`, which Gato applies to
  observations; actions already in [-1, 1] are binned directly. A value outside what the
  bins represent (±1 after the linear map, ±M before mu-law) raises unless `saturate`
  allows it to land in the edge bin.
  """

  name: str
  shape: tuple[int, ...] = ()
  mu_law: bool = True
  low: float | None = None
  high: float | None = None
  saturate: bool = False

  def __post_init__(self):
    object.__setattr__(self, 'shape', tuple(self.shape))
    if (self.low is None) != (self.high is None):
      raise ValueError(f'continuous field {self.name!r}: give both low and high, or neither')
    if self.low is not None and not self.low < self.high:
      raise ValueError(
        f'continuous field {self.name!r}: low must be below high, got [{self.low}, {self.high}]'
      )

  @property
  def num_tokens(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  def to_unit(self, x: np.ndarray) -> np.ndarray:
    if self.low is None:
      return x
    return (x - self.low) * (2.0 / (self.high - self.low)) - 1.0

  def from_unit(self, y: np.ndarray) -> np.ndarray:
    if self.low is None:
      return y
    return ((y + 1.0) * ((self.high - self.low) / 2.0) + self.low).astype(np.float32)

  @property
  def bound(self) -> float:
    """Largest magnitude (after the linear map) that the bins represent."""
    return M if self.mu_law else 1.0

  @property
  def range_text(self) -> str:
    mapped = f'[{self.low}, {self.high}] maps to [-1, 1], ' if self.low is not None else ''
    return f'{mapped}|x| <= {self.bound:g}' + (' before mu-law' if self.mu_law else '')


Field = TextField | ImageField | DiscreteField | ContinuousField


@dataclasses.dataclass(frozen=True)
class TokenizedSteps:
  """Tokens of T timesteps, each laid out as observation, '|', action.

  `patches` and `patch_positions` hold one row per IMAGE token, in the order those tokens
  appear; patches stay uint8 until they reach the device.
  """

  tokens: np.ndarray  # int32 [T, N]
  kinds: np.ndarray  # int8 [T, N], TokenKind values
  local_positions: np.ndarray  # int32 [T, N]
  patches: np.ndarray  # uint8 [T, P, 16, 16, 3]
  patch_positions: np.ndarray  # int32 [T, P, 4]: row_lo, row_hi, col_lo, col_hi buckets

  @property
  def loss_mask(self) -> np.ndarray:
    return loss_mask(self.kinds)


def flatten_observation(observation: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """Nested dicts to {'a/b': value}; TaskSpec field names use the same '/' paths."""
  flat = {}
  for key, value in observation.items():
    path = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(flatten_observation(value, prefix=f'{path}/'))
    else:
      flat[path] = value
  return flat


# ----------------------------------------------------------------------------------------
# From config: the layout and the text vocabulary every task of a run shares.
# ----------------------------------------------------------------------------------------


def layout_from_config(config: Any) -> TokenLayout:
  """`config.tokenizer.text_vocab_size` -> TokenLayout, with an error naming the key."""
  size = config.tokenizer.text_vocab_size
  if not isinstance(size, int) or size <= 0:
    raise ValueError(f'config key tokenizer.text_vocab_size must be a positive int, got {size!r}')
  return TokenLayout(size)


def vocabulary_from_config(config: Any) -> Any:
  """`config.tokenizer.vocabulary`: 'byte' or the path of a SentencePiece model.

  Production configs name seqio's 32,000-piece T5 model (the size of Gato's text
  vocabulary); tests and the offline demo use bytes or a model trained locally.
  """
  import seqio  # Deferred: importing TensorFlow costs seconds that pure tokenizing doesn't need.

  name = config.tokenizer.vocabulary
  if name == 'byte':
    vocabulary = seqio.ByteVocabulary()
  elif isinstance(name, str) and name:
    vocabulary = seqio.SentencePieceVocabulary(name)
  else:
    raise ValueError(
      f"config key tokenizer.vocabulary must be 'byte' or a SentencePiece model path, got {name!r}"
    )
  size = config.tokenizer.text_vocab_size
  if vocabulary.vocab_size > size:
    raise ValueError(
      f'config key tokenizer.text_vocab_size={size} is smaller than the vocabulary '
      f'{name!r} ({vocabulary.vocab_size} ids); text ids would collide with discrete tokens'
    )
  return vocabulary
