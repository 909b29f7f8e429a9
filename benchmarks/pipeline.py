r"""Training-ready tokens/s from a seqio mixture: what the input side can feed the trainer.

Measures whole host batches out of `gato_jax.data.make_iterator` (episodes decoded,
filtered, tokenized, windowed with prompts, converted, patches scattered, batched), per
task of the mixture and for the mixture itself. The mixture's missing datasets are written
first (data_pipelines.prepare; minutes, once). Positions/s counts every slot of the [B, L]
batch; tokens/s only the real (non-PAD) ones, which is what the model learns from.

  python -m benchmarks.pipeline --config=configs/demo.py
  python -m benchmarks.pipeline --config=configs/demo.py --batches=50 --batch_size=16

Goal (issue #5): >= 60,000 tokens/s on this 2-core machine, enough to keep one H100 busy
at 45% MFU on gato_1b2 (docs/performance.md has the arithmetic).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import seqio
from absl import flags
from ml_collections import config_flags

from benchmarks import report
from data_pipelines import prepare
from gato_jax import cli, data, tokenizer


def measure(config: Any, batch_size: int, batches: int, warmup: int = 3) -> dict[str, Any]:
  """One row: the stream of `config.data.mixture` (a mixture or a single task)."""
  iterator = data.make_iterator(config, batch_size=batch_size)
  for _ in range(warmup):
    next(iterator)
  positions = real = images = 0
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
    kinds = batch['kinds']
    positions += kinds.size
    real += int((kinds != tokenizer.TokenKind.PAD).sum())
    images += int((kinds == tokenizer.TokenKind.IMAGE).sum())
  seconds = time.perf_counter() - start
  return {
    'stream': config.data.mixture,
    'tokens/s': round(real / seconds),
    'positions/s': round(positions / seconds),
    'sequences/s': round(batches * batch_size / seconds, 1),
    'image share': round(images / max(real, 1), 3),
    'pad share': round(1 - real / positions, 3),
  }


def main(argv: Sequence[str]) -> None:
  del argv
  args = flags.FLAGS
  config = args.config
  mixture = config.data.mixture
  prepare.prepare(config)  # The trainer's input only reads: write what the mixture lacks.
  rows = [measure(config, args.batch_size, args.batches)]
  if args.per_task:
    provider = seqio.get_mixture_or_task(mixture)
    members = provider.tasks if isinstance(provider, seqio.Mixture) else []
    for task in members:
      config.data.mixture = task.name
      rows.append(measure(config, args.batch_size, max(5, args.batches // 3)))
  report.emit(
    'pipeline',
    f'training-ready tokens/s, mixture {mixture}, L={config.model.max_length}, '
    f'batch {args.batch_size}',
    rows,
    args.json_out,
    mixture=mixture,
    sequence_length=config.model.max_length,
    batch_size=args.batch_size,
  )


if __name__ == '__main__':
  # Flags only for the command line: tests import measure() next to other tools' flags.
  config_flags.DEFINE_config_file('config', 'configs/demo.py', 'Experiment config.')
  flags.DEFINE_integer('batch_size', 8, 'Sequences per host batch.')
  flags.DEFINE_integer('batches', 30, 'Timed batches per row (after 3 warm-up).')
  flags.DEFINE_bool('per_task', True, 'Also measure every task of the mixture alone.')
  flags.DEFINE_string('json_out', 'benchmarks/results/pipeline.json', 'Output JSON.')
  cli.run(main)
