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

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import app, flags
from ml_collections import config_flags

from gato_jax import cli, specs, tables
from gato_jax import tokenizer as tok
from gato_jax.data import episodes


def _lookup(steps: dict[str, Any], path: str) -> np.ndarray:
  node: Any = steps
  for key in path.split('/'):
    if not isinstance(node, dict) or key not in node:
      keys = sorted(node) if isinstance(node, dict) else []
      raise ValueError(f'no field {path!r} in its steps (found {keys} at {key!r})')
    node = node[key]
  if isinstance(node, dict):  # Open X-Embodiment actions are dicts of named parts.
    raise ValueError(
      f'field {path!r} is a dict of {sorted(node)}: map one of them, or list several to concatenate'
    )
  return np.asarray(node)


def _gather(steps: dict[str, Any], paths: str | Sequence[str]) -> np.ndarray:
  paths = [paths] if isinstance(paths, str) else list(paths)
  parts = [_lookup(steps, p) for p in paths]
  if len(parts) == 1:
    return parts[0]
  for path, part in zip(paths, parts, strict=True):
    if part.dtype.kind not in 'biuf':
      raise ValueError(f'field {path!r} is not numeric ({part.dtype}): it cannot be concatenated')
  return np.concatenate([p.reshape(len(p), -1).astype(np.float32) for p in parts], axis=-1)


def _fit_image(frames: np.ndarray, field: tok.ImageField) -> np.ndarray:
  """[T, H, W, C] uint8 frames to the spec's [T, h, w, 3]."""
  if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
    return frames  # Leave it to check_steps to report the wrong rank or channels.
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  if frames.shape[1:3] != (field.height, field.width):
    resized = tf.image.resize(frames, (field.height, field.width), antialias=True)
    frames = np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)
  return frames


class DatasetUnavailableError(RuntimeError):
  """A public dataset that TFDS could not open: no network, or no copy where it looked."""


def _load(dataset: str, split: str, data_dir: str | None) -> tf.data.Dataset:
  # TFDS reads a prepared copy under data_dir, or fetches and prepares one from Google Cloud
  # Storage; offline either fails deep inside TFDS with an error that names neither.
  try:
    return tfds.load(dataset, split=split, data_dir=data_dir)
  except (tf.errors.OpError, RuntimeError, OSError, ImportError) as e:
    reason = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise DatasetUnavailableError(
      f'dataset {dataset}: cannot open split {split!r} in '
      f'{data_dir or "the default TFDS data directory"}: {reason}\n'
      'Public datasets are read from Google Cloud Storage, which needs the network; '
      'without it, point --data_dir at a prepared copy.'
    ) from e


def read_public_episodes(
  source: Any, data_dir: str | None = None, split: str = 'train', max_episodes: int | None = None
) -> Iterator[episodes.Episode]:
  """Episodes of `source` (a config entry: dataset, spec, observation, action) as Episodes.

  `data_dir` defaults to the source's own (Open X-Embodiment's bucket), else TFDS's default.
  """
  spec = specs.get_spec(source.spec)
  fields = {f.name: f for f in spec.observation}
  unknown = set(source.observation) - fields.keys()
  if unknown:
    raise ValueError(
      f'source {source.dataset}: observation mapping names {sorted(unknown)}, which task '
      f'{source.spec!r} does not have (its fields: {sorted(fields)})'
    )
  ds = _load(source.dataset, split, data_dir or source.get('data_dir'))
  if max_episodes is not None:
    ds = ds.take(max_episodes)
  for index, example in enumerate(tfds.as_numpy(ds)):
    episode_id = int(example.get('episode_id', index))
    step_list = list(example['steps'])
    try:
      if not step_list:
        raise ValueError('the episode has no steps')
      steps = episodes.stack_steps(step_list)
      observations = {}
      for name, paths in source.observation.items():
        value = _gather(steps, paths)
        if isinstance(fields[name], tok.ImageField):
          value = _fit_image(value, fields[name])
        observations[name] = value
      actions = _gather(steps, source.action)
      checked, actions = spec.check_steps(observations, actions)
      rewards = _lookup(steps, 'reward')
      if rewards.shape != (len(step_list),) or rewards.dtype.kind not in 'biuf':
        raise ValueError(
          f"field 'reward': expected one number per step, got {rewards.dtype} of shape "
          f'{rewards.shape[1:]}'
        )
      is_terminal = bool(_lookup(steps, 'is_terminal')[-1])
    except ValueError as e:
      raise ValueError(f'dataset {source.dataset}, episode {episode_id}: {e}') from e
    yield episodes.Episode(
      task=source.spec,
      env=source.dataset,
      policy='logged',
      seed=episode_id,
      observations=checked,
      actions=actions,
      rewards=rewards.astype(np.float32),
      is_terminal=is_terminal,
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
