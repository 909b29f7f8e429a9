"""Gymnasium's classic-control tasks, with a hand-written controller as each one's expert.

The physics of these tasks is small enough that a few lines of control theory beat any
learned policy we could ship, so Gato's data for them comes from these controllers
(measured returns in docs/environments.md).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from gato_jax.specs.catalog import ENV_IDS

Policy = Any

# Pendulum-v1's dynamics: theta'' = 3g/(2l) sin(theta) + 3/(m l^2) u with g=10, m=l=1, so
# E = theta'^2 / 2 + 15 cos(theta) is conserved without torque and equals 15 upright at rest.
_PENDULUM_GRAVITY = 15.0
_PENDULUM_MAX_TORQUE = 2.0


class StateObservation(gym.ObservationWrapper):
  """The env's state vector under the spec's one field name, 'state', as float32."""

  def __init__(self, env: gym.Env):
    super().__init__(env)
    box = env.observation_space
    self.observation_space = gym.spaces.Dict(
      {'state': gym.spaces.Box(box.low, box.high, box.shape, np.float32)}
    )

  def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
    return {'state': np.asarray(observation, dtype=np.float32)}


def make_env(task: str, seed: int | None = None) -> gym.Env:
  del seed  # Classic control draws everything at reset; the caller's reset seed suffices.
  return StateObservation(gym.make(ENV_IDS[task]))


def _cartpole(observation: dict[str, np.ndarray]) -> np.int64:
  # A linear controller on cart and pole state; it holds the pole for all 500 steps.
  x, x_dot, theta, theta_dot = observation['state']
  return np.int64(0.1 * x + 0.5 * x_dot + 3.0 * theta + theta_dot > 0)


def _mountaincar(observation: dict[str, np.ndarray]) -> np.int64:
  # Pushing along the velocity adds energy every step, so each swing climbs higher.
  _, velocity = observation['state']
  return np.int64(2 if velocity >= 0 else 0)


def _pendulum(observation: dict[str, np.ndarray]) -> np.ndarray:
  cos, sin, theta_dot = (float(v) for v in observation['state'])
  theta = np.arctan2(sin, cos)  # 0 is upright.
  if cos > 0.85:  # Near the top: PD on the angle holds it there.
    torque = -(10.0 * theta + 2.0 * theta_dot)
  else:  # Otherwise pump energy: torque along the velocity while below the upright energy.
    energy = 0.5 * theta_dot**2 + _PENDULUM_GRAVITY * cos
    direction = 1.0 if theta_dot >= 0 else -1.0
    torque = direction * _PENDULUM_MAX_TORQUE if energy < _PENDULUM_GRAVITY else 0.0
  torque = np.clip(torque, -_PENDULUM_MAX_TORQUE, _PENDULUM_MAX_TORQUE)
  return np.asarray([torque], dtype=np.float32)


def _acrobot(observation: dict[str, np.ndarray]) -> np.int64:
  # Energy pumping: the motor's power is torque times elbow velocity, so torquing along the
  # elbow's motion adds energy every step until the swing carries the tip over the bar.
  # (Torquing along the first link's velocity instead never gets the tip up in 500 steps.)
  *_, theta2_dot = observation['state']
  return np.int64(2 if theta2_dot >= 0 else 0)


_EXPERTS = {
  'cartpole': _cartpole,
  'mountaincar': _mountaincar,
  'pendulum': _pendulum,
  'acrobot': _acrobot,
}


def make_expert(task: str, env: gym.Env) -> Policy:
  del env  # The controllers read only the observation.
  return _EXPERTS[task]
