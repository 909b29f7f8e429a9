"""Preemption as a sync point: SIGTERM -> every process saves the same step, then exits 0.

The trainer asks `Preemption.reached(step)` after every step; where it is True, it saves
that step and stops (docs/training.md, "Resuming"). Orbax's preemption guide describes
the same protocol.
"""

from __future__ import annotations

import signal

import jax
from absl import logging

from gato_jax import checkpointing


class Preemption:
  """SIGTERM -> every process saves the same step, then exits 0.

  One process: this handler sets a flag and the next step is saved. Several processes
  (a pod slice, launch/local_multihost.sh): `jax.distributed.initialize` installed JAX's own
  SIGTERM handler (XLA's PreemptionSyncManager); a SIGTERM to any process starts a
  protocol through the coordination service that agrees on the step after the furthest one
  any process has reported, and `reached` reports every step. No Python handler is
  installed then: it would replace JAX's. Seen to work on CPU with gloo, the same code
  path as a TPU pod's (tests/test_multiprocess.py: 4 processes save one agreed step).
  """

  def __init__(self, checkpoints: checkpointing.Checkpoints):
    self.checkpoints = checkpoints
    self.signalled = False
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame) -> None:
    del signum, frame
    logging.warning('SIGTERM: saving a checkpoint at the next step, then exiting')
    self.signalled = True

  def reached(self, step: int) -> bool:
    """Called once with every step, in order; True at the step to save and stop at."""
    if jax.process_count() == 1:
      return self.signalled
    agreed = self.checkpoints.reached_preemption(step)
    if agreed:
      logging.warning(
        'process %d of %d: preemption agreed at step %d; saving it',
        jax.process_index(),
        jax.process_count(),
        step,
      )
    return agreed

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
