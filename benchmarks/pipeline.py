r"""Training-ready tokens/s from a seqio mixture: what the input side can feed the trainer.

Measures whole host batches out of `gato_jax.data.make_iterator` (episodes decoded,
filtered, tokenized, windowed with prompts, converted, patches scattered, batched), per
task of the mixture and for the mixture itself. The mixture's missing datasets are written
first (data_pipelines.prepare; minutes, once). Positions/s counts every slot of the [B, L]
batch; tokens/s only the real (non-PAD) ones, which is what the model learns from.

Sequence packing (`--packing`, on by default): every row is measured with `data.pack` off
and on, and says what share of the [B, L] positions is training-ready: `real share` (real
tokens, 1 - pad share) and `target share` (loss targets), with `sequences/row` (packed
segments per row). Packing moves no data faster; it raises these shares, which are what
a step's compute is spent on.

Two more rows (`--public`, on by default) read public RLDS datasets the way training does:
a mock Open X-Embodiment RT-1 dataset (`mock oxe_fractal`: fractal20220817_data's published
features, 256x320 JPEG frames, `--public_steps` or 40 steps an episode) and a mock RL
Unplugged Atari run (`mock rlu_atari_pong`: TFDS's rlu_atari features, 84x84 PNG frames, 400
steps). data_pipelines/mock_rlds.py writes them once, as real TFDS files under
<data.data_dir>/mock_rlds/; each is registered through config (data.public_sources, under
the catalog's mapping with that data_dir) and measured as its own mixture
`gato_mock_<source>`. They time the public reader's graph (TFDS read, image decode, resize)
in front of the same tokenizer and windows.

  python -m benchmarks.pipeline --config=configs/demo.py
  python -m benchmarks.pipeline --config=configs/demo.py --batches=50 --batch_size=16
  python -m benchmarks.pipeline --config=configs/demo.py --per_task=False --public_episodes=16
  python -m benchmarks.pipeline --config=configs/demo.py --config.model.max_length=1024 \
      --public=False --json_out=benchmarks/results/pipeline_L1024.json

Goal (issue #5): >= 60,000 tokens/s on this 2-core machine, enough to keep one H100 busy
at 45% MFU on gato_1b2 (docs/performance.md has the arithmetic).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from typing import Any

import seqio
import tensorflow_datasets as tfds
from absl import flags
from ml_collections import config_flags

from benchmarks import report
from data_pipelines import mock_rlds, prepare
from gato_jax import cli, data, tokenizer
from gato_jax.data import public_catalog

# Catalog source -> steps per mock episode: RT-1 episodes run tens of steps, DQN's Atari
# episodes hundreds (or thousands) of frames.
PUBLIC_ROWS = {'oxe_fractal': 40, 'rlu_atari_pong': 400}
# Batches read before timing: each task's first sample opens its dataset and fills seqio's
# 256-window shuffle buffer (seconds, once). A mixture meets its rarest task (the demo's
# Atari and captions: 3% of sequences) within 240 sequences all but 0.1% of the time.
WARMUP = 30


def measure(config: Any, batch_size: int, batches: int, warmup: int = WARMUP) -> dict[str, Any]:
  """One row: the stream of `config.data.mixture` (a mixture or a single task), timed over
  `batches` batches after `warmup` start-up ones."""
  iterator = data.make_iterator(config, batch_size=batch_size)
  for _ in range(warmup):
    next(iterator)
  positions = real = images = targets = sequences = 0
  start = time.perf_counter()
  for _ in range(batches):
    batch = next(iterator)
    kinds = batch['kinds']
    positions += kinds.size
    real += int((kinds != tokenizer.TokenKind.PAD).sum())
    images += int((kinds == tokenizer.TokenKind.IMAGE).sum())
    targets += int(batch['loss_mask'].sum())
    sequences += int(batch['segment_ids'].max(axis=1).sum())  # Segments are 1..n per row.
  seconds = time.perf_counter() - start
  return {
    'stream': config.data.mixture,
    'pack': bool(config.data.pack),
    'tokens/s': round(real / seconds),
    'positions/s': round(positions / seconds),
    'sequences/s': round(sequences / seconds, 1),
    'image share': round(images / max(real, 1), 3),
    'pad share': round(1 - real / positions, 3),
    'real share': round(real / positions, 3),
    'target share': round(targets / positions, 3),
    'sequences/row': round(sequences / (batches * batch_size), 2),
  }


def measure_packing(config: Any, batch_size: int, batches: int, warmup: int,
                    packing: bool) -> list[dict[str, Any]]:
  """One row per `data.pack` setting (off, then on) with `packing`, else the config's own."""
  if not packing:
    return [measure(config, batch_size, batches, warmup)]
  rows = []
  for pack in (False, True):
    row_config = copy.deepcopy(config)
    row_config.data.pack = pack
    rows.append(measure(row_config, batch_size, batches, warmup))
  return rows


