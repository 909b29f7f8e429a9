"""The hardware a step is compiled for: Cloud TPU slices, H100 hosts and CPU devices, by name.

  slice_shape('v5e-16')        # 16 chips on a 4x4 grid, 4 hosts: no libtpu needed
  devices_and_hosts('v4-32')   # (16, 4): what the config checks need
  parse_topology('v5p-128')    # libtpu's compile-only devices, HBM and peak FLOP/s per chip

Names are Cloud TPU's slice names (`v5e-16`, `v5litepod-16`, `v4-32`, `v5p-128`, `v6e-8`),
`h100-N` (N H100s, 8 per host) and `cpu:N`. Devices come from JAX's topology APIs, which
describe hardware this machine does not have; the caller runs JAX on the CPU
(gato_jax.aot sets JAX_PLATFORMS=cpu before importing jax), so libtpu and the CUDA plugin
are never started as backends.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax

from gato_jax import metrics

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class Generation:
  """One Cloud TPU generation as libtpu's topology API and its slice names describe it."""

  topology_prefix: str  # get_topology_desc's topology_name starts '<prefix>:'.
  chip_config: str  # 'megacore': one JAX device per chip of two TensorCores.
  dims: int  # 2D (v5e, v6e) or 3D (v4, v5p) torus.
  cores_per_chip: int  # Slice names count TensorCores on v4/v5p ('v4-32' = 16 chips).
  hbm_bytes: int  # What the compiler may use per chip (libtpu 0.0.42.1's own figure).
  peak_flops: float  # Dense bf16 FLOP/s per chip.


GENERATIONS = {
  'v4': Generation('v4', 'megacore', 3, 2, int(30.75 * GiB), 275e12),
  'v5e': Generation('v5e', 'default', 2, 1, int(15.75 * GiB), 197e12),
  'v5p': Generation('v5', 'megacore', 3, 2, int(95.74 * GiB), 459e12),
  'v6e': Generation('v6e', 'default', 2, 1, int(31.25 * GiB), 918e12),
}
ALIASES = {'v5litepod': 'v5e', 'v6litepod': 'v6e'}

# NVIDIA H100 SXM (80 GB) as XLA's GPU compiler describes a device it cannot see: the
# GpuTargetConfig that jax's CUDA plugin takes for compile-only devices. Figures are the
# chip's public specifications (132 SMs, 50 MiB L2, 3.35 TB/s, compute capability 9.0).
H100_TARGET_CONFIG = """
gpu_device_info {
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132
  fpus_per_core: 128 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: 3352320000000 l2_cache_size: 52428800
  clock_rate_ghz: 1.98 device_memory_size: 84929347584 shared_memory_per_block_optin: 232448
  cuda_compute_capability { major: 9 } registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}
platform_name: "CUDA"
dnn_version_info { major: 9 minor: 7 }
runtime_version { major: 12 minor: 8 patch: 0 }
device_description_str: "NVIDIA H100 80GB HBM3"
"""
GPUS_PER_HOST = 8
# XLA's GPU compiler does not refuse a program larger than the device (it only logs), so
# the fit is judged here: against the share of memory JAX's allocator takes, which
# launch/slurm_gpu.sh sets with XLA_PYTHON_CLIENT_MEM_FRACTION=0.9.
H100_USABLE_BYTES = int(0.9 * 84929347584)
H100_PEAK_FLOPS = 989e12  # Dense bf16, SXM.
CHIPS_PER_HOST = 4  # Every multi-host slice of these generations; 8-chip v5e/v6e are one host.


@dataclasses.dataclass
class Slice:
  """The devices to compile for, and what one of them can hold and compute."""

  name: str
  devices: list[Any]
  hosts: int
  hbm_bytes: int | None  # None: unknown (CPU), no fit check.
  peak_flops: float  # Per device.

  @property
  def device_kind(self) -> str:
    return self.devices[0].device_kind


def _torus(chips: int, dims: int) -> tuple[int, ...]:
  """The slice's chip grid as Cloud TPU names it: 4x4, 2x4, 2x2x1, 2x2x4, 4x4x8, ..."""
  if chips < 1 or chips & (chips - 1):
    raise ValueError(f'a TPU slice has a power-of-two chip count, got {chips}')
  if dims == 3 and chips < 8:
    return {1: (1, 1, 1), 2: (1, 2, 1), 4: (2, 2, 1)}[chips]
  shape = [1] * dims
  i = 0
  while math.prod(shape) < chips:
    shape[i % dims] *= 2
    i += 1
  return tuple(sorted(shape))


@dataclasses.dataclass(frozen=True)
class SliceShape:
  """A Cloud TPU slice name taken apart: what libtpu's topology API needs, no devices."""

  generation: Generation
  chips: int
  grid: tuple[int, ...]
  host_bounds: tuple[int, ...]
  wrap: tuple[bool, ...]

  @property
  def hosts(self) -> int:
    return self.chips // math.prod(self.host_bounds)


