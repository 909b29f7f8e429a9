"""A jax.profiler trace of the steps `config.profile_steps` names (docs/training.md, Profiling)."""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
from absl import logging


def profile_steps(config: ml_collections.ConfigDict) -> tuple[int, int] | None:
  """`config.profile_steps` 'a,b' -> (a, b), the first and last step traced; '' -> None."""
  value = config.get('profile_steps', '')
  if value in ('', None):
    return None
  try:
    first, last = (int(v) for v in str(value).split(','))
  except ValueError:
    first, last = 0, -1
  if not 1 <= first <= last <= config.total_steps:
    raise ValueError(
      f"config key profile_steps must be 'FIRST,LAST' with 1 <= FIRST <= LAST <= total_steps "
      f'({config.total_steps}), got {value!r}'
    )
  return first, last


class Profiler:
  """A jax.profiler trace of steps FIRST..LAST under WORKDIR/profile (TensorBoard, XProf).

  Every process writes its own host's trace there. Steps are dispatched asynchronously,
  so the trace stops only once the last profiled step has finished on the device.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.window = profile_steps(config)
    self.directory = os.path.join(workdir, 'profile')
    self.active = False

  def before(self, step: int) -> None:
    """Called with the number of the step about to run (1-based)."""
    # A run resumed inside the window traces the rest of it.
    if self.window and not self.active and self.window[0] <= step <= self.window[1]:
      jax.profiler.start_trace(self.directory)
      self.active = True
      logging.info('profiling steps %d to %d into %s', step, self.window[1], self.directory)

  def after(self, step: int, outputs: Any) -> None:
    if self.active and step == self.window[1]:
      jax.block_until_ready(outputs)
      self.stop()

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      logging.info('profile written to %s (tensorboard --logdir %s, Profile tab)',
                   self.directory, os.path.dirname(self.directory))
