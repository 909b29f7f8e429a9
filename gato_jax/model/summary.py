"""Parameter counts of a config's model, by module, without allocating a single weight.

  python -m gato_jax.model.summary --config=configs/gato_1b2.py

The model is built under `nnx.eval_shape`, so even the 1.18B size prints in seconds on a
laptop. The last line is `total_params N`, for scripts to read.
"""

from __future__ import annotations

import collections
import math

import ml_collections
from absl import flags
from flax import nnx
from ml_collections import config_flags

from gato_jax import cli
from gato_jax.model.gato import from_config


def param_counts(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Parameter count per parameter path ('embedder/tokens', 'stack/blocks/mlp/wi', ...)."""
  abstract = nnx.eval_shape(lambda: from_config(config, nnx.Rngs(0)))
  flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
  return {'/'.join(map(str, path)): math.prod(v.get_value().shape) for path, v in flat}


def grouped(counts: dict[str, int], depth: int) -> dict[str, int]:
  """Sums counts over paths sharing their first `depth` components."""
  out: dict[str, int] = collections.defaultdict(int)
  for path, n in counts.items():
    out['/'.join(path.split('/')[:depth])] += n
  return dict(out)


def format_summary(config: ml_collections.ConfigDict) -> str:
  counts = param_counts(config)
  total = sum(counts.values())
  m = config.model
  lines = [
      f'layers={m.num_layers} d_model={m.d_model} heads={m.num_heads} head_dim={m.head_dim} '
      f'mlp_dim={m.mlp_dim} vocab={config.tokenizer.text_vocab_size} (text)',
      f'{"module":<40} {"params":>14} {"share":>7}',
  ]
  for depth in (2, 3):
    for name, n in sorted(grouped(counts, depth).items()):
      if depth == 3 and not name.startswith('stack/blocks/'):
        continue
      lines.append(f'{name:<40} {n:>14,} {n / total:>7.1%}')
  embeddings = counts['embedder/tokens']
  lines.append(f'{"without the token table":<40} {total - embeddings:>14,}')
  lines.append(f'total_params {total}')
  return '\n'.join(lines)


def main(argv: list[str]) -> None:
  del argv
  print(format_summary(flags.FLAGS.config))


if __name__ == '__main__':
  # Defined only for the command line: tests import this module beside other tools.
  config_flags.DEFINE_config_file('config', None, 'Experiment config file.')
  cli.run(main)