def slice_shape(name: str) -> SliceShape:
  """'v5e-16', 'v5litepod-16', 'v4-32', 'v5p-128', 'v6e-8' -> its chips, grid and hosts."""
  match = re.fullmatch(r'([a-z0-9]+)-(\d+)', name)
  generation = match and ALIASES.get(match.group(1), match.group(1))
  if not match or generation not in GENERATIONS:
    raise ValueError(
      f'unknown topology {name!r}: expected cpu:N or <generation>-<size> with generation '
      f'one of {sorted(GENERATIONS)} (v5litepod = v5e), e.g. v5e-16, v4-32, v5p-128'
    )
  gen = GENERATIONS[generation]
  size = int(match.group(2))
  if size % gen.cores_per_chip:
    raise ValueError(f'topology {name}: {generation} slice sizes count TensorCores, '
                     f'a multiple of {gen.cores_per_chip}')
  chips = size // gen.cores_per_chip
  grid = _torus(chips, gen.dims)
  single_host = chips <= (8 if gen.dims == 2 else CHIPS_PER_HOST)
  host_bounds = (*grid, 1)[:3] if single_host else (2, 2, 1)
  # Wraparound links exist on full 2D pods and on 3D dimensions of 4 or more; they change
  # how collectives route, not what memory a step needs.
  wrap = tuple(d >= (16 if gen.dims == 2 else 4) for d in grid) + (False,) * (3 - gen.dims)
  return SliceShape(gen, chips, grid, host_bounds, wrap)


def gpu_count(name: str) -> int | None:
  """'h100-8' -> 8 (hosts of 8 GPUs); None for any other name."""
  match = re.fullmatch(r'h100-(\d+)', name)
  if not match:
    return None
  count = int(match.group(1))
  if count < 1 or (count > GPUS_PER_HOST and count % GPUS_PER_HOST):
    raise ValueError(f'topology {name}: up to {GPUS_PER_HOST} GPUs on one host, or whole '
                     f'hosts of {GPUS_PER_HOST}')
  return count


def devices_and_hosts(name: str) -> tuple[int, int]:
  """(devices, hosts) of a topology name, without libtpu or a CUDA plugin."""
  gpus = gpu_count(name)
  if gpus is not None:
    return gpus, max(1, gpus // GPUS_PER_HOST)
  if name.startswith('cpu:'):
    return int(name.split(':', 1)[1]), 1
  shape = slice_shape(name)
  return shape.chips, shape.hosts


def parse_topology(name: str) -> Slice:
  """A slice name (see slice_shape), 'h100-N' or 'cpu:N' -> the devices to compile for."""
  gpus = gpu_count(name)
  if gpus is not None:
    hosts = max(1, gpus // GPUS_PER_HOST)
    devices = get_gpu_topology(f'1x{hosts}x{gpus // hosts}')
    return Slice(name, devices, hosts, H100_USABLE_BYTES, H100_PEAK_FLOPS)
  if name.startswith('cpu:'):
    count = int(name.split(':', 1)[1])
    devices = jax.devices('cpu')
    if count > len(devices):
      raise ValueError(
        f'--topology={name} needs {count} CPU devices but this process has {len(devices)}; '
        f'start it with XLA_FLAGS=--xla_force_host_platform_device_count={count}'
      )
    total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    return Slice(name, devices[:count], 1, total // count, metrics.CPU_PEAK_FLOPS / count)
  shape = slice_shape(name)
  gen = shape.generation
  topology = get_topology(f'{gen.topology_prefix}:{"x".join(map(str, shape.grid))}',
                          gen.chip_config, shape.host_bounds, shape.wrap)
  hosts = len({d.process_index for d in topology})
  return Slice(name, list(topology), hosts, gen.hbm_bytes, gen.peak_flops)


def get_topology(topology_name: str, chip_config: str, host_bounds: Sequence[int],
                 wrap: Sequence[bool]) -> list[Any]:
  """libtpu's compile-only devices; a clear error when libtpu is not installed."""
  from jax.experimental import topologies

  try:
    return topologies.get_topology_desc(
      platform='tpu', topology_name=topology_name, chip_config_name=chip_config,
      chips_per_host_bounds=tuple(host_bounds), num_slices=1, wrap=tuple(wrap),
    ).devices
  except Exception as e:  # jax raises RuntimeError or JaxRuntimeError, by version.
    try:
      import libtpu  # noqa: F401
    except ImportError:
      raise SystemExit(
        'compiling for a TPU topology needs libtpu, which is not installed: '
        "pip install -e '.[aot]' (it brings jax[tpu] at the pinned jax version)"
      ) from None
    raise RuntimeError(f'libtpu could not describe topology {topology_name}: {e}') from e


def get_gpu_topology(topology: str) -> list[Any]:
  """Compile-only H100s through jax's CUDA plugin ('SLICES x HOSTS x GPUS_PER_HOST').

  The plugin checks the CUDA driver when it loads as a backend; JAX_PLATFORMS=cpu keeps
  it from loading as one, and its compiler is still there for the topology.
  """
  from jax.experimental import topologies

  try:
    return list(topologies.get_topology_desc(
      platform='cuda', target_config=H100_TARGET_CONFIG, topology=topology).devices)
  except Exception as e:
    if importlib.util.find_spec('jax_cuda12_plugin') is None:
      raise SystemExit(
        "compiling for GPUs needs jax's CUDA plugin, which is not installed: "
        "pip install -e '.[cuda]' (about 5.5 GB; no GPU needed to compile)"
      ) from None
    raise RuntimeError(
      f'the CUDA plugin could not describe GPU topology {topology}: {e} (run with '
      'JAX_PLATFORMS=cpu on a machine without a GPU)') from e
