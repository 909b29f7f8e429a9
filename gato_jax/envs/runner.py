"""Any policy acting in a task's environments: episodes in lockstep rounds of a batch of envs.

`run_episodes` drives a `BatchPolicy`: Gato (gato_jax/policy.py), or `EnvPolicy`, the
task's expert or random policy that gives the reference scores. It owns the robustness
rules: an env that raises is closed and made again, and its episode is counted as failed,
with the error, and replaced by a new one.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from gato_jax import envs, specs
from gato_jax.envs.wrappers import TokenizedEnv, TokenizedObservation


class BatchPolicy(Protocol):
  """Acts for a batch of env rows of one task, round by round (see `run_episodes`)."""

  def begin(self, envs: Sequence[TokenizedEnv | None], seeds: Sequence[int]) -> None:
    """A new round: row i starts the episode of seed `seeds[i]` in `envs[i]`, just reset."""

  def act(self, observations: Sequence[TokenizedObservation | None]) -> np.ndarray:
    """Action tokens [B, action_tokens] for the rows given; None marks a finished row."""


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
  policy: BatchPolicy,
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
