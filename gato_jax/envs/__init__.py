"""Environments Gato acts in: one gymnasium interface over every domain, plus their experts.

The dataset generator, the token inspector and the evaluator all go through these four
functions, so an observation reaches the tokenizer in the same shape whoever collects it:
a dict keyed by the task's TaskSpec field names. Each domain lives in its own module
(classic, babyai, metaworld, dmc, atari), imported only when one of its tasks is made, so
that a machine without MuJoCo or ROMs can still run the other domains.

  env = make_env('pendulum', seed=0)
  observation, _ = env.reset(seed=0)
  policy = make_policy('pendulum', env, 'expert', seed=0)  # After every reset.
  observation, reward, terminated, truncated, info = env.step(policy(observation))
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from gato_jax.specs import DOMAINS, TASK_SPECS, get_spec

Policy = Callable[[dict[str, Any]], Any]
POLICY_KINDS = ('expert', 'random')


def task_names() -> list[str]:
  """Every task with a spec and an environment, sorted."""
  return sorted(TASK_SPECS)


def task_domain(task: str) -> str:
  """'classic', 'babyai', 'metaworld', 'dmc' or 'atari': the module that builds the task."""
  get_spec(task)  # Unknown task -> ValueError listing the known ones.
  if task not in DOMAINS:
    raise ValueError(
      f'task {task!r} is known only from a public dataset (specs.DATASET_SPECS): it has no '
      f'environment here to roll out or evaluate in; tasks with one: {task_names()}'
    )
  return DOMAINS[task]


def _domain_module(task: str) -> Any:
  return importlib.import_module(f'gato_jax.envs.{task_domain(task)}')


class DefaultSeed(gym.Wrapper):
  """Makes `seed` the first reset's seed when the caller gives none.

  So `make_env(task, seed)` alone fixes an episode: the same seed gives the same level,
  initial state and observations, whether or not the caller also seeds reset.
  """

  def __init__(self, env: gym.Env, seed: int | None):
    super().__init__(env)
    self._pending_seed = seed

  def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
    if seed is None:
      seed = self._pending_seed
    self._pending_seed = None
    return self.env.reset(seed=seed, options=options)


def make_env(task: str, seed: int | None = None) -> gym.Env:
  """The task's gymnasium env; observations are dicts keyed by the TaskSpec's field names.

  `step` takes actions as `TaskTokenizer.detokenize_action` returns them: a numpy integer
  for a discrete action, a float32 array for a continuous one.
  """
  env = _domain_module(task).make_env(task, seed)
  return DefaultSeed(env, seed)


def make_policy(task: str, env: gym.Env, kind: str, seed: int) -> Policy:
  """A policy for one episode of `env`; make it right after `env.reset`.

  'expert' is the task's scripted or bundled expert (some, like BabyAI's bot, plan from the
  level that reset generated); 'random' samples the action space uniformly, seeded.
  """
  if kind == 'random':
    space = copy.deepcopy(env.action_space)  # Seeding a copy leaves the env's own draws alone.
    space.seed(seed)
    return lambda observation: space.sample()
  if kind == 'expert':
    return _domain_module(task).make_expert(task, env)
  raise ValueError(f'policy kind must be one of {POLICY_KINDS}, got {kind!r}')
