"""Atari 2600 games from the Arcade Learning Environment, with RAM-reading scripted experts.

Frames are kept as images, resized to the spec's 96x80 (see specs.ATARI_SIZE for why).
The experts read the console's RAM for paddle and ball positions: a few lines of tracking
play far better than random without any trained agent (docs/environments.md has returns).
The v5 ids keep ALE's default stochasticity (sticky actions, p = 0.25), so experts face the
same noise a learned agent would; a seeded reset still makes episodes repeatable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ale_py
import gymnasium as gym
import numpy as np
from PIL import Image

from gato_jax.specs.catalog import ATARI_SIZE, ENV_IDS

gym.register_envs(ale_py)

# RAM addresses (bytes of the 2600's 128-byte RAM) read by the experts.
_PONG_PLAYER_Y, _PONG_BALL_Y = 51, 54
_BREAKOUT_PADDLE_X, _BREAKOUT_BALL_X, _BREAKOUT_BALL_Y = 72, 99, 101


class ResizedFrame(gym.ObservationWrapper):
  """The RGB frame box-filtered to the spec's size, under the field name 'pixels'."""

  def __init__(self, env: gym.Env):
    super().__init__(env)
    self.observation_space = gym.spaces.Dict(
      {'pixels': gym.spaces.Box(0, 255, (*ATARI_SIZE, 3), np.uint8)}
    )

  def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
    height, width = ATARI_SIZE
    frame = Image.fromarray(observation).resize((width, height), Image.Resampling.BOX)
    return {'pixels': np.asarray(frame, dtype=np.uint8)}


class IntegerAction(gym.ActionWrapper):
  """Accepts numpy integer scalars and 0-d arrays (what detokenize returns) as ALE's int."""

  def action(self, action: Any) -> int:
    return int(action)


def make_env(task: str, seed: int | None = None) -> gym.Env:
  del seed  # ALE seeds its emulator and sticky actions at reset.
  return IntegerAction(ResizedFrame(gym.make(ENV_IDS[task])))


def _pong(ram: np.ndarray) -> int:
  # Move the right (green) paddle towards the ball's height: 3 = LEFT moves it down, 2 = RIGHT
  # up. It returns almost every ball but rarely scores, so it about ties the built-in AI.
  return 3 if int(ram[_PONG_BALL_Y]) > int(ram[_PONG_PLAYER_Y]) else 2


def _breakout(ram: np.ndarray) -> int:
  # FIRE (1) serves when no ball is in play (its y is 0); otherwise keep the paddle under the
  # ball. The -10 offset aligns the RAM's paddle coordinate with the ball's (measured: a
  # zero offset misses most balls), with a 2-pixel dead zone to avoid jitter.
  paddle, ball_x, ball_y = (
    int(ram[i]) for i in (_BREAKOUT_PADDLE_X, _BREAKOUT_BALL_X, _BREAKOUT_BALL_Y)
  )
  if ball_y == 0:
    return 1
  target = ball_x - 10
  return 2 if target > paddle + 2 else 3 if target < paddle - 2 else 0


_EXPERTS: dict[str, Callable[[np.ndarray], int]] = {
  'atari_pong': _pong,
  'atari_breakout': _breakout,
}


def make_expert(task: str, env: gym.Env) -> Callable[[dict[str, Any]], np.int64]:
  controller, ale = _EXPERTS[task], env.unwrapped.ale

  def act(observation: dict[str, Any]) -> np.int64:
    del observation  # The expert reads the RAM, which the frame shows only approximately.
    return np.int64(controller(ale.getRAM()))

  return act
