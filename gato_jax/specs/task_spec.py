"""TaskSpec: one embodiment declared once; TaskTokenizer: a spec bound to a run's vocabulary.

The same `TaskTokenizer` tokenizes stored episodes in the data pipeline and live observations
in the evaluator, so training and deployment see identical token streams by construction.
The token layout, the value codecs and the field types are gato_jax/tokenizer.py's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gato_jax.tokenizer import (
  FIRST_OBSERVATION_POSITION,
  LOCAL_POSITION_ACTION,
  NUM_BINS,
  PATCH_SIZE,
  ContinuousField,
  DiscreteField,
  Field,
  ImageField,
  TextField,
  TokenizedSteps,
  TokenKind,
  TokenLayout,
  continuous_to_tokens,
  flatten_observation,
  patch_position_intervals,
  patchify,
  tokens_to_continuous,
)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """The declarative description of one embodiment (design.md, 'TaskSpec').

  Observation tokens are ordered as in the paper: text fields, then image fields, then the
  other tensors, each group in lexicographic order of the field names.
  """

  name: str
  observation: Sequence[Field]
  action: DiscreteField | ContinuousField

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

  @property
  def action_token_kind(self) -> TokenKind:
    """The TokenKind of this task's action tokens."""
    if isinstance(self.action, DiscreteField):
      return TokenKind.ACTION_DISCRETE
    return TokenKind.ACTION_CONTINUOUS

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
      act = self._encode_discrete(actions)
    else:
      act = self._encode_continuous(spec.action, actions)
    tokens.append(act)
    kinds.append(np.full(act.shape, spec.action_token_kind, np.int8))

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
