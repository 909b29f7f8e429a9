"""One trainer per workdir: a lock file that names its holder, stale-safe, one per run.

Two trainers writing one workdir interleave their checkpoints (both runs' steps end up in
`checkpoints/`, `keep_checkpoints` counts both), and the next resume continues one of them
without a word. So the trainer takes `WORKDIR/trainer.lock` at start-up, before building
anything, and a second trainer exits naming the holder.

The file is JSON: {'host', 'pid', 'start_time'} (start_time in ISO 8601, UTC). It is
created with O_CREAT | O_EXCL, so of two trainers starting together exactly one wins. Its
mtime is a heartbeat: a background thread touches it every `HEARTBEAT_SECONDS` while held.

A lock whose holder is gone is taken over with a warning naming the old holder:
  - on this host, when the holder's pid no longer exists (a SIGKILLed run);
  - on another host, whose pids cannot be checked, when the heartbeat is older than
    `stale_seconds` (the trainer's --lock_stale_seconds, default `STALE_SECONDS`).
The lock is released when the run ends, normally or by an exception. Evaluators and other
readers never take it.

On an object store (gs://) there is no exclusive create: the lock is checked and then
written, which stops a second trainer started later but not two started in the same moment.

Multi-host (`hold`): process 0 alone takes the lock, and every process learns the outcome
through the distributed runtime, so all of them exit with the same error.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from gato_jax import cli

FILENAME = 'trainer.lock'
STALE_SECONDS = 300.0  # Another host's lock with an older heartbeat is taken over.
HEARTBEAT_SECONDS = 30.0


class WorkdirLocked(cli.CommandError):
  """Another live trainer holds the workdir; the message names it (an expected failure:
  the command ends with it as its one line, exit 2, no traceback)."""


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, FILENAME)


def _local(path: str) -> bool:
  return '://' not in path


def read_holder(workdir: str) -> dict[str, Any] | None:
  """The lock's record ({'host', 'pid', 'start_time'}), or None when nobody holds it.

  An unreadable record (a holder killed between create and write) reads as {}.
  """
  path = epath.Path(lock_path(workdir))
  try:
    text = path.read_text()
  except FileNotFoundError:
    return None
  try:
    record = json.loads(text)
  except ValueError:
    return {}
  return record if isinstance(record, dict) else {}


def describe(holder: dict[str, Any]) -> str:
  return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
          f"started {holder.get('start_time', '?')}")


def heartbeat_age(workdir: str) -> float | None:
  """Seconds since the holder last touched the lock; None when there is no lock."""
  try:
    mtime = epath.Path(lock_path(workdir)).stat().mtime
  except FileNotFoundError:
    return None
  return max(0.0, time.time() - mtime)


def _pid_alive(pid: Any) -> bool:
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Exists, owned by someone else.
    return True
  return True


def holder_gone(holder: dict[str, Any], age: float | None, stale_seconds: float) -> str | None:
  """Why the holder is gone (a reason to take the lock over), or None while it may be alive."""
  if holder.get('host') == socket.gethostname():
    if not _pid_alive(holder.get('pid')):
      return f"its pid {holder.get('pid')} no longer exists on this host"
    return None
  if age is not None and age > stale_seconds:
    return (f'its heartbeat is {age:.0f} s old (older than the {stale_seconds:.0f} s window '
            'of --lock_stale_seconds)')
  return None


class WorkdirLock:
  """The lock of one workdir, held by this process between `acquire` and `release`."""

  def __init__(self, workdir: str, stale_seconds: float = STALE_SECONDS,
               heartbeat_seconds: float = HEARTBEAT_SECONDS):
    self.workdir = workdir
    self.path = lock_path(workdir)
    self.stale_seconds = stale_seconds
    self.heartbeat_seconds = heartbeat_seconds
    self.record: dict[str, Any] | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirLocked naming the live holder."""
    epath.Path(self.workdir).mkdir(parents=True, exist_ok=True)
    record = {
      'host': socket.gethostname(),
      'pid': os.getpid(),
      'start_time': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
    }
    for _ in range(3):  # A holder may release between our look and our create.
      if self._create(record):
        self.record = record
        self._start_heartbeat()
        return
      holder = read_holder(self.workdir)
      if holder is None:
        continue
      reason = holder_gone(holder, heartbeat_age(self.workdir), self.stale_seconds)
      if reason is None:
        raise WorkdirLocked(
          f'{self.workdir} is in use by another trainer ({describe(holder)}; lock file '
          f'{self.path}). Stop that run or use another --workdir; if it is gone, delete '
          'the lock file'
        )
      logging.warning('taking over the lock %s from a trainer that is gone (%s): %s',
                      self.path, describe(holder), reason)
      self._remove()
    raise WorkdirLocked(f'could not take the lock {self.path}: it keeps changing hands')

  def _create(self, record: dict[str, Any]) -> bool:
    text = json.dumps(record)
    if not _local(self.path):
      path = epath.Path(self.path)
      if path.exists():
        return False
      path.write_text(text)
      return True
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    return True

  def _remove(self) -> None:
    with contextlib.suppress(FileNotFoundError):
      epath.Path(self.path).unlink()

  def _start_heartbeat(self) -> None:
    self._stop.clear()
    self._thread = threading.Thread(target=self._beat, name='workdir-lock-heartbeat', daemon=True)
    self._thread.start()

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_seconds):
      self.heartbeat()

  def heartbeat(self) -> None:
    """Refreshes the lock's mtime: another host reads it to tell a live holder from a dead one."""
    if self.record is None:
      return
    try:
      if _local(self.path):
        os.utime(self.path)
      else:
        epath.Path(self.path).write_text(json.dumps(self.record))
    except OSError as e:
      logging.warning('cannot refresh the lock %s: %s', self.path, e)

  def release(self) -> None:
    """Deletes the lock if this process still holds it (never another's)."""
    if self.record is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if read_holder(self.workdir) == self.record:
      self._remove()
    else:
      logging.warning('the lock %s is no longer ours (%s); leaving it', self.path,
                      describe(read_holder(self.workdir) or {}))
    self.record = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


@contextlib.contextmanager
def hold(workdir: str, stale_seconds: float = STALE_SECONDS) -> Iterator[WorkdirLock | None]:
  """The run's lock while the block runs: taken by process 0, its outcome shared with all.

  Every process raises WorkdirLocked when process 0 could not take it; the others name the
  holder by reading the lock file (the workdir is shared in a multi-host run).
  """
  lock = WorkdirLock(workdir, stale_seconds) if jax.process_index() == 0 else None
  error: WorkdirLocked | None = None
  if lock is not None:
    try:
      lock.acquire()
    except WorkdirLocked as e:
      error = e
  if jax.process_count() > 1:
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not int(ok) and error is None:
      holder = read_holder(workdir)
      error = WorkdirLocked(
        f'{workdir} is in use by another trainer '
        f'({describe(holder) if holder else "see process 0"}; lock file {lock_path(workdir)})'
      )
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()
