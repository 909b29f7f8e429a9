"""Meta-World v3 manipulation tasks, with Meta-World's own scripted policies as experts.

Each episode draws a new object and goal placement from the reset seed, and the goal is
observable (the last 3 of the 39 state floats), as the scripted policies need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from metaworld import env_dict, policies
from metaworld.sawyer_xyz_env import SawyerMocapBase

from gato_jax.envs.classic import StateObservation
from gato_jax.specs.catalog import ENV_IDS

# The weld constraint metaworld 3.0 writes at construction: the relative pose (3 position,
# 4 quaternion) and torque scale of mujoco's 11 weld parameters.
_WELD_DATA = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0])


def _reset_mocap_welds(self: SawyerMocapBase) -> None:
  # MuJoCo 3.17 (pinned for dm-control) stores 12 values per equality constraint, where
  # metaworld 3.0 assigns a row of 11 and fails with a shape error. Writing the 11 weld
  # values into the head of each row is what metaworld meant and works on both layouts.
  model = self.model
  if model.nmocap > 0 and model.eq_data is not None:
    for i in range(model.eq_data.shape[0]):
      if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
        model.eq_data[i, : len(_WELD_DATA)] = _WELD_DATA


# The weld fix for mujoco 3.17 (platform_notes.md): patched on the base class because
# metaworld calls it from the base constructor, before any wrapper of ours exists.
SawyerMocapBase.reset_mocap_welds = _reset_mocap_welds


class SeededPlacements(gym.Wrapper):
  """Draws each episode's object and goal placement from the env's seeded generator.

  Meta-World's goal-observable classes freeze one placement at construction; unfreezing it
  and seeding `np_random` at reset makes placements vary per episode yet repeat per seed.
  """

  def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
    env = self.env.unwrapped
    if seed is not None:
      env.seed(seed)
    env._freeze_rand_vec = False
    env.seeded_rand_vec = True
    return self.env.reset(options=options)


class UnitAction(gym.ActionWrapper):
  """float32 actions, clipped to [-1, 1] as the env itself clips them."""

  def action(self, action: Any) -> np.ndarray:
    return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)


def make_env(task: str, seed: int | None = None) -> gym.Env:
  env_class = env_dict.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f'{ENV_IDS[task]}-goal-observable']
  env = env_class(seed=seed)
  env.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
  env = gym.wrappers.TimeLimit(env, env.max_path_length)
  return StateObservation(UnitAction(SeededPlacements(env)))


def make_expert(task: str, env: gym.Env) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
  """Meta-World's scripted policy, its output clipped to the action range the env applies."""
  del env
  policy = policies.ENV_POLICY_MAP[ENV_IDS[task]]()

  def act(observation: dict[str, np.ndarray]) -> np.ndarray:
    action = policy.get_action(observation['state'].astype(np.float64))
    return np.clip(action, -1.0, 1.0).astype(np.float32)

  return act
