"""DeepMind Control Suite tasks as gymnasium envs, with hand-written controllers as experts.

dm_control speaks `dm_env` (TimeStep, specs); `DMControlEnv` adapts it to gymnasium so that
every domain reaches the dataset generator through the same interface. Pixel tasks render
one camera directly at the spec's size, so no resampling blurs the image. The experts read
the simulator's state (joint positions, site positions), which also lets them act in the
pixel tasks, where the logged observation is only the image.

Pixels are rendered in a child process (gato_jax/envs/dmc_render.py, which says why), and
this process imports dm_control with rendering disabled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from gato_jax.envs.dmc_render import PixelRenderer, import_suite_without_rendering
from gato_jax.specs.catalog import DMC_PIXELS_SIZE, ENV_IDS

suite = import_suite_without_rendering()


class DMControlEnv(gym.Env):
  """One suite task; observations are its named arrays as float32, or one rendered image.

  A seeded reset rebuilds the task with that seed, since dm_control draws the initial state
  from a random state fixed when the task is loaded.
  """

  metadata = {'render_modes': []}

  def __init__(self, domain: str, task: str, seed: int | None = None, pixels: bool = False):
    self._domain, self._task = domain, task
    self._renderer = PixelRenderer(domain, task, *DMC_PIXELS_SIZE) if pixels else None
    self._load(seed)
    spec = self._env.action_spec()
    self.action_space = gym.spaces.Box(
      spec.minimum.astype(np.float32), spec.maximum.astype(np.float32), spec.shape, np.float32
    )
    if self._renderer is not None:
      self.observation_space = gym.spaces.Dict(
        {'pixels': gym.spaces.Box(0, 255, (*DMC_PIXELS_SIZE, 3), np.uint8)}
      )
    else:
      self.observation_space = gym.spaces.Dict(
        {
          name: gym.spaces.Box(-np.inf, np.inf, array.shape, np.float32)
          for name, array in self._env.observation_spec().items()
        }
      )

  def _load(self, seed: int | None) -> None:
    self._env = suite.load(self._domain, self._task, task_kwargs={'random': seed})

  @property
  def physics(self) -> Any:
    """The task's MuJoCo physics; the experts read the true state from it."""
    return self._env.physics

  def _observation(self, time_step: Any) -> dict[str, np.ndarray]:
    if self._renderer is not None:
      return {'pixels': self._renderer.render(self.physics.get_state())}
    return {k: np.asarray(v, dtype=np.float32) for k, v in time_step.observation.items()}

  def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
    super().reset(seed=seed)
    if seed is not None:
      self._load(seed)
    return self._observation(self._env.reset()), {}

  def step(self, action: Any):
    time_step = self._env.step(np.asarray(action, dtype=np.float64))
    # The suite ends episodes only by its time limit (discount stays 1); a discount of 0
    # would mean a terminal state.
    terminated = time_step.last() and time_step.discount == 0.0
    truncated = time_step.last() and not terminated
    return self._observation(time_step), float(time_step.reward or 0.0), terminated, truncated, {}

  def close(self) -> None:
    if self._renderer is not None:
      self._renderer.close()


def make_env(task: str, seed: int | None = None) -> gym.Env:
  domain, name, *pixels = ENV_IDS[task].split('/')
  return DMControlEnv(domain, name, seed=seed, pixels=bool(pixels))


# -- experts: one controller per domain, on the physics state ------------------------------


def _cartpole_balance(physics: Any) -> np.ndarray:
  # PD on pole angle (upright = 0) and, more weakly, on cart position, so the cart stays
  # near the middle of its rail; it keeps the pole up for the whole episode.
  qpos, qvel = physics.named.data.qpos, physics.named.data.qvel
  state = np.array([qpos['slider'][0], qvel['slider'][0], qpos['hinge_1'][0], qvel['hinge_1'][0]])
  return np.array([np.dot([0.3, 0.6, 8.0, 1.0], state)])


def _point_mass(physics: Any) -> np.ndarray:
  # PD towards the target: the actuators push along x and y directly.
  to_target = (
    physics.named.data.geom_xpos['target', :2] - physics.named.data.geom_xpos['pointmass', :2]
  )
  return 5.0 * to_target - 1.0 * physics.named.data.qvel[:2]


def _reacher(physics: Any) -> np.ndarray:
  # Resolved-rate control: damped least squares turns the fingertip-to-target vector into a
  # joint displacement, which PD then drives. (Plain Jacobian-transpose torques stall where
  # the arm is near straight, holding the finger off the target for most of an episode.)
  finger = physics.named.data.geom_xpos['finger']
  jacobian = np.zeros((3, physics.model.nv))
  body = physics.model.geom_bodyid[physics.model.name2id('finger', 'geom')]
  mujoco.mj_jac(physics.model.ptr, physics.data.ptr, jacobian, None, finger, body)
  planar = jacobian[:2, :2]
  to_target = (physics.named.data.geom_xpos['target'] - finger)[:2]
  joint_step = planar.T @ np.linalg.solve(planar @ planar.T + 1e-3 * np.eye(2), to_target)
  return 2.0 * joint_step - 0.1 * physics.data.qvel[:2]


_EXPERTS: dict[str, Callable[[Any], np.ndarray]] = {
  'cartpole': _cartpole_balance,
  'point_mass': _point_mass,
  'reacher': _reacher,
}


def make_expert(task: str, env: gym.Env) -> Callable[[dict[str, Any]], np.ndarray]:
  controller = _EXPERTS[ENV_IDS[task].split('/')[0]]
  dmc_env = env.unwrapped

  def act(observation: dict[str, Any]) -> np.ndarray:
    del observation  # The controller reads the simulator, which also serves pixel tasks.
    return np.clip(controller(dmc_env.physics), -1.0, 1.0).astype(np.float32)

  return act
