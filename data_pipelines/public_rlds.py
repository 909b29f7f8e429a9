r"""Read public RLDS datasets (RL Unplugged, Open X-Embodiment) onto a TaskSpec.

A source in config names a TFDS dataset, the TaskSpec its episodes become, and where each
spec field comes from inside a step. Images are resized to the spec's size (grayscale
frames repeated to RGB); fields listed with several paths are concatenated, which is how
Open X-Embodiment's dict actions become one vector. Every episode is then checked against
the spec like a generated one, so a public dataset that does not fit fails naming the
dataset, the episode and the field instead of training on garbage. A dataset TFDS cannot
open (offline, say) fails with one line naming it and where it looked.

  python -m data_pipelines.public_rlds --config=configs/public_rlds.py --source=oxe_fractal
  python -m data_pipelines.public_rlds --config=configs/public_rlds.py --source=rlu_atari_pong \
      --data_dir=gs://BUCKET/tensorflow_datasets --max_episodes=3
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds
from absl import app, flags
from ml_collections import config_flags

from gato_jax import cli, specs, tables
from gato_jax.data import episodes, public_rlds
from gato_jax.data.public_rlds import DatasetUnavailableError


def _source(source: Any) -> public_rlds.Source:
  """A Source, a config entry of configs/public_rlds.py, or a registered source's name."""
  if isinstance(source, public_rlds.Source):
    return source
  if isinstance(source, str):
    return public_rlds.get(source)
  entry = source.to_dict() if hasattr(source, 'to_dict') else dict(source)
  return public_rlds.Source.from_config(entry['dataset'], entry)


def read_public_episodes(
  source: Any, data_dir: str | None = None, split: str = 'train', max_episodes: int | None = None
) -> Iterator[episodes.Episode]:
  """Episodes of `source` as numpy, through the same tf.data mapping the seqio task runs,
  each checked against its TaskSpec (a misfit raises naming dataset, episode and field).

  `data_dir` defaults to the source's own (Open X-Embodiment's bucket), else TFDS's default.
  """
  source = _source(source)
  spec = specs.get_spec(source.spec)
  ds = public_rlds.episode_dataset(source, data_dir, split)
  if max_episodes is not None:
    ds = ds.take(max_episodes)
  for index, example in enumerate(tfds.as_numpy(ds)):
    name = example['episode'].decode()
    try:
      observations, actions = spec.check_steps(example['observation'], example['action'])
    except ValueError as e:
      raise ValueError(f'dataset {source.dataset}, episode {name}: {e}') from e
    yield episodes.Episode(
      task=source.spec,
      env=source.dataset,
      policy='logged',
      seed=int(example['episode_id']) if example['episode_id'] >= 0 else index,
      observations=observations,
      actions=actions,
      rewards=example['reward'],
      is_terminal=bool(example['is_terminal']),
    )


def main(argv: Sequence[str]) -> None:
  del argv
  args = flags.FLAGS
  sources = args.config.sources
  if args.source not in sources:
    raise app.UsageError(f'--source must be one of {sorted(sources)}, got {args.source!r}')
  read = read_public_episodes(sources[args.source], args.data_dir, max_episodes=args.max_episodes)
  try:
    rows = [{'episode': e.seed, 'steps': len(e.actions), 'return': e.episode_return} for e in read]
  except DatasetUnavailableError as e:
    raise SystemExit(f'error: {e}') from None  # The message says it all; no traceback.
  print(tables.format_table(rows))


if __name__ == '__main__':
  # Flags are defined only for the command line, so that importing this module (the
  # pipeline, tests) does not claim --config and --data_dir.
  config_flags.DEFINE_config_file('config', 'configs/public_rlds.py', 'Sources config.')
  flags.DEFINE_string('source', None, 'Name of a source in the config.')
  flags.DEFINE_string('data_dir', None, 'TFDS data directory holding the dataset.')
  flags.DEFINE_integer('max_episodes', 3, 'Episodes to read.')
  cli.run(main)
