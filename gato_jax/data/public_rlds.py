"""Public RLDS datasets (RL Unplugged, Open X-Embodiment, a user's own) read in place.

A *source* maps a TFDS dataset onto a TaskSpec: which step field feeds each spec field, and
which parts make the action. It is config, not code (the form below): the registered ones
are gato_jax/data/public_catalog.py, a user's own go under config key `data.public_sources`
(`data_pipelines.public_rlds describe` proposes one from the dataset's features).

  'oxe_fractal': {
    'dataset': 'fractal20220817_data:0.1.0',  # TFDS name[/config][:version]
    'data_dir': 'gs://gresearch/robotics',    # where its prepared files are; None: TFDS's
    'spec': 'oxe_fractal',                    # a TaskSpec name
    'observation': {'image': 'observation/image', 'state': ['observation/a', 'observation/b']},
    'action': ['action/world_vector', 'action/rotation_delta'],
    'domain': 'oxe',                          # its weight in gato_public (tasks.py)
  }

The dataset is read where it is (`tfds.builder(...).as_dataset`, no conversion copy), one
episode per element, and mapped inside the tf.data graph: a list of paths is concatenated
as float32 in order, images are resized to the spec's size (grayscale repeated to RGB). The
element is the one generated datasets give (sources.EpisodeSource), so the same return
filter, TaskSpec tokenizer and windows with prompts follow, and a step that does not fit the
spec fails there naming the dataset, the episode (its TFDS id: file and record) and the field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

from gato_jax import cli, specs
from gato_jax import tokenizer as tok

DOMAINS = ('atari', 'dmc', 'dmlab', 'oxe', 'other')
_KEYS = ('dataset', 'data_dir', 'spec', 'observation', 'action', 'domain')
MAX_EPISODE_STEPS = 1 << 30  # Batches a whole `steps` dataset into one element.


class DatasetUnavailableError(cli.CommandError):
  """A public dataset TFDS could not open: no network, or no copy where it looked. An
  expected failure: commands end with its message alone."""


def _paths(value: Any, where: str) -> tuple[str, ...]:
  paths = (value,) if isinstance(value, str) else tuple(value or ())
  if not paths or not all(isinstance(p, str) and p for p in paths):
    raise ValueError(f'{where} must be a step path or a list of them, got {value!r}')
  return paths


@dataclasses.dataclass(frozen=True)
class Source:
  """One public dataset mapped onto a TaskSpec (the module docstring's form)."""

  name: str
  dataset: str
  spec: str
  observation: Mapping[str, tuple[str, ...]]
  action: tuple[str, ...]
  domain: str = 'other'
  data_dir: str | None = None

  @classmethod
  def from_config(cls, name: str, entry: Mapping[str, Any], where: str = '') -> Source:
    """Checks every key, naming `where` (e.g. 'data.public_sources.my_robot') and the key."""
    where = where or f'public source {name}'
    entry = dict(entry)
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
      raise ValueError(f'{where}: unknown key(s) {unknown} (keys: {list(_KEYS)})')
    for key in ('dataset', 'spec', 'observation', 'action'):
      if not entry.get(key):
        raise ValueError(f'{where}.{key} is required')
    domain = entry.get('domain') or 'other'
    if domain not in DOMAINS:
      raise ValueError(f'{where}.domain must be one of {DOMAINS}, got {domain!r}')
    spec = specs.get_spec(entry['spec'])
    fields = {f.name for f in spec.observation}
    observation = {
      k: _paths(v, f'{where}.observation.{k}') for k, v in dict(entry['observation']).items()
    }
    if set(observation) != fields:
      extra, missing = sorted(set(observation) - fields), sorted(fields - set(observation))
      raise ValueError(
        f'{where}.observation must map every field of spec {spec.name!r} ({sorted(fields)}) '
        f'and nothing else'
        + (f'; unknown: {extra}' if extra else '')
        + (f'; unmapped: {missing}' if missing else '')
      )
    return cls(
      name=name,
      dataset=entry['dataset'],
      spec=spec.name,
      observation=observation,
      action=_paths(entry['action'], f'{where}.action'),
      domain=domain,
      data_dir=entry.get('data_dir') or None,
    )

  def to_config(self) -> dict[str, Any]:
    def plain(paths: tuple[str, ...]) -> str | list[str]:
      return paths[0] if len(paths) == 1 else list(paths)

    return {
      'dataset': self.dataset,
      'data_dir': self.data_dir,
      'spec': self.spec,
      'observation': {k: plain(v) for k, v in self.observation.items()},
      'action': plain(self.action),
      'domain': self.domain,
    }


# ----------------------------------------------------------------------------------------
# The registry: catalog sources (tasks.py registers them at import) and a config's own.
# ----------------------------------------------------------------------------------------

_SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
  """Adds a source; the same name registered again must be the same mapping."""
  known = _SOURCES.get(source.name)
  if known is not None and known != source:
    raise ValueError(
      f'public source {source.name!r} is already registered with another mapping '
      f'({known.to_config()}); pick another name'
    )
  _SOURCES[source.name] = source
  return source


def get(name: str) -> Source:
  if name not in _SOURCES:
    raise ValueError(f'unknown public source {name!r}; registered: {sorted(_SOURCES)}')
  return _SOURCES[name]


def registered() -> dict[str, Source]:
  return dict(_SOURCES)


# ----------------------------------------------------------------------------------------
# Reading: the TFDS dataset in place, mapped onto the spec in the tf.data graph.
# ----------------------------------------------------------------------------------------


def builder(source: Source, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """The dataset's builder, reading prepared files under `data_dir` (else the source's own).

  TFDS opens a name it knows from its code or, for a name it does not (a user's own RLDS
  dataset, EnvLogger's output), from the files alone. Offline, opening a dataset kept in
  Google Cloud Storage fails deep inside TFDS; the error here names the dataset and where.
  """
  where = data_dir or source.data_dir
  try:
    return tfds.builder(source.dataset, data_dir=where)
  except Exception as e:  # TFDS raises many types (DatasetNotFoundError, OpError, OSError).
    reason = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise DatasetUnavailableError(
      f'public source {source.name}: cannot open dataset {source.dataset} in '
      f'{where or "the default TFDS data directory"}: {reason}. Datasets in Google Cloud '
      'Storage need the network; otherwise point config key data.public_data_dir (or '
      '--data_dir) at a prepared copy. `python -m data_pipelines.public_rlds check '
      '--mixture=M` lists every source a mixture cannot reach.'
    ) from e


def _lookup(steps: Mapping[str, Any], path: str, source: Source) -> tf.Tensor:
  """The field at a '/'-path. A key that itself holds '/' (kuka's
  'clip_function_input/base_pose_tool_reached') is matched whole before it is split."""
  node: Any = steps
  rest = path
  while rest:
    if not isinstance(node, Mapping):
      raise ValueError(
        f'public source {source.name}: dataset {source.dataset} has no step field {path!r} '
        f'(a tensor at {path[: len(path) - len(rest)].rstrip("/")!r})'
      )
    key = next((k for k in (rest, *_prefixes(rest)) if k in node), None)
    if key is None:
      raise ValueError(
        f'public source {source.name}: dataset {source.dataset} has no step field {path!r} '
        f'(found {sorted(node)} at {rest.split("/")[0]!r})'
      )
    node, rest = node[key], rest[len(key) + 1 :]
  if isinstance(node, Mapping):  # Open X-Embodiment actions are dicts of named parts.
    raise ValueError(
      f'public source {source.name}: step field {path!r} of {source.dataset} is a dict of '
      f'{sorted(node)}: map one of them, or list several to concatenate'
    )
  return node


def _prefixes(path: str) -> list[str]:
  """'a/b/c' -> ['a/b', 'a']: the longest key first."""
  parts = path.split('/')
  return ['/'.join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _gather(steps: Mapping[str, Any], paths: tuple[str, ...], source: Source) -> tf.Tensor:
  parts = [_lookup(steps, p, source) for p in paths]
  if len(parts) == 1:
    return parts[0]
  flat = [tf.reshape(tf.cast(p, tf.float32), [tf.shape(p)[0], -1]) for p in parts]
  return tf.concat(flat, axis=-1)


def check_mapping(steps: Mapping[str, Any], source: Source) -> None:
  """Every mapped path exists in the dataset's steps (a nest of TensorSpecs or features) and
  what is concatenated is numeric: checked once, before any episode is read."""
  for where, paths in (
    *source.observation.items(),
    ('action', source.action),
    ('reward', ('reward',)),
  ):
    parts = [_lookup(steps, p, source) for p in paths]
    if len(parts) == 1:
      continue
    for path, part in zip(paths, parts, strict=True):
      dtype = tf.as_dtype(part.dtype)
      if not (dtype.is_floating or dtype.is_integer or dtype.is_bool):
        raise ValueError(
          f'public source {source.name}: step field {path!r} of {source.dataset} is '
          f'{dtype.name}, not a number: it cannot be concatenated into {where!r}'
        )


def fit_image(frames: tf.Tensor, field: tok.ImageField) -> tf.Tensor:
  """[T, H, W, C] frames to the spec's uint8 [T, h, w, 3]; other ranks are left for the
  spec check to name."""
  if frames.shape.rank != 4 or frames.shape[-1] not in (1, 3):
    return frames
  # Resized before grayscale is made RGB: the same pixels (resizing treats channels alike)
  # for a third of the work, which is most of an Atari episode's reading time.
  if tuple(frames.shape[1:3]) != (field.height, field.width):
    frames = tf.image.resize(frames, (field.height, field.width), antialias=True)
    frames = tf.cast(tf.clip_by_value(tf.round(frames), 0, 255), tf.uint8)
  if frames.shape[-1] == 1:
    frames = tf.repeat(frames, 3, axis=-1)
  return frames


def episode_fn(source: Source) -> Any:
  """The map from one RLDS episode element to the episode element the preprocessors read:
  observation (spec fields), action, returns and the episode's name."""
  spec = specs.get_spec(source.spec)
  fields = {f.name: f for f in spec.observation}

  def to_episode(example: dict[str, Any], index: tf.Tensor) -> dict[str, Any]:
    steps = example['steps'].batch(MAX_EPISODE_STEPS).get_single_element()
    observation = {}
    for name, paths in source.observation.items():
      value = _gather(steps, paths, source)
      if isinstance(fields[name], tok.ImageField):
        value = fit_image(value, fields[name])
      observation[name] = value
    reward = tf.cast(_lookup(steps, 'reward', source), tf.float32)
    # TFDS's id names the file and record: enough to find a bad episode again.
    episode = example['tfds_id'] if 'tfds_id' in example else tf.strings.as_string(index)
    return {
      'observation': observation,
      'action': _gather(steps, source.action, source),
      'reward': reward,
      'is_terminal': tf.reduce_any(tf.cast(_lookup(steps, 'is_terminal', source), tf.bool)),
      'episode_return': tf.reduce_sum(reward),
      'expert_return': tf.constant(math.nan, tf.float32),
      'random_return': tf.constant(math.nan, tf.float32),
      'episode': episode,
      # RL Unplugged numbers its episodes; others have no id (-1).
      'episode_id': tf.cast(example.get('episode_id', tf.constant(-1, tf.int64)), tf.int64),
    }

  return to_episode


def episode_dataset(
  source: Source,
  data_dir: str | None = None,
  split: str = 'train',
  shard: tuple[int, int] | None = None,
  shuffle: bool = False,
  seed: int | None = None,
) -> tf.data.Dataset:
  """The source's episodes as the element sources.EpisodeSource gives.

  `shard=(index, count)` reads only that part of the split (`tfds.even_splits`), so each
  host opens its own files, exactly as the generated-episode tasks shard.
  """
  ds_builder = builder(source, data_dir)
  if shard is not None and shard[1] > 1:
    split = tfds.even_splits(split, n=shard[1])[shard[0]]
  read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=1, add_tfds_id=True)
  try:
    ds = ds_builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config)
  except Exception as e:
    if isinstance(e, ValueError | TypeError):
      raise
    reason = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise DatasetUnavailableError(
      f'public source {source.name}: cannot read split {split!r} of {source.dataset}: {reason}'
    ) from e
  check_mapping(ds.element_spec['steps'].element_spec, source)
  to_episode = episode_fn(source)
  if 'tfds_id' in ds.element_spec:
    return ds.map(lambda ex: to_episode(ex, tf.constant(-1, tf.int64)))
  # A dataset without TFDS ids (a test's stand-in reader) numbers its episodes instead.
  return ds.enumerate().map(lambda i, ex: to_episode(ex, i))


def sources_from_config(data: Any) -> list[Source]:
  """`data.public_sources` (name -> the form above) as Sources, each key checked."""
  entries = data.get('public_sources') or {}
  return [
    Source.from_config(name, entry, f'config key data.public_sources.{name}')
    for name, entry in dict(entries).items()
  ]
