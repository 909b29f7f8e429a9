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

`run_episodes` drives any `Policy` (Gato, or an env's expert/random policy for reference
scores) and owns the robustness rules: an env that raises is closed and made again, and its
episode is counted as failed, with the error, and replaced by a new one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gato_jax import envs, specs
from gato_jax import tokenizer as tok
from gato_jax.envs.wrappers import (
  Inputs,
  TokenizedEnv,
  TokenizedObservation,
  action_inputs,
  model_inputs,
  sampling_range,
)
from gato_jax.model import decode
from gato_jax.model.gato import Gato

PROMPT_MODES = ('end', 'uniform', 'none')
_INPUT_KEYS = ('tokens', 'kinds', 'local_positions', 'patches', 'patch_positions')


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
    return empty_inputs()
  start = len(actions) - count
  if mode == 'uniform':
    start = int(rng.integers(0, len(actions) - count + 1))
  window = {k: v[start : start + count] for k, v in observations.items()}
  return model_inputs(task_tokenizer.tokenize_steps(window, actions[start : start + count]))


def empty_inputs() -> Inputs:
  return {
    'tokens': np.zeros(0, np.int32),
    'kinds': np.zeros(0, np.int32),
    'local_positions': np.zeros(0, np.int32),
    'patches': np.zeros((0, tok.PATCH_SIZE, tok.PATCH_SIZE, 3), np.uint8),
    'patch_positions': np.zeros((0, 4), np.int32),
  }


def _concat(parts: Sequence[Inputs]) -> Inputs:
  return {k: np.concatenate([p[k] for p in parts]) for k in _INPUT_KEYS}


def _pad(inputs: Inputs, length: int, left: bool) -> Inputs:
  """PAD positions (kind 0, all zeros) on one side up to `length`."""
  out = {}
  for k, v in inputs.items():
    widths = [(length - len(v), 0) if left else (0, length - len(v))] + [(0, 0)] * (v.ndim - 1)
    out[k] = np.pad(v, widths)
  return out


def _stack(rows: Sequence[Inputs]) -> Inputs:
  return {k: np.stack([r[k] for r in rows]) for k in _INPUT_KEYS}


# ----------------------------------------------------------------------------------------
# Sampling, on device
# ----------------------------------------------------------------------------------------


def _sample(logits: jax.Array, key: jax.Array, start: int, stop: int, temperature: float):
  """One token per row from logits [B, V], only ids in [start, stop); temperature 0 = argmax."""
  allowed = logits[:, start:stop]
  if temperature == 0.0:
    choice = jnp.argmax(allowed, axis=-1)
  else:
    choice = jax.random.categorical(key, allowed / temperature, axis=-1)
  return (choice + start).astype(jnp.int32)


def _action_position(tokens: jax.Array, kind: int) -> dict[str, jax.Array]:
  b = tokens.shape[0]
  return {
    'tokens': tokens[:, None],
    'kinds': jnp.full((b, 1), kind, jnp.int32),
    'local_positions': jnp.full((b, 1), tok.LOCAL_POSITION_ACTION, jnp.int32),
    'patches': jnp.zeros((b, 1, tok.PATCH_SIZE, tok.PATCH_SIZE, 3), jnp.uint8),
    'patch_positions': jnp.zeros((b, 1, 4), jnp.int32),
  }


