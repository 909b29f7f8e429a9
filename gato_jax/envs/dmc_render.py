"""Renders DM Control frames in a child process that never imports TensorFlow.

MuJoCo's EGL backend (Mesa's software renderer on these machines) crashes in a process that
also holds TensorFlow, in either import order: at import, at context creation, or at exit.
The dataset pipeline imports TensorFlow, so the env process imports dm_control with
rendering disabled and a child Python process, started with the EGL backend, renders.

The parent simulates; per frame it sends the physics state (positions, velocities,
activations) and gets the image back. Only the state travels, so this serves tasks whose
reset randomizes the state alone (cartpole); a task that also moves model geometry at reset
(reacher's target) would need those model fields sent too.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import struct
import subprocess
import sys
from typing import Any

import numpy as np

# The child's backend: the caller's MUJOCO_GL if it names one, else EGL (headless).
_CHILD_BACKEND = os.environ.get('MUJOCO_GL') or 'egl'


def import_suite_without_rendering() -> Any:
  """dm_control's suite, imported with MUJOCO_GL=disabled, then the variable restored.

  dm_control picks its GL backend once, at import; with EGL it breaks beside TensorFlow.
  """
  previous = os.environ.get('MUJOCO_GL')
  os.environ['MUJOCO_GL'] = 'disabled'
  try:
    from dm_control import suite
  finally:
    if previous is None:
      del os.environ['MUJOCO_GL']
    else:
      os.environ['MUJOCO_GL'] = previous
  return suite


class PixelRenderer:
  """A child process that renders one suite task's camera 0 at a fixed size."""

  def __init__(self, domain: str, task: str, height: int, width: int):
    command = [sys.executable, '-m', __name__, domain, task, str(height), str(width)]
    # The child imports this module by name, so it needs this checkout on its path even
    # where the package is not installed.
    root = str(pathlib.Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get('PYTHONPATH')) if p)
    environment = {**os.environ, 'MUJOCO_GL': _CHILD_BACKEND, 'PYTHONPATH': path}
    self._process = subprocess.Popen(
      command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment
    )

  def render(self, state: np.ndarray) -> np.ndarray:
    _send(self._process.stdin, state)
    image = _receive(self._process.stdout)
    if image is None:
      raise RuntimeError(f'the pixel renderer exited with code {self._process.poll()}')
    return image

  def close(self) -> None:
    if self._process.poll() is None:
      self._process.stdin.close()
      self._process.wait(timeout=10)

  def __del__(self):
    self.close()


def _send(stream: Any, value: Any) -> None:
  payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
  stream.write(struct.pack('<Q', len(payload)) + payload)
  stream.flush()


def _receive(stream: Any) -> Any:
  header = stream.read(8)
  if len(header) < 8:
    return None  # The other side closed the pipe.
  return pickle.loads(stream.read(struct.unpack('<Q', header)[0]))


def _serve(domain: str, task: str, height: int, width: int) -> None:
  """The child's loop: a state in on stdin, its image out on stdout, until stdin closes."""
  from dm_control import suite  # With the EGL backend this process was started with.

  physics = suite.load(domain, task).physics
  while (state := _receive(sys.stdin.buffer)) is not None:
    with physics.reset_context():  # Recomputes positions from the new state.
      physics.set_state(state)
    _send(sys.stdout.buffer, physics.render(height=height, width=width, camera_id=0))


if __name__ == '__main__':
  _serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
