"""The workdir lock: one holder, named to the next; a dead holder's lock is taken over."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from gato_jax import workdir_lock
from gato_jax.workdir_lock import WorkdirLock, WorkdirLocked


def dead_pid() -> int:
  """The pid of a process that has exited (and been reaped)."""
  process = subprocess.Popen(['true'])
  process.wait()
  return process.pid


def write_lock(workdir, host: str, pid: int, age: float = 0.0) -> dict:
  record = {'host': host, 'pid': pid, 'start_time': '2026-01-02T03:04:05+00:00'}
  path = workdir_lock.lock_path(str(workdir))
  with open(path, 'w') as f:
    json.dump(record, f)
  if age:
    os.utime(path, (time.time() - age, time.time() - age))
  return record


def test_a_held_lock_refuses_the_next_trainer_naming_the_holder(tmp_path):
  lock = WorkdirLock(str(tmp_path / 'run'))  # The workdir does not exist yet.
  lock.acquire()
  record = json.loads((tmp_path / 'run' / workdir_lock.FILENAME).read_text())
  assert record['host'] == socket.gethostname() and record['pid'] == os.getpid()
  with pytest.raises(WorkdirLocked) as error:
    WorkdirLock(str(tmp_path / 'run')).acquire()
  for part in (f'host {record["host"]}', f'pid {os.getpid()}', record['start_time']):
    assert part in str(error.value)
  lock.release()
  assert not (tmp_path / 'run' / workdir_lock.FILENAME).exists()
  with WorkdirLock(str(tmp_path / 'run')):  # Free again.
    pass


def test_of_trainers_starting_together_exactly_one_wins(tmp_path):
  locks = [WorkdirLock(str(tmp_path)) for _ in range(8)]
  won, barrier = [], threading.Barrier(len(locks))

  def start(lock):
    barrier.wait()
    try:
      lock.acquire()
      won.append(lock)
    except WorkdirLocked:
      pass

  threads = [threading.Thread(target=start, args=(lock,)) for lock in locks]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(won) == 1
  won[0].release()


def test_a_lock_whose_pid_is_gone_is_taken_over_with_a_warning(tmp_path, caplog):
  pid = dead_pid()
  write_lock(tmp_path, socket.gethostname(), pid)
  with WorkdirLock(str(tmp_path)) as lock:
    assert workdir_lock.read_holder(str(tmp_path)) == lock.record
  assert f'pid {pid}' in caplog.text and 'no longer exists' in caplog.text


def test_another_hosts_lock_is_alive_until_its_heartbeat_is_stale(tmp_path, caplog):
  write_lock(tmp_path, 'another-host', 12345, age=10)
  with pytest.raises(WorkdirLocked, match='host another-host, pid 12345'):
    WorkdirLock(str(tmp_path), stale_seconds=60).acquire()
  write_lock(tmp_path, 'another-host', 12345, age=120)
  with WorkdirLock(str(tmp_path), stale_seconds=60):
    pass
  assert 'host another-host, pid 12345' in caplog.text
  # 120 s when written; a loaded machine may take a second or more to get here.
  assert re.search(r'heartbeat is 1[23]\d s old', caplog.text), caplog.text


def test_the_heartbeat_refreshes_the_locks_mtime(tmp_path):
  with WorkdirLock(str(tmp_path), heartbeat_seconds=0.05):
    path = workdir_lock.lock_path(str(tmp_path))
    os.utime(path, (time.time() - 1000, time.time() - 1000))
    time.sleep(0.3)
    assert workdir_lock.heartbeat_age(str(tmp_path)) < 5


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
  lock = WorkdirLock(str(tmp_path))
  lock.acquire()
  other = write_lock(tmp_path, 'another-host', 7)  # Taken over while we were stalled.
  lock.release()
  assert workdir_lock.read_holder(str(tmp_path)) == other


def test_hold_releases_on_an_exception(tmp_path):
  with pytest.raises(KeyError), workdir_lock.hold(str(tmp_path)) as lock:
    assert lock is not None and workdir_lock.read_holder(str(tmp_path)) == lock.record
    raise KeyError('boom')
  assert workdir_lock.read_holder(str(tmp_path)) is None


HOLD_SCRIPT = """
import sys
from gato_jax import distributed, workdir_lock
distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
try:
  with workdir_lock.hold(sys.argv[3]) as lock:
    print('HELD', lock is not None)
except workdir_lock.WorkdirLocked as e:
  print('LOCKED', e)
"""


def hold_in_2_processes(workdir) -> list[str]:
  """Each process's one line from `hold` in a 2-process JAX cluster on CPU."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': root, 'TF_CPP_MIN_LOG_LEVEL': '2',
         'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
  processes = [
    subprocess.Popen([sys.executable, '-c', HOLD_SCRIPT, f'localhost:{port}', str(i), workdir],
                     env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=120)[0] for p in processes]
  return [out.strip().splitlines()[-1] if out.strip() else '' for out in outputs]


def test_multi_host_process_0_takes_the_lock_and_every_process_learns_the_outcome(tmp_path):
  assert hold_in_2_processes(str(tmp_path)) == ['HELD True', 'HELD False']
  assert workdir_lock.read_holder(str(tmp_path)) is None  # Released.
  write_lock(tmp_path, socket.gethostname(), os.getpid())  # This test process: alive.
  lines = hold_in_2_processes(str(tmp_path))
  assert all(line.startswith('LOCKED') and f'pid {os.getpid()}' in line for line in lines), lines
