"""Expert policies that ship with, or are simple enough to write for, each environment.

Gato imitates experts, so every task that generates data names its expert here. A policy is
made per episode (`make_expert(task, env)` after `env.reset`) because some experts, like
BabyAI's bot, plan from the level that reset just generated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Policy = Callable[[Any], Any]


def _cartpole(observation: np.ndarray) -> int:
  # A linear controller on the pole angle and velocity; it holds the pole for all 500 steps.
  x, x_dot, theta, theta_dot = observation
  return int(0.1 * x + 0.5 * x_dot + 3.0 * theta + theta_dot > 0)


def has_expert(task: str) -> bool:
  return task == 'cartpole' or task.startswith('babyai_')


def make_expert(task: str, env: Any) -> Policy:
  """The expert for `task`, bound to `env` right after its reset."""
  if task == 'cartpole':
    return _cartpole
  if task.startswith('babyai_'):
    from minigrid.utils.baby_ai_bot import BabyAIBot  # Needs the 'envs' extra.

    bot = BabyAIBot(env.unwrapped)
    return lambda observation: int(bot.replan())
  raise ValueError(f'task {task!r} has no expert policy yet; tasks with one: cartpole, babyai_*')
