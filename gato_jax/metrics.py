"""What a user watches during training: metrics.jsonl, TensorBoard events, a console line.

Process 0 writes; the other processes hold the same (globally reduced) values. Each logged
step appends one JSON object to `WORKDIR/metrics.jsonl` (append-only, so a resumed run
continues the file; a step logged twice around a restart appears twice, the later line is
the one that counts) and the same scalars to TensorBoard event files under
`WORKDIR/tensorboard/`. Model FLOPs per token (for MFU) are counted here too, once for the
trainer, gato_jax.aot and the model benchmark, from the model's ModelOptions.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping

import jax
from absl import logging

from gato_jax import tokenizer
from gato_jax.model.options import ModelOptions
from gato_jax.tensorboard import ScalarWriter

# Dense peak FLOP/s per device by `device_kind` prefix (bf16 for accelerators).
PEAK_FLOPS = {
  'TPU v4': 275e12,
  'TPU v5 lite': 197e12,
  'TPU v5e': 197e12,
  'TPU v5p': 459e12,
  'TPU v5': 459e12,
  'TPU v6 lite': 918e12,
  'TPU v6e': 918e12,
  'NVIDIA H100': 989e12,
  'NVIDIA H200': 989e12,
  'NVIDIA A100': 312e12,
}
# A CPU "device" on these machines: 2 cores x 2.45 GHz x 32 float32 FLOPs/cycle (AVX2 FMA),
# shared by all fake host-platform devices.
CPU_PEAK_FLOPS = 1.57e11


def _resnet_macs(m: ModelOptions) -> int:
  """Multiply-adds of the patch ResNet per position (it runs on every one)."""
  c, half = m.resnet_channels, tokenizer.PATCH_SIZE // 2
  return half * half * (9 * 3 * c + 2 * 9 * c * c + c * m.d_model)


def flops_per_token(m: ModelOptions, length: int, vocab_size: int) -> dict:
  """Training FLOPs per token (forward + backward = 3x forward), as in docs/performance.md.

  The output layer is counted over the token table's `m.vocab_rows(vocab_size)` rows.
  """
  vocab_rows = m.vocab_rows(vocab_size)
  attn_width = m.num_heads * m.head_dim
  layer_macs = 4 * m.d_model * attn_width + 2 * m.d_model * m.mlp_dim
  dense_macs = m.num_layers * layer_macs + vocab_rows * m.d_model + _resnet_macs(m)
  attention_flops = 12 * m.num_layers * length * attn_width  # QK^T and AV, fwd + bwd.
  return {
    'dense': 6.0 * dense_macs,
    'attention': float(attention_flops),
    'total': 6.0 * dense_macs + attention_flops,
  }


def remat_flops_per_token(m: ModelOptions, length: int, vocab_size: int) -> float:
  """FLOPs per token that recomputation adds in the backward pass (not model FLOPs).

  'full' recomputes each layer's whole forward pass; 'minimal' keeps the weight matmuls
  but recomputes attention's two batched products (scores and weighted values); 'names'
  recomputes the producer of every tagged tensor neither saved nor offloaded (`mlp_out`
  excepted: the backward pass never needs its value). `loss_chunks > 1` recomputes the
  output layer, `remat_patches` the patch ResNet.
  """
  attn_width = m.num_heads * m.head_dim
  attention_forward = 4.0 * m.num_layers * length * attn_width
  extra = 0.0
  if m.loss_chunks > 1:
    extra += 2.0 * m.vocab_rows(vocab_size) * m.d_model
  if m.remat_patches:
    extra += 2.0 * _resnet_macs(m)
  if m.remat == 'full':
    layer_macs = 4 * m.d_model * attn_width + 2 * m.d_model * m.mlp_dim
    return extra + 2.0 * m.num_layers * layer_macs + attention_forward
  if m.remat == 'minimal':
    return extra + attention_forward
  if m.remat == 'names':
    kept = set(m.remat_save) | set(m.remat_offload)
    macs = {'query': m.d_model * attn_width, 'key': m.d_model * attn_width,
            'value': m.d_model * attn_width, 'attention_out': attn_width * m.d_model,
            'mlp_hidden': m.d_model * m.mlp_dim}
    recomputed = sum(v for k, v in macs.items() if k not in kept)
    extra += 2.0 * m.num_layers * recomputed
    if 'context' not in kept:
      extra += attention_forward
  return extra


def peak_flops(configured: float = 0.0) -> float | None:
  """Peak FLOP/s of all devices together; None when the device kind is unknown."""
  devices = jax.devices()
  if configured > 0:
    return configured * len(devices)
  if devices[0].platform == 'cpu':
    return CPU_PEAK_FLOPS
  kind = devices[0].device_kind
  for prefix, flops in PEAK_FLOPS.items():
    if kind.startswith(prefix):
      return flops * len(devices)
  return None


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}:{rest // 60:02d}:{rest % 60:02d}' if hours else f'{rest // 60}:{rest % 60:02d}'


class MetricWriter:
  """Appends logged steps to metrics.jsonl and TensorBoard; prints the progress line."""

  def __init__(self, workdir: str, total_steps: int, start_step: int):
    self.total_steps, self.start_step = total_steps, start_step
    self.start_time = time.perf_counter()
    self.active = jax.process_index() == 0
    if not self.active:
      return
    import tensorflow as tf  # The data pipeline imports it already; no second dependency.

    tf.io.gfile.makedirs(workdir)  # gfile: a gs:// workdir works like a local one.
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._file = tf.io.gfile.GFile(self.path, 'a')
    self._tensorboard = ScalarWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._file.write(json.dumps({'step': step, **scalars}) + '\n')
    self._file.flush()
    self._tensorboard.write(step, scalars)
    self._console(step, scalars)

  def _console(self, step: int, scalars: Mapping[str, float]) -> None:
    elapsed = time.perf_counter() - self.start_time
    done = step - self.start_step
    eta = elapsed / done * (self.total_steps - step) if done > 0 else float('nan')
    parts = [
      f'step {step}/{self.total_steps} ({step / self.total_steps:.0%})',
      f'loss {scalars["loss"]:.4f}',
    ]
    for key, fmt in (
      ('learning_rate', '{:.2e}'),
      ('grad_norm', '{:.3f}'),
      ('tokens_per_s', '{:,.0f}'),
      ('mfu', '{:.1%}'),
    ):
      if key in scalars:
        parts.append(f'{key} ' + fmt.format(scalars[key]))
    parts.append(f'ETA {format_duration(eta) if math.isfinite(eta) else "?"}')
    logging.info(' | '.join(parts))

  def close(self) -> None:
    if self.active:
      self._file.close()
      self._tensorboard.close()
