"""When the trainer joins a JAX cluster, and how: the decision in distributed.initialize().

jax.distributed.initialize is replaced by a recorder, so nothing here starts a coordinator;
what a real multi-process run does is tests/test_multiprocess.py.
"""

from __future__ import annotations

import jax
import pytest

from gato_jax import distributed

_ENV = (
  'JAX_COORDINATOR_ADDRESS',
  'JAX_NUM_PROCESSES',
  'JAX_PROCESS_ID',
  'TPU_WORKER_HOSTNAMES',
  'SLURM_NTASKS',
  'OMPI_COMM_WORLD_SIZE',
)


@pytest.fixture
def calls(monkeypatch):
  """No launcher variables, not a TPU VM, and every jax.distributed.initialize call recorded."""
  for name in _ENV:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed, 'on_cloud_tpu_vm', lambda: False)
  recorded = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *args: recorded.append(args))
  return recorded


def test_a_process_on_its_own_does_not_initialize(calls, monkeypatch):
  monkeypatch.setenv('SLURM_NTASKS', '1')  # One task of an allocation is still alone.
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'host-0')
  distributed.initialize()
  assert calls == []


def test_a_tpu_vm_made_with_gcloud_lets_jax_find_the_slice(calls, monkeypatch):
  """No environment variable announces it: JAX's own TPU VM detection decides."""
  monkeypatch.setattr(distributed, 'on_cloud_tpu_vm', lambda: True)
  assert distributed.cluster_launcher() == 'Cloud TPU VM'
  distributed.initialize()
  assert calls == [()]


@pytest.mark.parametrize(
  'name, value, launcher',
  [
    ('TPU_WORKER_HOSTNAMES', 'host-0,host-1', 'GKE TPU'),
    ('SLURM_NTASKS', '16', 'SLURM'),
    ('OMPI_COMM_WORLD_SIZE', '2', 'Open MPI'),
  ],
)
def test_launchers_announced_in_the_environment(calls, monkeypatch, name, value, launcher):
  monkeypatch.setenv(name, value)
  assert distributed.cluster_launcher() == launcher
  distributed.initialize()
  assert calls == [()]


def test_an_explicit_coordinator_wins(calls, monkeypatch):
  monkeypatch.setattr(distributed, 'on_cloud_tpu_vm', lambda: True)
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', '10.0.0.2:8482')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '4')
  monkeypatch.setenv('JAX_PROCESS_ID', '3')
  distributed.initialize()
  distributed.initialize('127.0.0.1:1234', 2, 0)  # Flags before the environment.
  assert calls == [('10.0.0.2:8482', 4, 3), ('127.0.0.1:1234', 2, 0)]


def test_a_coordinator_without_a_process_id_is_an_error(calls):
  with pytest.raises(ValueError, match='--process_id'):
    distributed.initialize('127.0.0.1:1234', 2)
  assert calls == []


def test_a_tpu_vm_without_a_slice_runs_alone(calls, monkeypatch):
  """JAX raises ValueError when it finds no coordinator; on a TPU VM that means one host."""
  monkeypatch.setattr(distributed, 'on_cloud_tpu_vm', lambda: True)

  def no_cluster(*args):
    raise ValueError('coordinator_address should be defined.')

  monkeypatch.setattr(jax.distributed, 'initialize', no_cluster)
  distributed.initialize()  # No exception.
  monkeypatch.setattr(distributed, 'on_cloud_tpu_vm', lambda: False)
  monkeypatch.setenv('SLURM_NTASKS', '2')
  with pytest.raises(ValueError, match='coordinator_address'):
    distributed.initialize()  # Announced by SLURM: a real failure.


def test_the_installed_jax_still_exposes_its_tpu_vm_detection():
  """on_cloud_tpu_vm reads a private JAX attribute; a JAX that moves it must fail here, not
  silently leave every pod host alone. This machine has no TPU, so the answer is False."""
  from jax._src import cloud_tpu_init

  assert isinstance(cloud_tpu_init.running_in_cloud_tpu_vm, bool)
  assert distributed.on_cloud_tpu_vm() is False
