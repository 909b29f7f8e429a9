"""Gato's token layout, and the TaskSpec that turns one embodiment's data into it.

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

The same `TaskSpec` tokenizes stored episodes in the data pipeline and live observations in
the evaluator, so training and deployment see identical token streams by construction.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
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
  """Bins values into [offset, offset + 1024); values past ±1 after companding saturate."""
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


def normalize_patches(patches: Any) -> Any:
  """uint8 pixels to [-1, 1], then divided by sqrt(patch size) = 4, as in the paper.

  Plain arithmetic, so it works on numpy and on jax arrays alike.
  """
  return (patches.astype('float32') * (2.0 / 255.0) - 1.0) / np.sqrt(PATCH_SIZE).astype('float32')


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
# TaskSpec: one embodiment, declared once, used by the pipeline and the evaluator.
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


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """The declarative description of one embodiment (design.md, 'TaskSpec').

  Observation tokens are ordered as in the paper: text fields, then image fields, then the
  other tensors, each group in lexicographic order of the field names.
  """

  name: str
  observation: Sequence[Field]
  action: DiscreteField | ContinuousField
  expert_return: float | None = None
  random_return: float | None = None

  def __post_init__(self):
    names = [f.name for f in self.observation]
    if len(set(names)) != len(names):
      raise ValueError(f'task {self.name!r}: duplicate observation field names {names}')
    if isinstance(self.action, DiscreteField) and self.action.num_values > NUM_BINS:
      raise ValueError(f'task {self.name!r}: discrete action has more than {NUM_BINS} values')
    group = {TextField: 0, ImageField: 1}
    ordered = sorted(self.observation, key=lambda f: (group.get(type(f), 2), f.name))
    object.__setattr__(self, 'observation', tuple(ordered))

  # Counts are known from the spec alone; the pipeline windows on them.
  @property
  def observation_tokens(self) -> int:
    return sum(f.num_tokens for f in self.observation)

  @property
  def action_tokens(self) -> int:
    return self.action.num_tokens

  @property
  def tokens_per_timestep(self) -> int:
    return self.observation_tokens + 1 + self.action_tokens

  def token_spans(self) -> list[tuple[str, int, int]]:
    """(field name, start, stop) of every field inside a timestep, the separator as '|'."""
    spans, start = [], 0
    for f in (*self.observation, None, self.action):
      name, n = ('|', 1) if f is None else (f.name, f.num_tokens)
      spans.append((name, start, start + n))
      start += n
    return spans

  @property
  def image_patches_per_timestep(self) -> int:
    return sum(f.num_tokens for f in self.observation if isinstance(f, ImageField))

  @property
  def action_kind(self) -> str:
    return 'discrete' if isinstance(self.action, DiscreteField) else 'continuous'

  def check_steps(
    self, observations: Mapping[str, Any], actions: Any
  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Validates T timesteps (every field with a leading time axis) against the spec.

    Returns the observation fields and actions as checked numpy arrays (strings as an
    object array). Raises ValueError naming the task, the field and, for values, the step
    and index: the dataset writer, the pipeline and the evaluator all reject bad data here,
    and nothing is clipped or dropped unless the spec says so.
    """
    actions = np.asarray(actions)
    if actions.ndim == 0:
      raise self._error('action', 'needs a leading time axis')
    checked = self.check_observations(observations, actions.shape[0])
    return checked, self._check(self.action, actions, actions.shape[0])

  def check_observations(
    self, observations: Mapping[str, Any], num_steps: int
  ) -> dict[str, np.ndarray]:
    """The observation half of `check_steps`, for callers that have no actions yet."""
    observations = flatten_observation(observations)
    expected = {f.name for f in self.observation}
    missing, unexpected = expected - observations.keys(), observations.keys() - expected
    if missing:
      raise self._error(sorted(missing)[0], f'missing from the observation ({sorted(missing)})')
    if unexpected:
      raise self._error(sorted(unexpected)[0], f'not in the task spec ({sorted(unexpected)})')
    return {f.name: self._check(f, observations[f.name], num_steps) for f in self.observation}

  def _error(self, field: str, message: str) -> ValueError:
    return ValueError(f'task {self.name!r}, field {field!r}: {message}')

  @staticmethod
  def _where(bad: np.ndarray) -> str:
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return f'step {index[0]}, index {index[1:]}'

  def _check(self, f: Field, value: Any, num_steps: int) -> np.ndarray:
    value = np.asarray(value, dtype=object if isinstance(f, TextField) else None)
    if isinstance(f, TextField):
      if value.shape != (num_steps,):
        raise self._error(f.name, f'expected one string per step, got shape {value.shape[1:]}')
      for t, text in enumerate(value):
        if isinstance(text, bytes):
          value[t] = text.decode('utf-8')
        elif not isinstance(text, str):
          raise self._error(f.name, f'expected a string at step {t}, got {type(text).__name__}')
      return value
    if isinstance(f, ImageField):
      if value.ndim != 4:
        raise self._error(f.name, f'expected a rank-3 image [H, W, 3], got rank {value.ndim - 1}')
      if value.dtype != np.uint8:
        raise self._error(f.name, f'expected uint8 pixels, got {value.dtype}')
    elif isinstance(f, DiscreteField):
      if value.dtype == np.bool_:
        value = value.astype(np.int32)
      if not np.issubdtype(value.dtype, np.integer):
        raise self._error(f.name, f'discrete values must be integers, got dtype {value.dtype}')
    elif not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
      raise self._error(f.name, f'continuous values must be numbers, got dtype {value.dtype}')
    shape = f.shape
    if value.shape != (num_steps, *shape):
      raise self._error(
        f.name,
        f'expected shape {shape} per step for {num_steps} steps, got {value.shape[1:]} '
        f'for {value.shape[0] if value.ndim else 0} steps',
      )
    if isinstance(f, DiscreteField):
      bad = (value < 0) | (value >= f.num_values)
      if bad.any():
        raise self._error(
          f.name, f'value {value[bad][0]} at {self._where(bad)} is outside [0, {f.num_values})'
        )
    elif isinstance(f, ContinuousField):
      value = value.astype(np.float32)
      bad = ~np.isfinite(value)
      if bad.any():
        raise self._error(f.name, f'non-finite value {value[bad][0]} at {self._where(bad)}')
      if not f.saturate:
        bad = np.abs(f.to_unit(value)) > f.bound * (1 + 1e-6)
        if bad.any():
          raise self._error(
            f.name,
            f'value {value[bad][0]} at {self._where(bad)} is beyond what the bins represent '
            f'({f.range_text}); set saturate=True in the spec to let it take the edge bin',
          )
    return value

  def tokenizer(self, layout: TokenLayout, vocabulary: Any = None) -> TaskTokenizer:
    """Binds this spec to the run's token layout and text vocabulary."""
    return TaskTokenizer(self, layout, vocabulary)