def cached_step(
  model: Gato,
  observation: dict[str, jax.Array],
  cache: dict[str, jax.Array],
  key: jax.Array,
  *,
  action_tokens: int,
  action_kind: int,
  start: int,
  stop: int,
  temperature: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Appends a batch of observations and samples the action: [B, action_tokens], cache.

  Each sampled token is appended before the next is sampled; the last one too, so the
  cache ends the step holding the whole timestep.
  """
  logits, cache = model.forward(observation, cache=cache)
  # jax.lax.scan cannot close over an NNX module (its layers run their own nnx.scan), so
  # the parameters ride in the carry and the module is rebuilt inside the loop body.
  graphdef, params = nnx.split(model)

  def one_token(carry, token_key):
    last, cache, params = carry
    token = _sample(last, token_key, start, stop, temperature)
    logits, cache = nnx.merge(graphdef, params).forward(
      _action_position(token, action_kind), cache=cache
    )
    return (logits[:, -1], cache, params), token

  keys = jax.random.split(key, action_tokens)
  (_, cache, _), tokens = jax.lax.scan(one_token, (logits[:, -1], cache, params), keys)
  return tokens.T, cache


# The evaluator's decode step; gato_jax.aot compiles `cached_step` itself for the eval chip.
_cached_step = nnx.jit(
  cached_step,
  static_argnames=('action_tokens', 'action_kind', 'start', 'stop', 'temperature'),
  donate_argnames='cache',
)


@functools.partial(nnx.jit, static_argnames=('start', 'stop', 'temperature'))
def _uncached_token(
  model: Gato,
  context: dict[str, jax.Array],
  last: jax.Array,
  key: jax.Array,
  *,
  start: int,
  stop: int,
  temperature: float,
) -> jax.Array:
  """The next token of right-padded contexts [B, L] whose last real position is `last`."""
  logits = model(context)
  rows = jnp.arange(logits.shape[0])
  return _sample(logits[rows, last], key, start, stop, temperature)


# ----------------------------------------------------------------------------------------
# Policies
# ----------------------------------------------------------------------------------------


class Policy(Protocol):
  """Acts for a batch of env rows of one task, round by round (see `run_episodes`)."""

  def begin(self, envs: Sequence[TokenizedEnv | None], seeds: Sequence[int]) -> None:
    """A new round: row i starts the episode of seed `seeds[i]` in `envs[i]`, just reset."""

  def act(self, observations: Sequence[TokenizedObservation | None]) -> np.ndarray:
    """Action tokens [B, action_tokens] for the rows given; None marks a finished row."""


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

  def __init__(self, inputs: Inputs):
    self.pieces, self.length = [inputs], len(inputs['tokens'])

  def append(self, inputs: Inputs) -> None:
    self.pieces.append(inputs)
    self.length += len(inputs['tokens'])

  def inputs(self) -> Inputs:
    if len(self.pieces) > 1:
      self.pieces = [_concat(self.pieces)]
    return self.pieces[0]

  def keep_last(self, positions: int) -> None:
    inputs = self.inputs()
    start = max(0, self.length - positions)
    self.pieces, self.length = [{k: v[start:] for k, v in inputs.items()}], self.length - start


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
      return empty_inputs()
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
    batch = _stack([_pad(c.inputs(), longest, left=True) for c in self.contexts])
    _, self.cache = decode.prefill(self.model, batch)

  def act(self, observations: Sequence[TokenizedObservation | None]) -> np.ndarray:
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
    idle = _pad(empty_inputs(), self.observation_positions, left=False)
    chunk = _stack([o.inputs if o is not None else idle for o in observations])
    key = jax.random.fold_in(self.key, self.steps)
    self.steps += 1
    if self.options.use_cache:
      if self.cache is None or slide:
        self._prefill()
      tokens, self.cache = _cached_step(
        self.model,
        chunk,
        self.cache,
        key,
        action_tokens=self.action_tokens,
        action_kind=self.action_kind,
        start=self.start,
        stop=self.stop,
        temperature=float(self.options.temperature),
      )
      tokens = np.asarray(tokens)
    else:
      tokens = self._act_uncached(chunk, key)
    for i, o in enumerate(observations):
      if o is not None:
        self.contexts[i].append(o.inputs)
        self.contexts[i].append(action_inputs(self.task_tokenizer, tokens[i]))
    return tokens

  def _act_uncached(self, chunk: Inputs, key: jax.Array) -> np.ndarray:
    """Each action token from a full forward pass over right-padded [B, L] contexts."""
    rows = [
      _concat([c.inputs(), {k: v[i] for k, v in chunk.items()}])
      for i, c in enumerate(self.contexts)
    ]
    tokens = np.zeros((len(rows), self.action_tokens), np.int32)
    for j, token_key in enumerate(jax.random.split(key, self.action_tokens)):
      last = np.asarray([len(r['tokens']) - 1 + j for r in rows], np.int32)
      sampled = [action_inputs(self.task_tokenizer, tokens[i, :j]) for i in range(len(rows))]
      batch = _stack(
        [_pad(_concat([r, a]), self.length, left=False) for r, a in zip(rows, sampled, strict=True)]
      )
      tokens[:, j] = np.asarray(
        _uncached_token(
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


class EnvPolicy:
  """The task's expert or a uniformly random policy, acting through action tokens.

  The reference points of the normalized score, run through the same loop and the same
  token path as Gato: an expert here scores what a perfect imitator of it would.
  """

  def __init__(self, task_tokenizer: specs.TaskTokenizer, kind: str):
    if kind not in envs.POLICY_KINDS:
      raise ValueError(f'policy must be one of {envs.POLICY_KINDS}, got {kind!r}')
    self.task_tokenizer, self.kind = task_tokenizer, kind
    self.envs: list[TokenizedEnv | None] = []
    self.policies: list[Callable[[dict[str, Any]], Any] | None] = []

  def begin(self, envs_: Sequence[TokenizedEnv | None], seeds: Sequence[int]) -> None:
    task = self.task_tokenizer.spec.name
    self.envs = list(envs_)
    self.policies = [
      None if e is None else envs.make_policy(task, e.env, self.kind, s)
      for e, s in zip(envs_, seeds, strict=True)
    ]

  def act(self, observations: Sequence[TokenizedObservation | None]) -> np.ndarray:
    tokens = np.zeros((len(observations), self.task_tokenizer.spec.action_tokens), np.int32)
    for i, o in enumerate(observations):
      if o is not None:
        tokens[i] = self.envs[i].encode_action(o.raw, self.policies[i](o.raw))
    return tokens


# ----------------------------------------------------------------------------------------
# Episodes in lockstep rounds
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class EpisodeResult:
  seed: int
  episode_return: float
  steps: int
  failed: bool = False
  error: str | None = None  # The exception, for a failed episode.


def run_episodes(
  task: str,
  task_tokenizer: specs.TaskTokenizer,
  policy: Policy,
  episodes: int,
  batch_size: int,
  seed: int,
  max_steps: int | None = None,
  max_failures: int | None = None,
  make_env: Callable[[str, int], Any] = envs.make_env,
) -> list[EpisodeResult]:
  """`episodes` completed episodes (seeds seed, seed + 1, ...), `batch_size` at a time.

  Rows of a round start together and a row that finishes waits for the others, so one
  prompt and one cache serve the round. An env that raises (in reset or step, or with an
  observation the spec rejects) fails its episode: the result keeps the error, the env is
  closed and made again, and a later round runs a replacement episode with a new seed.
  More than `max_failures` failures (default: `episodes`) raises, naming the last error.
  """
  if episodes <= 0 or batch_size <= 0:
    raise ValueError(f'episodes and batch_size must be positive, got {episodes}, {batch_size}')
  max_failures = episodes if max_failures is None else max_failures
  results: list[EpisodeResult] = []
  pool: list[TokenizedEnv | None] = []
  next_seed = seed

  def fresh_env(env_seed: int) -> TokenizedEnv:
    return TokenizedEnv(make_env(task, env_seed), task_tokenizer)

  def fail(row: int, result: EpisodeResult, error: BaseException) -> None:
    result.failed = True
    result.error = f'{type(error).__name__}: {error}'
    logging.warning(
      'task %s, seed %d: episode failed at step %d: %s\n%s',
      task,
      result.seed,
      result.steps,
      result.error,
      traceback.format_exc(),
    )
    env = pool[row]
    pool[row] = None  # Made again at the next round.
    if env is not None:
      try:
        env.close()
      except Exception:  # noqa: BLE001  A broken env may fail to close too; it is dropped.
        logging.warning('task %s: closing a failed env raised too', task)

  try:
    while sum(not r.failed for r in results) < episodes:
      failures = sum(r.failed for r in results)
      if failures > max_failures:
        last = next(r.error for r in reversed(results) if r.failed)
        raise RuntimeError(
          f'task {task!r}: {failures} episodes failed (more than '
          f'max_failures={max_failures}); the last: {last}'
        )
      size = min(batch_size, episodes - sum(not r.failed for r in results))
      seeds = list(range(next_seed, next_seed + size))
      next_seed += size
      round_results = [EpisodeResult(s, 0.0, 0) for s in seeds]
      observations: list[TokenizedObservation | None] = [None] * size
      pool.extend([None] * (size - len(pool)))
      for i, s in enumerate(seeds):
        try:
          if pool[i] is None:
            pool[i] = fresh_env(s)
          observations[i], _ = pool[i].reset(seed=s)
        except Exception as e:  # noqa: BLE001  Any env error fails the episode, visibly.
          fail(i, round_results[i], e)
      live = [o is not None for o in observations]
      policy.begin(pool[:size], seeds)
      while any(live):
        actions = policy.act(
          [o if alive else None for o, alive in zip(observations, live, strict=True)]
        )
        for i in range(size):
          if not live[i]:
            continue
          result = round_results[i]
          try:
            observations[i], reward, terminated, truncated, _ = pool[i].step(actions[i])
          except Exception as e:  # noqa: BLE001
            fail(i, result, e)
            live[i] = False
            continue
          result.episode_return += reward
          result.steps += 1
          if terminated or truncated or (max_steps is not None and result.steps >= max_steps):
            live[i] = False
      results.extend(round_results)
  finally:
    for env in pool:
      if env is not None:
        env.close()
  return results
