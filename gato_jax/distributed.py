"""Several processes, one program: joining the JAX cluster and building the global batch.

Every process runs the same trainer. TPU pods (TPU VMs made with gcloud, queued resources,
GKE) and SLURM/Open MPI jobs are found by `jax.distributed.initialize()` itself; GPU
clusters without a scheduler and CPU runs on one machine (launch/local_multihost.sh) pass
the coordinator explicitly, by flags or by JAX's own environment variables
(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). Each process then reads only
its own share of every batch; the global batch is an array whose shards live where that
process's devices are.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding

from gato_jax import sharding

# Environment variables by which a multi-process launcher announces itself, and its name.
_LAUNCHER_ENV = (
  ('TPU_WORKER_HOSTNAMES', 'GKE TPU'),
  ('SLURM_NTASKS', 'SLURM'),
  ('OMPI_COMM_WORLD_SIZE', 'Open MPI'),
)


def on_cloud_tpu_vm() -> bool:
  """JAX's own finding, made at `import jax`: TPU chips on the PCI bus and libtpu installed.

  Both of JAX's TPU cluster detectors (GceTpuCluster, which reads the GCE metadata server of
  a TPU VM made with gcloud, and GkeTpuCluster) require it, and a TPU VM made with gcloud
  sets no environment variable that would tell a launcher apart.
  """
  try:
    from jax._src import cloud_tpu_init
  except ImportError:  # A JAX that moved it: trust the environment variables alone.
    return False
  return bool(getattr(cloud_tpu_init, 'running_in_cloud_tpu_vm', False))


def cluster_launcher() -> str:
  """Which launcher made this process one of several ('' for a process on its own)."""
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if len([h for h in hosts.split(',') if h]) > 1:
    return _LAUNCHER_ENV[0][1]
  for name, launcher in _LAUNCHER_ENV[1:]:
    if int(os.environ.get(name, '1') or 1) > 1:
      return launcher
  if on_cloud_tpu_vm():
    return 'Cloud TPU VM'
  return ''


def initialize(coordinator_address: str = '', num_processes: int = 0, process_id: int = -1) -> None:
  """Joins the cluster when there is one; a single process on its own does nothing.

  On any Cloud TPU VM, one host or many, JAX is left to find the slice: a process that skipped
  this on a pod would run alone, and SIGTERM would save no common step. Must run before
  anything touches a JAX device.
  """
  coordinator_address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
  num_processes = num_processes or int(os.environ.get('JAX_NUM_PROCESSES', '0') or 0)
  if process_id < 0:
    process_id = int(os.environ.get('JAX_PROCESS_ID', '-1') or -1)
  if coordinator_address:
    if num_processes < 1 or process_id < 0:
      raise ValueError(
        'a coordinator address needs --num_processes and --process_id (or JAX_NUM_PROCESSES '
        f'and JAX_PROCESS_ID); got num_processes={num_processes}, process_id={process_id}'
      )
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  else:
    launcher = cluster_launcher()
    if not launcher:
      return
    logging.info('%s: jax.distributed.initialize() finds the cluster', launcher)
    try:
      jax.distributed.initialize()
    except ValueError as e:  # A TPU VM whose metadata names no slice: one host on its own.
      if launcher != 'Cloud TPU VM':
        raise
      logging.warning('Cloud TPU VM, but JAX found no cluster to join (%s); running alone', e)
      return
  logging.info(
    'process %d of %d: %d local devices of %d',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def batch_sharding(mesh: Mesh, rules: sharding.Rules, ndim: int) -> NamedSharding:
  """Leading axis on the logical `batch` axis, the rest replicated."""
  axes = ('batch',) + (None,) * (ndim - 1)
  return NamedSharding(mesh, sharding.logical_to_spec(axes, rules))


def global_batch(
  local: dict[str, np.ndarray], mesh: Mesh, rules: sharding.Rules
) -> dict[str, jax.Array]:
  """This process's rows -> global arrays; each process contributes an equal, adjacent slice.

  With one process this is a plain sharded device_put of the whole batch.
  """
  count = jax.process_count()

  def put(x: np.ndarray) -> jax.Array:
    shape = (x.shape[0] * count, *x.shape[1:])
    return jax.make_array_from_process_local_data(batch_sharding(mesh, rules, x.ndim), x, shape)

  return {k: put(v) for k, v in local.items()}


def check_batch_divides(
  batch_size: int, mesh: Mesh, rules: sharding.Rules, process_count: int | None = None
) -> None:
  """Raises ValueError naming `batch_size` when processes or batch shards do not divide it.

  `process_count` defaults to this run's (gato_jax.aot passes a slice's host count).
  """
  count = jax.process_count() if process_count is None else process_count
  if batch_size % count:
    raise ValueError(
      f'config key batch_size ({batch_size}) must be a multiple of the process count ({count})'
    )
  spec = sharding.logical_to_spec(('batch',), rules)[0]
  axes = () if spec is None else (spec,) if isinstance(spec, str) else spec
  shards = int(np.prod([mesh.shape[a] for a in axes]))
  if batch_size % shards:
    raise ValueError(
      f'config key batch_size ({batch_size}) must be a multiple of the mesh axes it is split '
      f'over ({" x ".join(f"mesh.{a}={mesh.shape[a]}" for a in axes)} = {shards})'
    )