def mock_features(name: str) -> tuple[str, Any]:
  """Catalog source `name`'s TFDS dataset (with its version) and published features."""
  dataset, _, version = public_catalog.SOURCES[name]['dataset'].partition(':')
  if dataset in mock_rlds.OXE_FEATURES:
    return f'{dataset}:{version}', mock_rlds.oxe_features(dataset)
  # RL Unplugged builders are TFDS code: their features and version are known offline.
  code = tfds.builder(dataset)
  return f'{dataset}:{version or code.version}', code.info.features


def public_rows(
  config: Any,
  batch_size: int,
  batches: int,
  episodes: int,
  steps: int = 0,
  cache_dir: str = '',
  warmup: int = WARMUP,
) -> list[dict[str, Any]]:
  """The `mock <source>` rows: each PUBLIC_ROWS source written once (`episodes` episodes of
  `steps` steps, 0: its typical length) under `cache_dir` (default
  <data.data_dir>/mock_rlds), registered through config and measured as its own mixture."""
  cache_dir = cache_dir or os.path.join(config.data.data_dir, 'mock_rlds')
  rows = []
  for name, typical_steps in PUBLIC_ROWS.items():
    length = steps or typical_steps
    where = os.path.join(cache_dir, f'{name}_{episodes}x{length}')
    dataset, features = mock_features(name)
    # The catalog's name for the dataset: TFDS opens the files there in place (by files
    # first for a versioned name, by its registered code otherwise), as it would a mirror.
    mock_rlds.write(*dataset.split(':'), features, episodes, where, steps=length)
    mock = f'mock_{name}'
    row_config = copy.deepcopy(config)
    row_config.data.public_sources = {mock: {**public_catalog.SOURCES[name], 'data_dir': where}}
    row_config.data.mixture = f'gato_{mock}'
    row = measure(row_config, batch_size, batches, warmup=warmup)
    rows.append({**row, 'stream': f'mock {name}'})
  return rows


def main(argv: Sequence[str]) -> None:
  del argv
  args = flags.FLAGS
  config = args.config
  mixture = config.data.mixture
  prepare.prepare(config)  # The trainer's input only reads: write what the mixture lacks.
  # Other jobs on the host slow every row: the 1-minute load average says how busy it was.
  load_before = os.getloadavg()[0]
  rows = measure_packing(config, args.batch_size, args.batches, args.warmup, args.packing)
  if args.per_task:
    provider = seqio.get_mixture_or_task(mixture)
    members = provider.tasks if isinstance(provider, seqio.Mixture) else []
    for task in members:
      config.data.mixture = task.name
      rows += measure_packing(
        config, args.batch_size, max(5, args.batches // 3), args.warmup, args.packing)
  if args.public:
    config.data.mixture = mixture
    rows += public_rows(
      config,
      args.batch_size,
      args.batches,
      args.public_episodes,
      args.public_steps,
      warmup=args.warmup,
    )
  report.emit(
    'pipeline',
    f'training-ready tokens/s, mixture {mixture}, L={config.model.max_length}, '
    f'batch {args.batch_size}',
    rows,
    args.json_out,
    mixture=mixture,
    sequence_length=config.model.max_length,
    batch_size=args.batch_size,
    batches=args.batches,
    warmup=args.warmup,
    load_average={'before': round(load_before, 2), 'after': round(os.getloadavg()[0], 2)},
    public_episodes=args.public_episodes if args.public else 0,
    public_steps={n: args.public_steps or s for n, s in PUBLIC_ROWS.items()} if args.public else {},
  )


if __name__ == '__main__':
  # Flags only for the command line: tests import measure() next to other tools' flags.
  config_flags.DEFINE_config_file('config', 'configs/demo.py', 'Experiment config.')
  flags.DEFINE_integer('batch_size', 8, 'Sequences per host batch.')
  flags.DEFINE_integer('batches', 100, 'Timed batches per row (a third per task).')
  flags.DEFINE_integer('warmup', WARMUP, 'Batches read before timing each row.')
  flags.DEFINE_bool('per_task', True, 'Also measure every task of the mixture alone.')
  flags.DEFINE_bool('public', True, 'Also measure the mock public RLDS rows (PUBLIC_ROWS).')
  flags.DEFINE_bool('packing', True, 'Measure each mixture and task row with data.pack off and '
                    'on (else with the config\'s own).')
  flags.DEFINE_integer('public_episodes', 8, 'Episodes written per mock public dataset.')
  flags.DEFINE_integer('public_steps', 0, 'Steps per mock episode; 0: each typical length.')
  flags.DEFINE_string('json_out', 'benchmarks/results/pipeline.json', 'Output JSON.')
  cli.run(main)
