"""Slice presets: mesh, gradient accumulation and remat for gato_1b2 on each documented slice.

  python -m gato_jax.aot --config=configs/gato_1b2.py:v5e-16
  python -m gato_jax.train --config=configs/gato_1b2.py:v5e-16 --workdir=gs://BUCKET/run

Each preset is the paper's batch (512 sequences of 1024 tokens) with the least gradient
accumulation whose compiled step peaks at or under 90% of the chip's HBM, and at that
accumulation the least recompute that fits: remat 'none', else the most that remat
'names' can keep (the lists below), else 'full'. TPU presets use the splash attention
kernel, the GPU preset cuDNN's; every preset keeps the paper configs' chunked loss and
rematerialized patch ResNet.
`python -m benchmarks.aot` compiles every preset for its slice with libtpu's compile-only
devices (jax's CUDA plugin for h100-8) and writes the figures that docs/scaling.md shows; a
preset is listed here only after it compiled and fit there. The smaller paper models take
the same presets (they need less of everything).
"""

import ml_collections

# What the backward pass keeps, for model.remat='names' (model.remat_save): the attention
# output alone, so attention is never re-run; or every matmul output and it, so nothing
# but elementwise work is.
CONTEXT = 'context'
MATMULS_AND_CONTEXT = 'query,key,value,context,attention_out,mlp_hidden'
# Every matmul output and the attention output except the MLP's hidden layer (4 d_model
# wide, the largest), which is recomputed.
ALL_BUT_MLP = 'query,key,value,context,attention_out'

# slice name -> (mesh data, mesh fsdp, grad_accum_steps, model.remat, model.remat_save)
PRESETS = {
  'v5e-16': (1, 16, 1, 'names', CONTEXT),
  'v5e-64': (1, 64, 1, 'names', MATMULS_AND_CONTEXT),
  'v5e-256': (16, 16, 1, 'none', ''),
  'v4-32': (1, 16, 1, 'names', ALL_BUT_MLP),
  'v5p-32': (1, 16, 1, 'names', MATMULS_AND_CONTEXT),
  'v5p-128': (4, 16, 1, 'none', ''),
  'v6e-8': (1, 8, 1, 'names', CONTEXT),
  'h100-8': (1, 8, 1, 'names', ALL_BUT_MLP),  # One host of 8 H100s (launch/slurm_gpu.sh).
}
# The evaluator's chip: launch/tpu_pod.sh's EVAL_ACCELERATOR_TYPE (v5litepod-1).
EVAL_TOPOLOGY = 'v5e-1'


def apply(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """`config` set up for slice `name`; an unknown name is an error listing the known ones."""
  if name not in PRESETS:
    raise ValueError(f'unknown slice preset {name!r}; known presets: {sorted(PRESETS)}')
  data, fsdp, accum, remat, save = PRESETS[name]
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = data, fsdp, 1
  config.grad_accum_steps = accum
  config.model.remat, config.model.remat_save = remat, save
  # Fused attention that keeps [B, H, L, L] scores out of HBM: Pallas's splash kernel on
  # TPUs (gato_jax/model/splash.py), cuDNN's on GPUs.
  config.model.attention = 'cudnn' if name.startswith('h100') else 'splash'
  # The slice this preset was compiled for: gato_jax.aot's default --topology.
  config.topology = name
  return config
