"""Gato acting in environments: the deployment loop of the paper (§5 of the reference).

A batch of environments of one task runs in lockstep rounds. At the start of a round each
row's context is a demonstration from the task's dataset (the prompt); at every step each
row appends its observation tokens and the '|' separator, then the action tokens are
sampled one at a time, each restricted to the action kind's token range, and appended too.
The de-tokenized action goes to the environment.

The context is the truth and the KV cache only an accelerator: every row keeps its context
as input arrays on the host, and the cache is rebuilt from them (one prefill) at the start
of a round and whenever the context would pass the model's L tokens. Then every row slides
to its newest whole timesteps that fit in `slide_to` tokens, so that the rebuild is paid
once per `L - slide_to` tokens rather than at every step. Without a cache (`use_cache=False`,
for the latency benchmark and as a check) the same contexts are re-run in full for each
token; greedy actions come out the same either way (tests/test_evaluator.py).

The model has no absolute positions (only positions inside a timestep), so a context that
slid is exactly what a model trained on windows starting at a timestep boundary expects.

Sampling itself runs on device (gato_jax/model/sampling.py); the rounds of episodes that
drive this policy, and the reference policies, are gato_jax/envs/runner.py's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from gato_jax import specs
from gato_jax.envs.wrappers import (
  TokenizedEnv,
  TokenizedObservation,
  action_inputs,
  model_inputs,
  sampling_range,
)
from gato_jax.model import decode, inputs, sampling
from gato_jax.model.gato import Gato
from gato_jax.model.inputs import Inputs

PROMPT_MODES = ('end', 'uniform', 'none')


# ----------------------------------------------------------------------------------------
# Prompts: a demonstration from the task's dataset
# ----------------------------------------------------------------------------------------


def demonstration_prompt(
  task_tokenizer: specs.TaskTokenizer,
  observations: dict[str, np.ndarray],
  actions: np.ndarray,
  max_tokens: int,
  mode: str,
  rng: np.random.Generator,
) -> Inputs:
  """Whole timesteps of one demonstration, at most `max_tokens` positions.

  'end' takes the episode's last timesteps (they show the goal being reached, as Gato's
  prompts do); 'uniform' a window starting at a uniformly drawn timestep; 'none' nothing.
  `observations`/`actions` hold the episode's T acted steps (RLDS's final padding step
  already dropped, as the training pipeline drops it).
  """
  if mode not in PROMPT_MODES:
    raise ValueError(f'config key eval.prompt_mode must be one of {PROMPT_MODES}, got {mode!r}')
  per_step = task_tokenizer.spec.tokens_per_timestep
  count = min(len(actions), max_tokens // per_step) if mode != 'none' else 0
  if count == 0:  # Also when a timestep is longer than the prompt budget, as in training.
    return inputs.empty()
  start = len(actions) - count
  if mode == 'uniform':
    start = int(rng.integers(0, len(actions) - count + 1))
  window = {k: v[start : start + count] for k, v in observations.items()}
  return model_inputs(task_tokenizer.tokenize_steps(window, actions[start : start + count]))


# ----------------------------------------------------------------------------------------
# Policies
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """How Gato samples; `config.eval` carries these (configs/common.py, eval_config)."""

  temperature: float = 1.0  # 0 = greedy.
  prompt_mode: str = 'end'  # 'end', 'uniform' or 'none'.
  prompt_tokens: int = 0  # Most prompt positions; 0 = L // 4, the pipeline's default.
  slide_to: int = -1  # Positions kept when the context would pass L; -1 = L // 2 or less.
  use_cache: bool = True  # False re-runs the whole context per token (benchmark, checks).


class Context:
  """One row's context on the host: appended in pieces, joined only when read."""

  def __init__(self, piece: Inputs):
    self.pieces, self.length = [piece], len(piece['tokens'])

  def append(self, piece: Inputs) -> None:
    self.pieces.append(piece)
    self.length += len(piece['tokens'])

  def inputs(self) -> Inputs:
    if len(self.pieces) > 1:
      self.pieces = [inputs.concat(self.pieces)]
    return self.pieces[0]

  def keep_last(self, positions: int) -> None:
    joined = self.inputs()
    start = max(0, self.length - positions)
    self.pieces, self.length = [{k: v[start:] for k, v in joined.items()}], self.length - start


