"""BabyAI levels from minigrid, with the bot that ships with minigrid as their expert.

The bot plans from the level's full state, so it is bound to the env after each reset; it
solves the registered levels in almost every episode (docs/environments.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  Registers the BabyAI-* ids with gymnasium.
import numpy as np
from minigrid.utils.baby_ai_bot import BabyAIBot

from gato_jax.specs.catalog import ENV_IDS

# The spec's fields: the agent's symbolic 7x7 egocentric view, its heading and the mission.
FIELDS = ('mission', 'image', 'direction')


class BabyAIObservation(gym.ObservationWrapper):
  """Keeps the spec's fields and makes the heading an integer array, as DiscreteField wants."""

  def __init__(self, env: gym.Env):
    super().__init__(env)
    self.observation_space = gym.spaces.Dict({k: env.observation_space[k] for k in FIELDS})

  def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
    return {
      'mission': str(observation['mission']),
      'image': np.asarray(observation['image'], dtype=np.uint8),
      'direction': np.asarray(observation['direction'], dtype=np.int64),
    }


def make_env(task: str, seed: int | None = None) -> gym.Env:
  del seed  # Levels are generated at reset from the reset seed.
  return BabyAIObservation(gym.make(ENV_IDS[task]))


def make_expert(task: str, env: gym.Env) -> Callable[[dict[str, Any]], np.int64]:
  """Binds the bot to the level `env.reset` just generated; call again after every reset."""
  del task
  bot = BabyAIBot(env.unwrapped)
  return lambda observation: np.int64(bot.replan())
