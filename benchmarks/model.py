"""Model throughput: training tokens/s and MFU, and KV-cached decoding against recomputation.

  python -m benchmarks.model --config=configs/demo.py
  python -m benchmarks.model --config=configs/gato_1b2.py --batch_size=8 --peak_flops=989e12

Training is forward + backward of the masked loss with dropout on (no optimizer update),
on one device. MFU counts model FLOPs only (docs/performance.md has the formula):
recomputation under remat is not credited. Decoding fills a `--decode_length` context
(1024 by default) up to its last `--decode_tokens` positions, then produces those one at a
time, either through the KV cache or by re-running the whole fixed-length context; the
ratio of the two is the cache's speed-up.

Peak FLOP/s: `--peak_flops` (default 989e12, H100 SXM dense bf16). On a CPU backend the
default is `--cpu_peak_flops` instead, an estimate the user supplies for their machine
(default 1.57e11: 2 cores x 2.45 GHz x 32 float32 FLOPs per cycle with AVX2 FMA).
"""

from __future__ import annotations

import os
import pathlib
import time

import jax
import jax.numpy as jnp
from absl import flags
from flax import nnx
from ml_collections import config_flags

from benchmarks import report
from gato_jax import cli, tokenizer
from gato_jax.metrics import flops_per_token
from gato_jax.model import ModelOptions, decode, from_config
from gato_jax.model.batch import synthetic_batch
from gato_jax.model.loss import next_token_loss

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/demo.py', 'Experiment config.')
_BATCH = flags.DEFINE_integer('batch_size', 4, 'Sequences per training step.')
_LENGTH = flags.DEFINE_integer('length', 0, 'Training sequence length; 0 = model.max_length.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed training steps (after one to compile).')
_PEAK = flags.DEFINE_float('peak_flops', 989e12, 'Peak FLOP/s of the accelerator.')
_CPU_PEAK = flags.DEFINE_float('cpu_peak_flops', 1.57e11,
                               'Peak FLOP/s assumed when the backend is a CPU.')
_DECODE_LENGTH = flags.DEFINE_integer('decode_length', 1024, 'Context length for decoding.')
_DECODE_TOKENS = flags.DEFINE_integer('decode_tokens', 32, 'Tokens decoded at the end of it.')
_DECODE_BATCH = flags.DEFINE_integer('decode_batch', 1, 'Sequences decoded together.')
_SKIP_TRAIN = flags.DEFINE_bool('skip_train', False, 'Only benchmark decoding.')
_JSON = flags.DEFINE_string('json_out', '', 'Output JSON; default benchmarks/results/'
                            'model_<config>.json.')


def timed(fn, repeats: int) -> float:
  """Seconds per call after one compiling call."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def bench_train(model, config, vocab: int, peak: float, length: int) -> dict[str, float]:
  batch = synthetic_batch(_BATCH.value, length, vocab)

  @nnx.jit
  def step(model, batch, key):
    def loss_fn(model):
      return next_token_loss(model(batch, key=key), batch['tokens'], batch['kinds'])[0]
    return nnx.value_and_grad(loss_fn)(model)

  seconds = timed(lambda: step(model, batch, jax.random.key(0)), _STEPS.value)
  tokens_per_s = _BATCH.value * length / seconds
  flops = flops_per_token(ModelOptions.from_config(config), length, vocab)
  return {'batch_size': _BATCH.value, 'length': length, 'step_s': seconds,
          'tokens_per_s': tokens_per_s, 'flops_per_token': flops['total'],
          'attention_flops_share': flops['attention'] / flops['total'],
          'model_flops_per_s': tokens_per_s * flops['total'],
          'mfu': tokens_per_s * flops['total'] / peak}


def bench_decode(model, vocab: int) -> dict[str, float]:
  length, new, b = _DECODE_LENGTH.value, _DECODE_TOKENS.value, _DECODE_BATCH.value
  batch = synthetic_batch(b, length, vocab, seed=1)
  prompt = {k: v[:, :length - new] for k, v in batch.items()}
  forward = nnx.jit(lambda m, x: m(x))

  def cached_per_token() -> float:
    _, cache = jax.block_until_ready(decode.prefill(model, prompt, max_length=length))
    start = time.perf_counter()
    for t in range(length - new, length):
      logits, cache = decode.extend(model, {k: v[:, t:t + 1] for k, v in batch.items()}, cache)
    jax.block_until_ready(logits)
    return (time.perf_counter() - start) / new

  def recompute():
    # Without a cache each new token re-runs the whole (fixed-shape) context.
    for _ in range(new):
      logits = forward(model, batch)
    return logits

  prefill_s = timed(lambda: decode.prefill(model, prompt, max_length=length)[0], 1)
  cached_per_token()  # Compiles the one-token step.
  cached_s = cached_per_token()
  recompute_s = timed(recompute, 1) / new
  return {'decode_length': length, 'decode_batch': b, 'decode_tokens': new,
          'prefill_s': prefill_s, 'cached_s_per_token': cached_s,
          'recompute_s_per_token': recompute_s, 'speedup': recompute_s / cached_s}


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  backend = jax.default_backend()
  peak = _CPU_PEAK.value if backend == 'cpu' else _PEAK.value
  train_length = _LENGTH.value or config.model.max_length
  if config.model.max_length < _DECODE_LENGTH.value:
    config.model.max_length = _DECODE_LENGTH.value  # The cache needs room for the context.
  model = from_config(config, nnx.Rngs(0))
  vocab = tokenizer.layout_from_config(config).vocab_size
  params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  device = jax.devices()[0]
  result = {'config': _CONFIG.value.model.to_dict(), 'params': params, 'backend': backend,
            'device': getattr(device, 'device_kind', str(device)), 'cpu_count': os.cpu_count(),
            'peak_flops': peak}
  if not _SKIP_TRAIN.value:
    result['train'] = bench_train(model, config, vocab, peak, train_length)
  result['decode'] = bench_decode(model, vocab)

  rows = [('parameters', f'{params:,}'), ('device', f'{result["device"]} ({backend})'),
          ('peak FLOP/s assumed', f'{peak:.3g}')]
  if 'train' in result:
    t = result['train']
    rows += [('train batch x length', f'{t["batch_size"]} x {t["length"]}'),
             ('train step (fwd+bwd)', f'{t["step_s"] * 1e3:.1f} ms'),
             ('train tokens/s', f'{t["tokens_per_s"]:,.0f}'),
             ('model FLOPs/token', f'{t["flops_per_token"]:.3g}'),
             ('MFU', f'{t["mfu"]:.1%}')]
  d = result['decode']
  rows += [('decode context', f'{d["decode_length"]} (batch {d["decode_batch"]})'),
           ('prefill', f'{d["prefill_s"] * 1e3:.1f} ms'),
           ('cached decode / token', f'{d["cached_s_per_token"] * 1e3:.2f} ms'),
           ('recompute / token', f'{d["recompute_s_per_token"] * 1e3:.2f} ms'),
           ('KV cache speed-up', f'{d["speedup"]:.1f}x')]
  name = pathlib.Path(config_flags.get_config_filename(flags.FLAGS['config'])).stem
  out = _JSON.value or f'benchmarks/results/model_{name}.json'
  table = [{'metric': metric, 'value': value} for metric, value in rows]
  report.emit('model', f'model benchmark: configs/{name}.py', table, out, **result)

if __name__ == '__main__':
  jnp.zeros(())  # Initialize the backend before flags print anything device-dependent.
  cli.run(main)