class GatoPolicy:
  """Gato's deployment loop over a batch of rows of one task, as the module docstring says."""

  def __init__(
    self,
    model: Gato,
    task_tokenizer: specs.TaskTokenizer,
    demonstrations: Sequence[tuple[dict[str, np.ndarray], np.ndarray]],
    options: SamplingOptions = SamplingOptions(),
    seed: int = 0,
  ):
    spec = task_tokenizer.spec
    self.model, self.task_tokenizer, self.options = model, task_tokenizer, options
    self.length = model.max_length
    self.per_step = spec.tokens_per_timestep
    self.observation_positions = spec.observation_tokens + 1  # With the separator.
    self.action_tokens = spec.action_tokens
    room = self.length - self.per_step  # Context positions that leave room for a timestep.
    if room < 0:
      raise ValueError(
        f'task {spec.name!r}: a timestep is {self.per_step} tokens, more than the context '
        f'(config key model.max_length = {self.length})'
      )
    slide_to = min(self.length // 2, room) if options.slide_to < 0 else options.slide_to
    if not 0 <= slide_to <= room:
      raise ValueError(
        f'task {spec.name!r}: config key eval.slide_to={slide_to} must be in [0, {room}]: '
        f'L={self.length} minus a timestep of {self.per_step} tokens'
      )
    self.slide_to = slide_to // self.per_step * self.per_step  # Whole timesteps.
    # The default matches training's prompts (a quarter of L in whole timesteps), so a task
    # whose timestep is longer than that gets no prompt here either.
    default = min(self.length // 4, room)
    self.prompt_tokens = default if options.prompt_tokens == 0 else options.prompt_tokens
    if not 0 <= self.prompt_tokens <= room:
      raise ValueError(
        f'task {spec.name!r}: config key eval.prompt_tokens={self.prompt_tokens} must be in '
        f'[0, {room}], leaving room for the first timestep of {self.per_step} tokens'
      )
    if options.prompt_mode != 'none' and not demonstrations:
      raise ValueError(
        f'task {spec.name!r}: prompt mode {options.prompt_mode!r} needs at least one '
        'demonstration episode'
      )
    self.demonstrations = list(demonstrations)
    self.start, self.stop = sampling_range(task_tokenizer)
    self.action_kind = int(task_tokenizer.spec.action_token_kind)
    self.key = jax.random.key(seed)
    self.contexts: list[Context] = []
    self.cache: dict[str, jax.Array] | None = None
    self.steps = 0
    self.prefills = 0  # Round starts and slides.
    self.slides = 0

  def prompt(self, seed: int) -> Inputs:
    """The prompt of the episode of `seed`: a function of the seed alone, not of the batch."""
    if self.options.prompt_mode == 'none':
      return inputs.empty()
    rng = np.random.default_rng(seed)
    observations, actions = self.demonstrations[int(rng.integers(len(self.demonstrations)))]
    return demonstration_prompt(
      self.task_tokenizer,
      observations,
      actions,
      self.prompt_tokens,
      self.options.prompt_mode,
      rng,
    )

  def begin(self, envs: Sequence[TokenizedEnv | None], seeds: Sequence[int]) -> None:
    del envs
    self.contexts = [Context(self.prompt(s)) for s in seeds]
    self.cache = None  # Filled from the prompts at the first step.
    self.key = jax.random.fold_in(self.key, seeds[0] if seeds else 0)

  def _prefill(self) -> None:
    """The cache from the host contexts, left-padded to the longest.

    Contexts hold whole timesteps and slide to the same `slide_to`, so few lengths occur
    (the prompts', then the slid one) and few prefill shapes compile.
    """
    self.prefills += 1
    longest = max(c.length for c in self.contexts)
    if longest == 0:
      self.cache = decode.init_cache(self.model, len(self.contexts))
      return
    batch = inputs.stack([inputs.pad(c.inputs(), longest, left=True) for c in self.contexts])
    _, self.cache = decode.prefill(self.model, batch)

  def act(
    self,
    observations: Sequence[TokenizedObservation | None],
    forced: np.ndarray | None = None,
  ) -> np.ndarray:
    """The sampled action tokens [B, action_tokens] of the rows given (None: finished).

    `forced` [B, action_tokens], when given, is what the contexts record as the action
    instead of the sampled tokens, each token sampled after the forced ones before it: a
    logged episode replayed through this loop (gato_jax/replay.py) keeps the expert's
    actions in context, as training's teacher forcing does.
    """
    if len(observations) != len(self.contexts):
      raise ValueError(
        f'act got {len(observations)} rows; the round began with {len(self.contexts)}'
      )
    # The context slides when the next timestep would not fit in L; every row at once, so
    # that one prefill serves the batch (rows of a round grow in step, so they fill alike).
    slide = max(c.length for c in self.contexts) + self.per_step > self.length
    if slide:
      self.slides += 1
      for c in self.contexts:
        c.keep_last(self.slide_to)
    idle = inputs.pad(inputs.empty(), self.observation_positions, left=False)
    chunk = inputs.stack([o.inputs if o is not None else idle for o in observations])
    key = jax.random.fold_in(self.key, self.steps)
    self.steps += 1
    if self.options.use_cache:
      if self.cache is None or slide:
        self._prefill()
      tokens, self.cache = sampling.jit_cached_step(
        self.model,
        chunk,
        self.cache,
        key,
        None if forced is None else np.asarray(forced, np.int32),
        action_tokens=self.action_tokens,
        action_kind=self.action_kind,
        start=self.start,
        stop=self.stop,
        temperature=float(self.options.temperature),
      )
      tokens = np.asarray(tokens)
    else:
      tokens = self._act_uncached(chunk, key, forced)
    recorded = tokens if forced is None else np.asarray(forced, np.int32)
    for i, o in enumerate(observations):
      if o is not None:
        self.contexts[i].append(o.inputs)
        self.contexts[i].append(action_inputs(self.task_tokenizer, recorded[i]))
    return tokens

  def _act_uncached(
    self, chunk: Inputs, key: jax.Array, forced: np.ndarray | None = None
  ) -> np.ndarray:
    """Each action token from a full forward pass over right-padded [B, L] contexts."""
    rows = [
      inputs.concat([c.inputs(), {k: v[i] for k, v in chunk.items()}])
      for i, c in enumerate(self.contexts)
    ]
    tokens = np.zeros((len(rows), self.action_tokens), np.int32)
    for j, token_key in enumerate(jax.random.split(key, self.action_tokens)):
      last = np.asarray([len(r['tokens']) - 1 + j for r in rows], np.int32)
      before = tokens if forced is None else np.asarray(forced, np.int32)
      sampled = [action_inputs(self.task_tokenizer, before[i, :j]) for i in range(len(rows))]
      batch = inputs.stack(
        [
          inputs.pad(inputs.concat([r, a]), self.length, left=False)
          for r, a in zip(rows, sampled, strict=True)
        ]
      )
      tokens[:, j] = np.asarray(
        sampling.uncached_token(
          self.model,
          batch,
          last,
          token_key,
          start=self.start,
          stop=self.stop,
          temperature=float(self.options.temperature),
        )
      )
    return tokens
