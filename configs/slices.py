"""Slice presets: mesh, gradient accumulation and remat for gato_1b2 on each documented slice.

  python -m gato_jax.aot --config=configs/gato_1b2.py:v5e-16
  python -m gato_jax.train --config=configs/gato_1b2.py:v5e-16 --workdir=gs://BUCKET/run

Each preset is the paper's batch (512 sequences of 1024 tokens) with the least gradient
accumulation whose compiled step peaks at or under 90% of the chip's HBM, and at that
accumulation the least recompute that fits: remat 'none', else 'minimal', else 'full'.
`python -m benchmarks.aot` compiles every preset for its slice with libtpu's compile-only
devices (jax's CUDA plugin for h100-8) and writes the figures that docs/scaling.md shows; a
preset is listed here only after it compiled and fit there. The smaller paper models take
the same presets (they need less of everything).
"""

import ml_collections

# slice name -> (mesh data, mesh fsdp, grad_accum_steps, model.remat)
PRESETS = {
  'v5e-16': (1, 16, 2, 'full'),
  'v5e-64': (1, 64, 1, 'minimal'),
  'v5e-256': (16, 16, 1, 'minimal'),
  'v4-32': (1, 16, 1, 'full'),
  'v5p-32': (1, 16, 1, 'minimal'),
  'v5p-128': (4, 16, 1, 'none'),
  'v6e-8': (1, 8, 2, 'full'),
  'h100-8': (1, 8, 1, 'full'),  # One host of 8 H100s (launch/slurm_gpu.sh).
}
# The evaluator's chip: launch/tpu_pod.sh's EVAL_ACCELERATOR_TYPE (v5litepod-1).
EVAL_TOPOLOGY = 'v5e-1'


def apply(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """`config` set up for slice `name`; an unknown name is an error listing the known ones."""
  if name not in PRESETS:
    raise ValueError(f'unknown slice preset {name!r}; known presets: {sorted(PRESETS)}')
  data, fsdp, accum, remat = PRESETS[name]
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = data, fsdp, 1
  config.grad_accum_steps = accum
  config.model.remat = remat
  # The slice this preset was compiled for: gato_jax.aot's default --topology.
  config.topology = name
  return config