@dataclasses.dataclass(frozen=True)
class TaskTokenizer:
  """A TaskSpec bound to a token layout and a text vocabulary.

  The data pipeline and the evaluator's env wrappers both tokenize through this one class.
  `vocabulary` is a seqio.Vocabulary, needed only when the spec has text fields; its ids
  must fit below the layout's text_vocab_size.
  """

  spec: TaskSpec
  layout: TokenLayout
  vocabulary: Any = None

  def __post_init__(self):
    has_text = any(isinstance(f, TextField) for f in self.spec.observation)
    if has_text and self.vocabulary is None:
      raise ValueError(f'task {self.spec.name!r} has text fields but no vocabulary was given')
    if self.vocabulary is not None and self.vocabulary.vocab_size > self.layout.text_vocab_size:
      raise ValueError(
        f'task {self.spec.name!r}: the text vocabulary has {self.vocabulary.vocab_size} ids, '
        f'more than text_vocab_size={self.layout.text_vocab_size} in config; its ids would '
        'collide with discrete tokens'
      )

  def tokenize_timestep(self, observation: Mapping[str, Any], action: Any) -> TokenizedSteps:
    """One timestep; arrays keep a leading time axis of 1 (see `tokenize_steps`)."""
    batched = {k: np.asarray(v)[None] for k, v in flatten_observation(observation).items()}
    return self.tokenize_steps(batched, np.asarray(action)[None])

  def tokenize_steps(self, observations: Mapping[str, Any], actions: Any) -> TokenizedSteps:
    """T timesteps at once: every field is an array with a leading time axis.

    Values are validated by `TaskSpec.check_steps` first, which names the task, the
    field and the step of anything the spec cannot represent.
    """
    spec, layout = self.spec, self.layout
    observations, actions = spec.check_steps(observations, actions)
    num_steps = actions.shape[0]
    tokens, kinds, patches, patch_positions = [], [], [], []
    for f in spec.observation:
      value = observations[f.name]
      if isinstance(f, TextField):
        tok, kind = self._encode_text(f, value), TokenKind.OBSERVATION_TEXT
      elif isinstance(f, ImageField):
        patches.append(patchify(value))
        intervals = patch_position_intervals(f.height, f.width)
        patch_positions.append(np.broadcast_to(intervals, (num_steps, *intervals.shape)))
        tok = np.full((num_steps, f.num_tokens), layout.image_placeholder, np.int32)
        kind = TokenKind.IMAGE
      elif isinstance(f, DiscreteField):
        tok, kind = self._encode_discrete(value), TokenKind.OBSERVATION_DISCRETE
      else:
        tok, kind = self._encode_continuous(f, value), TokenKind.OBSERVATION_CONTINUOUS
      tokens.append(tok)
      kinds.append(np.full(tok.shape, kind, np.int8))

    tokens.append(np.full((num_steps, 1), layout.separator, np.int32))
    kinds.append(np.full((num_steps, 1), TokenKind.SEPARATOR, np.int8))
    if isinstance(spec.action, DiscreteField):
      act, kind = self._encode_discrete(actions), TokenKind.ACTION_DISCRETE
    else:
      act, kind = self._encode_continuous(spec.action, actions), TokenKind.ACTION_CONTINUOUS
    tokens.append(act)
    kinds.append(np.full(act.shape, kind, np.int8))

    first = FIRST_OBSERVATION_POSITION
    positions = np.concatenate(
      [
        np.arange(first, first + spec.observation_tokens, dtype=np.int32),
        np.full(1 + spec.action_tokens, LOCAL_POSITION_ACTION, np.int32),
      ]
    )
    if not patches:
      patches = [np.zeros((num_steps, 0, PATCH_SIZE, PATCH_SIZE, 3), np.uint8)]
      patch_positions = [np.zeros((num_steps, 0, 4), np.int32)]
    return TokenizedSteps(
      tokens=np.concatenate(tokens, axis=1),
      kinds=np.concatenate(kinds, axis=1),
      local_positions=np.broadcast_to(positions, (num_steps, len(positions))).copy(),
      patches=np.concatenate(patches, axis=1),
      patch_positions=np.concatenate(patch_positions, axis=1),
    )

  def detokenize_action(self, tokens: np.ndarray) -> np.ndarray:
    """One timestep's action tokens ([action_tokens] ids) back to the env's action.

    A discrete action of shape () comes back as a numpy integer scalar, as gymnasium's
    Discrete spaces expect. Ids outside the action's range raise: sampling restricted to
    that range never produces them, so one showing up is a bug upstream.
    """
    spec, layout = self.spec, self.layout
    tokens = np.asarray(tokens)
    if tokens.shape != (spec.action_tokens,):
      raise spec._error(
        'action', f'expected {spec.action_tokens} action tokens, got shape {tokens.shape}'
      )
    a = spec.action
    if isinstance(a, DiscreteField):
      values = tokens.astype(np.int64) - layout.discrete_offset
      bad = (values < 0) | (values >= a.num_values)
      if bad.any():
        raise spec._error(
          'action',
          f'token {tokens[bad][0]} is not a discrete action token: allowed ids are '
          f'[{layout.discrete_offset}, {layout.discrete_offset + a.num_values})',
        )
      return values.reshape(a.shape)
    try:
      y = tokens_to_continuous(tokens, layout.continuous_offset, mu_law=a.mu_law)
    except ValueError as e:
      raise spec._error('action', str(e)) from None
    return a.from_unit(y).reshape(a.shape)

  # -- per-kind encoders of checked values, vectorized over time ---------------------------

  def _encode_discrete(self, value: np.ndarray) -> np.ndarray:
    return value.reshape(len(value), -1).astype(np.int32) + np.int32(self.layout.discrete_offset)

  def _encode_continuous(self, f: ContinuousField, value: np.ndarray) -> np.ndarray:
    unit = f.to_unit(value).reshape(len(value), -1)
    return continuous_to_tokens(unit, self.layout.continuous_offset, f.mu_law)

  def _encode_text(self, f: TextField, value: np.ndarray) -> np.ndarray:
    out = np.full((len(value), f.max_tokens), self.vocabulary.pad_id, np.int32)
    cache: dict[str, list[int]] = {}  # A mission repeats at every step of its episode.
    for t, text in enumerate(value):
      ids = cache.get(text)
      if ids is None:
        ids = cache[text] = list(self.vocabulary.encode(text))
      if len(ids) > f.max_tokens:
        if not f.truncate:
          raise self.spec._error(
            f.name,
            f'text at step {t} has {len(ids)} tokens, more than max_tokens={f.max_tokens} '
            f'(set truncate=True in the spec to cut it): {text!r}',
          )
        ids = ids[: f.max_tokens]
      out[t, : len(ids)] = ids
    return out


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
