r"""Public and your own RLDS datasets: propose a mapping, check a mixture, read a source.

  python -m data_pipelines.public_rlds describe NAME [--data_dir=DIR] [--config=CONFIG]
      [--name=TASK] [--write=PATH]
  python -m data_pipelines.public_rlds check --mixture=gato_public [--data_dir=DIR]
      [--episodes=2] [--config=CONFIG]
  python -m data_pipelines.public_rlds read --source=rlu_control_suite_cartpole_swingup \
      [--data_dir=DIR] [--max_episodes=3] [--config=CONFIG]
  python -m data_pipelines.public_rlds list [--config=CONFIG]

`list` prints the catalog's sources (gato_jax/data/public_catalog.py) and the config's own
(`data.public_sources`) with their mappings as a Markdown table: docs/public_sources.md
ends with the catalog's.

`read` prints a registered source's first episodes (steps, return), read through the same
tf.data mapping the seqio task runs and checked against its TaskSpec, so that a dataset that
does not fit fails naming the dataset, the episode and the field. A source is one of
gato_jax/data/public_catalog.py, one of the config's `data.public_sources`, or (the older
form) one of `sources` in configs/public_rlds.py.

`check` does that for every public source of a mixture (`tasks.public_sources`): whether
TFDS can open it here, its episodes (the train split's count), its tokens (estimated: the
mean length of the episodes read, times the spec's tokens per timestep, times the
episodes) and whether the episodes read fit their spec and the spec fits `--config`'s
model. Sources it cannot reach (offline, or no prepared copy under the data directory) get
one line each. It fails (exit 2) when a reachable source does not fit.

`describe` reads a TFDS dataset's features (`tfds.builder(NAME, data_dir=DIR).info`: TFDS
knows a dataset from its code, as RL Unplugged's, or from its files alone, as a user's own
RLDS dataset) and prints a TaskSpec and a source mapping as a config snippet to paste into
the run's config (`config.data.specs[...]`, `config.data.public_sources[...]`): a source
needs no Python. Every choice has a comment; lines marked CONFIRM are guesses the features
cannot settle. The rules, for the step fields (paths below `steps`):

- Image: one camera per spec. The main one is the observation image named image, rgb or
  pixels (the observation itself when it is an image, as in RL Unplugged Atari), else the
  largest; the others are listed, not mapped. It is scaled down, aspect ratio kept as
  nearly as multiples of 16 allow and never up, to at most 80 patches and to what the
  model leaves: the observation must fit `model.local_positions` and a timestep at most
  half of `model.max_length` (so a window holds context), both from `--config` (default
  the paper's configs/gato_1b2.py). One-channel images are fine: the reader repeats them
  to RGB.
- Text: the first string observation (or a step-level one, as Open X-Embodiment's
  `language_instruction`) becomes a 32-token text field `instruction`. Measure your
  longest instruction in tokens: a longer one raises unless `truncate` is set.
- State: every float observation up to 64 values becomes one continuous field `state`,
  the paths concatenated in sorted order. One field, not one per path: the tokenizer
  orders and positions all continuous values alike, so separate fields would add names
  but no information, and one list is easier to edit. Larger float tensors (depth maps,
  instruction embeddings) and integer or boolean observations are listed, not mapped.
- Action: an integer (or ClassLabel) action becomes a discrete field of the ClassLabel's
  classes, or of 1024 values to CONFIRM when the dataset does not say. A float action, or
  a dict of them (Open X-Embodiment), becomes one continuous field of the float parts in
  sorted order, leaving out terminate* and *terminal* flags, with mu_law off (Gato
  companding is for observations) and low/high to CONFIRM: values outside raise.

The proposal is checked before it is printed: the spec through `specs.config.from_dict`,
the source through `public_rlds.Source.from_config` with that spec.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from ml_collections import config_flags

from gato_jax import cli, specs, tables
from gato_jax import tokenizer as tok
from gato_jax.data import episodes, public_catalog, public_rlds
from gato_jax.data.public_rlds import DatasetUnavailableError
from gato_jax.specs import config as spec_config

COMMANDS = ('read', 'describe', 'check', 'list')
MAX_PATCHES = 80  # A modest image: Gato's RT-1 frames at 128x160.
TEXT_TOKENS = 32  # A short instruction in a byte or SentencePiece vocabulary.
MAX_STATE_VALUES = 64  # Larger float tensors are not proprioception: listed, not mapped.
IMAGE_NAMES = ('image', 'rgb', 'pixels', 'observation')
RESERVED_STEP_KEYS = ('action', 'reward', 'discount', 'is_first', 'is_last', 'is_terminal')


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


# ----------------------------------------------------------------------------------------
# describe: a TaskSpec and a source mapping proposed from a dataset's features.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One feature of a step: its '/'-path below `steps` and what kind of value it holds."""

  path: str
  kind: str  # image, text, float, int, bool or other.
  shape: tuple[int | None, ...] = ()
  dtype: str = ''
  num_classes: int | None = None

  @property
  def name(self) -> str:
    return self.path.rsplit('/', 1)[-1]

  @property
  def size(self) -> int:
    return math.prod(d or 0 for d in self.shape)

  def describe(self) -> str:
    shape = 'x'.join('?' if d is None else str(d) for d in self.shape)
    if self.kind == 'image':
      return f'image {shape}'
    if self.kind == 'text':
      return 'string'
    if self.num_classes is not None:
      return f'ClassLabel of {self.num_classes}'
    return f'{self.dtype}[{shape}]' if self.shape else self.dtype


def _leaves(feature: Any, path: str = '') -> list[Leaf]:
  """The step's features flattened to leaves, in TFDS's (sorted) key order."""
  f = tfds.features
  if isinstance(feature, f.FeaturesDict):
    keys = sorted(feature.keys())
    return [leaf for key in keys for leaf in _leaves(feature[key], _join(path, key))]
  shape = tuple(getattr(feature, 'shape', ()) or ())
  dtype = np.dtype(getattr(feature, 'np_dtype', None) or np.object_)
  if isinstance(feature, f.Image):
    usable = dtype == np.uint8 and len(shape) == 3 and shape[-1] in (1, 3) and None not in shape
    return [Leaf(path, 'image' if usable else 'other', shape, dtype.name)]
  if isinstance(feature, f.Text) or dtype.kind in 'OSU':
    return [Leaf(path, 'text' if not shape else 'other', shape, 'string')]
  if isinstance(feature, f.ClassLabel):
    return [Leaf(path, 'int', shape, dtype.name, feature.num_classes)]
  if not isinstance(feature, f.Tensor):
    return [Leaf(path, 'other', shape, type(feature).__name__)]
  kind = {'f': 'float', 'i': 'int', 'u': 'int', 'b': 'bool'}.get(dtype.kind, 'other')
  return [Leaf(path, kind if None not in shape else 'other', shape, dtype.name)]


def _join(path: str, key: str) -> str:
  return f'{path}/{key}' if path else key


def fit_image_size(height: int, width: int, max_patches: int) -> tuple[int, int]:
  """The largest (h, w), multiples of 16 no larger than the image (16 at least), with the
  aspect ratio kept as nearly as 16-pixel steps allow and at most `max_patches` patches."""
  p = tok.PATCH_SIZE
  max_cols = max(1, width // p)
  for rows in range(max(1, height // p), 0, -1):
    cols = max(1, min(max_cols, round(rows * width / height)))
    if rows * cols <= max_patches:
      return rows * p, cols * p
  raise cli.CommandError(f'an image needs at least one patch; {max_patches} are left for it')


def _is_terminate_flag(name: str) -> bool:
  return name.startswith('terminate') or 'terminal' in name


@dataclasses.dataclass
class Proposal:
  """A spec and a source for a dataset, with the comments that explain each choice."""

  name: str
  spec: dict[str, Any]
  source: dict[str, Any]
  comments: dict[str, list[str]]  # Field name (or 'action', 'header') -> comment lines.
  not_mapped: list[str]

  def snippet(self) -> str:
    """The proposal as Python lines for a config's get_config(), comments within 100 columns."""
    lines = _comment(self.comments['header'], '')
    lines.append(f'config.data.specs[{self.name!r}] = {{')
    lines.append("  'observation': [")
    for field in self.spec['observation']:
      lines += _comment(self.comments[field['name']], '    ')
      lines += _literal(field, '    ', '', ',')
    lines += _comment([f'not mapped: {n}' for n in self.not_mapped], '    ')
    lines.append('  ],')
    lines += _comment(self.comments['action'], '  ')
    lines += _literal(self.spec['action'], '  ', "'action': ", ',')
    lines.append('}')
    lines.append(f'config.data.public_sources[{self.name!r}] = {{')
    for key, value in self.source.items():
      if key == 'observation':
        lines.append("  'observation': {")
        lines += [f'    {k!r}: {v!r},' for k, v in value.items()]
        lines.append('  },')
      else:
        lines.append(f'  {key!r}: {value!r},')
    lines.append('}')
    return '\n'.join(lines) + '\n'


def _literal(value: dict[str, Any], indent: str, prefix: str, suffix: str) -> list[str]:
  """A dict literal on one line, or one item a line when that passes 100 columns."""
  line = f'{indent}{prefix}{value!r}{suffix}'
  if len(line) <= 100:
    return [line]
  items = [f'{indent}  {k!r}: {v!r},' for k, v in value.items()]
  return [f'{indent}{prefix}{{', *items, f'{indent}}}{suffix}']


def _comment(texts: list[str], indent: str) -> list[str]:
  width = 100 - len(indent) - 2
  return [
    f'{indent}# {line}'
    for text in texts
    for line in textwrap.wrap(text, width, subsequent_indent='  ', break_long_words=False)
  ]


def proposal_name(dataset: str) -> str:
  """'rlu_atari/Pong_run_1:1.3.0' -> 'rlu_atari_pong_run_1': a task and source name."""
  base = dataset.split(':', 1)[0]
  return re.sub(r'[^0-9a-z]+', '_', base.lower()).strip('_')


@contextlib.contextmanager
def _spec_registered(spec: Any) -> Iterator[None]:
  """`spec` known to specs.get_spec while a source naming it is checked, then forgotten."""
  specs.DATASET_SPECS[spec.name] = spec
  try:
    yield
  finally:
    specs.DATASET_SPECS.pop(spec.name, None)


@dataclasses.dataclass
class _Part:
  """One proposed spec field: its config, the step path(s) it reads, why, and what it left."""

  field: dict[str, Any]
  paths: str | list[str]
  comments: list[str]
  not_mapped: list[str] = dataclasses.field(default_factory=list)

  @property
  def num_tokens(self) -> int:
    return spec_config.field_from_dict(self.field, 'the proposed field').num_tokens


def _one_or_list(leaves: list[Leaf]) -> str | list[str]:
  return leaves[0].path if len(leaves) == 1 else [leaf.path for leaf in leaves]


def _propose_text(texts: list[Leaf]) -> _Part:
  text, *others = texts
  return _Part(
    {'type': 'text', 'name': 'instruction', 'max_tokens': TEXT_TOKENS},
    text.path,
    [
      f'{text.path}: string -> {TEXT_TOKENS} tokens. CONFIRM: measure your longest '
      "instruction in tokens; a longer one raises unless you add 'truncate': True"
    ],
    [f'{t.path} (string): one instruction per spec' for t in others],
  )


def _propose_state(floats: list[Leaf]) -> _Part:
  """One continuous field of the float observations that look like proprioception (its
  `field` empty when none does)."""
  state = [f for f in floats if 'embedding' not in f.name and f.size <= MAX_STATE_VALUES]
  left = [
    f'{f.path} ({f.describe()}): '
    + ('an embedding' if 'embedding' in f.name else f'over {MAX_STATE_VALUES} values')
    + ', not proprioception'
    for f in floats
    if f not in state
  ]
  if not state:
    return _Part({}, [], [], left)
  size = sum(f.size for f in state)
  shape = list(state[0].shape) if len(state) == 1 else [size]
  parts = ' + '.join(f'{f.path} ({f.describe()})' for f in state)
  values = f'{size} value' + ('s' if size != 1 else '')
  return _Part(
    {'type': 'continuous', 'name': 'state', 'shape': shape},
    _one_or_list(state),
    [f'{parts} -> {values}, mu-law companded as in Gato'],
    left,
  )


def _propose_image(images: list[Leaf], room: int, where: str) -> _Part:
  """The main camera, scaled to at most `room` patches; `where` says what limits it."""
  named = [leaf for leaf in images if leaf.name in IMAGE_NAMES]
  main = max(named or images, key=lambda leaf: leaf.shape[0] * leaf.shape[1])
  if room < 1:
    raise cli.CommandError(f'no room for image {main.path}: {where}')
  height, width = fit_image_size(main.shape[0], main.shape[1], room)
  patches = (height // tok.PATCH_SIZE) * (width // tok.PATCH_SIZE)
  scaled = '' if (height, width) == tuple(main.shape[:2]) else f' -> {height}x{width}'
  gray = ', grayscale repeated to RGB' if main.shape[2] == 1 else ''
  return _Part(
    {'type': 'image', 'name': 'image', 'height': height, 'width': width},
    main.path,
    [
      f'{main.path}: {main.describe()}{scaled} = {patches} patches '
      f'(at most {room}: aspect ratio kept, multiples of 16{gray})'
    ],
    [f'{leaf.path} ({leaf.describe()}): one camera per spec' for leaf in images if leaf != main],
  )


def propose(
  dataset: str,
  features: Any,
  data_dir: str | None,
  local_positions: int,
  max_length: int,
  name: str | None = None,
  config_name: str = 'the config',
) -> Proposal:
  """The spec and source for a dataset whose features are `features` (the module's rules)."""
  name = name or proposal_name(dataset)
  if name in specs.TASK_SPECS or name in specs.DATASET_SPECS:
    raise cli.CommandError(
      f'task {name!r} already has a spec; give the proposal another name with --name'
    )
  if 'steps' not in features or not isinstance(features['steps'], tfds.features.Dataset):
    raise cli.CommandError(
      f'dataset {dataset} is not RLDS: its features have no `steps` dataset '
      f'(found {sorted(features.keys())})'
    )
  leaves = _leaves(features['steps'].feature)
  for needed in ('reward', 'is_terminal', 'action'):
    if not any(_under(leaf, needed) for leaf in leaves):
      raise cli.CommandError(f'dataset {dataset}: its steps have no {needed!r}, which RLDS has')
  observed = [leaf for leaf in leaves if _under(leaf, 'observation')]
  # Outside the observation only a string is taken (OXE's step-level language_instruction).
  step_level = [
    leaf
    for leaf in leaves
    if not any(_under(leaf, key) for key in (*RESERVED_STEP_KEYS, 'observation'))
  ]
  texts = [leaf for leaf in observed + step_level if leaf.kind == 'text']
  not_mapped = [
    f'{leaf.path} ({leaf.describe()}): '
    + ('a discrete field, if its range is known' if leaf.kind in ('int', 'bool') else
       'not a uint8 image, string or floats')
    for leaf in observed
    if leaf.kind in ('int', 'bool', 'other')
  ]  # fmt: skip
  not_mapped += [
    f'{leaf.path} ({leaf.describe()}): not in the observation'
    for leaf in step_level
    if leaf.kind != 'text'
  ]
  parts: dict[str, _Part] = {}
  if texts:
    parts['instruction'] = _propose_text(texts)
  state = _propose_state([leaf for leaf in observed if leaf.kind == 'float'])
  if state.field:
    parts['state'] = state
  action = _propose_action([leaf for leaf in leaves if _under(leaf, 'action')])
  images = [leaf for leaf in observed if leaf.kind == 'image']
  if images:
    others = sum(p.num_tokens for p in parts.values())
    timestep = others + 1 + action.num_tokens
    room = min(
      MAX_PATCHES,
      local_positions - tok.FIRST_OBSERVATION_POSITION - others,
      max_length // 2 - timestep,
    )
    where = (
      f'text, state and action take {timestep} tokens a timestep, of model.local_positions '
      f'{local_positions} and half of model.max_length {max_length} ({config_name})'
    )
    parts['image'] = _propose_image(images, room, where)
  if not parts:
    raise cli.CommandError(f'dataset {dataset}: no image, text or float observation to map')
  for part in (*parts.values(), state, action):
    not_mapped += [n for n in part.not_mapped if n not in not_mapped]

  spec = spec_config.from_dict(
    name,
    {'observation': [p.field for p in parts.values()], 'action': action.field},
    f'the proposed spec {name}',
  )
  source = {
    'dataset': dataset,
    'data_dir': data_dir,
    'spec': name,
    'observation': {k: parts[k].paths for k in ('image', 'instruction', 'state') if k in parts},
    'action': action.paths,
    'domain': 'other',
  }
  with _spec_registered(spec):
    public_rlds.Source.from_config(name, source, f'the proposed source {name}')
  tokens = ' + '.join(f'{f.num_tokens} {f.name}' for f in spec.observation)
  comments = {k: p.comments for k, p in parts.items()}
  comments['action'] = action.comments
  comments['header'] = [
    f'{dataset}: a proposal for task {name!r}. Paths are below `steps`; lines marked '
    'CONFIRM need your decision.',
    f'A timestep: {tokens} + 1 separator + {spec.action_tokens} action = '
    f'{spec.tokens_per_timestep} tokens (model.local_positions {local_positions}, '
    f'model.max_length {max_length} in {config_name}).',
  ]
  # Fields in the spec's own order (text, images, the rest), as to_dict would give them.
  spec_dict = {
    'observation': [parts[f.name].field for f in spec.observation],
    'action': action.field,
  }
  return Proposal(name, spec_dict, source, comments, not_mapped)


def _under(leaf: Leaf, key: str) -> bool:
  return leaf.path == key or leaf.path.startswith(key + '/')


def _propose_action(parts: list[Leaf]) -> _Part:
  """A discrete field for an integer action, else a continuous one of the float parts."""
  if len(parts) == 1 and parts[0].path == 'action' and parts[0].kind in ('int', 'bool'):
    leaf = parts[0]
    field = {'type': 'discrete', 'name': 'action', 'shape': list(leaf.shape)}
    if leaf.num_classes is not None:
      note = f'action: {leaf.describe()} -> discrete, {leaf.num_classes} values'
      return _Part({**field, 'num_values': leaf.num_classes}, 'action', [note])
    return _Part(
      {**field, 'num_values': tok.NUM_BINS},
      'action',
      [
        f'action: {leaf.describe()} -> discrete. CONFIRM num_values: the dataset does not say '
        f'how many actions there are; {tok.NUM_BINS} is the most a spec allows'
      ],
    )
  floats = [p for p in parts if p.kind == 'float' and not _is_terminate_flag(p.name)]
  left_out = [p for p in parts if p not in floats]
  if not floats:
    raise cli.CommandError(
      'the action has no float part to propose a continuous field from '
      f'({", ".join(p.path + " " + p.describe() for p in parts)}); write its field by hand'
    )
  size = sum(p.size for p in floats)
  shape = list(floats[0].shape) if len(floats) == 1 else [size]
  what = ' + '.join(f'{p.path} ({p.describe()})' for p in floats)
  notes = [f'{what} -> {size} values' + (', sorted' if len(floats) > 1 else '')]
  if left_out:
    notes.append('left out: ' + ', '.join(f'{p.path} ({p.describe()})' for p in left_out))
  notes.append(
    'CONFIRM low/high: the range the values span (outside it they raise); mu_law off, as '
    'Gato bins actions directly'
  )
  field = {
    'type': 'continuous',
    'name': 'action',
    'shape': shape,
    'mu_law': False,
    'low': -1.0,
    'high': 1.0,
  }
  return _Part(field, _one_or_list(floats), notes)


def describe(
  dataset: str,
  data_dir: str | None,
  config: Any,
  name: str | None = None,
  config_name: str = 'the config',
) -> Proposal:
  """The proposal for `dataset`, read from TFDS's record of its features."""
  try:
    builder = tfds.builder(dataset, data_dir=data_dir)
    features = builder.info.features
  except Exception as e:  # TFDS raises many types; the cause is what matters here.
    reason = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise DatasetUnavailableError(
      f'cannot read the features of {dataset} in {data_dir or "the default TFDS data directory"}'
      f': {reason}'
    ) from e
  proposal = propose(
    dataset,
    features,
    data_dir,
    config.model.local_positions,
    config.model.max_length,
    name,
    config_name,
  )
  from gato_jax.data import tasks  # noqa: F401, PLC0415 - registers the catalog's sources.

  base = dataset.split(':')[0]
  known = [n for n, s in public_rlds.registered().items() if s.dataset.split(':')[0] == base]
  if known:  # Pasting the proposal under the same name would clash with the catalog's.
    proposal.comments['header'] = [
      f'{base} is already registered as public source {", ".join(known)} (task '
      f'gato_{known[0]}): use it, or paste this under another --name to map it differently.',
      *proposal.comments['header'],
    ]
  return proposal


# ----------------------------------------------------------------------------------------
# check: a mixture's public sources, reachable and fitting.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class SourceCheck:
  """What `check` found for one source."""

  source: public_rlds.Source
  unreachable: str = ''  # Why TFDS could not open it here; '' when it could.
  episodes: int | None = None
  steps_per_episode: float | None = None
  tokens: int | None = None
  fit: str = ''  # 'ok' or the first error.

  def row(self) -> dict[str, Any]:
    return {
      'source': self.source.name,
      'dataset': self.source.dataset,
      'episodes': self.episodes,
      'steps/episode': self.steps_per_episode,
      'tokens (est.)': self.tokens,
      'fit': self.fit,
    }


def check_source(
  source: public_rlds.Source, data_dir: str | None, episodes_read: int, model: Any = None
) -> SourceCheck:
  """Opens the source, counts it, reads `episodes_read` episodes through the task's mapping
  and checks them (and the spec against `model`, a ModelOptions, when given)."""
  result = SourceCheck(source)
  where = data_dir or source.data_dir
  try:
    builder = public_rlds.builder(source, data_dir)
  except DatasetUnavailableError as e:
    result.unreachable = str(e)
    return result
  if 'train' not in builder.info.splits:
    result.unreachable = (
      f'public source {source.name}: TFDS knows {source.dataset} but holds no prepared copy in '
      f'{where or "the default TFDS data directory"}; point --data_dir (or config key '
      'data.public_data_dir) at one'
    )
    return result
  result.episodes = builder.info.splits['train'].num_examples
  spec = specs.get_spec(source.spec)
  try:
    if model is not None:
      from gato_jax.model import check_task_fits  # noqa: PLC0415 - jax only when checking.

      check_task_fits(spec, model)
      if spec.tokens_per_timestep > model.max_length:
        raise ValueError(
          f'task {spec.name!r}: a timestep is {spec.tokens_per_timestep} tokens, more than '
          f'model.max_length {model.max_length}'
        )
    lengths = [
      len(e.actions) for e in read_public_episodes(source, data_dir, max_episodes=episodes_read)
    ]
  except DatasetUnavailableError as e:
    result.unreachable = str(e)
    return result
  except ValueError as e:
    result.fit = cli.one_line(e)
    return result
  result.fit = 'ok'
  if lengths:
    result.steps_per_episode = float(np.mean(lengths))
    result.tokens = round(result.steps_per_episode * spec.tokens_per_timestep * result.episodes)
  return result


def check(
  mixture: str, data_dir: str | None, episodes_read: int, model: Any = None
) -> tuple[str, list[SourceCheck]]:
  """The report `check` prints and the per-source results behind it."""
  import seqio  # noqa: PLC0415 - with the task registry, only when checking.

  from gato_jax.data import tasks  # noqa: PLC0415 - registers every task.

  try:
    sources = tasks.public_sources(mixture)
  except ValueError as e:
    raise cli.CommandError(f'--mixture: {cli.one_line(e)}') from None
  if not sources:
    raise cli.CommandError(f'mixture {mixture} reads no public RLDS source')
  results = [check_source(s, data_dir, episodes_read, model) for s in sources]
  reachable = [r for r in results if not r.unreachable]
  lines = [tables.format_table([r.row() for r in reachable]) if reachable else '(none reachable)']
  lines.append(
    f'tokens (est.): mean steps of the {episodes_read} episode(s) read x tokens per timestep '
    'x episodes'
  )
  lines += [f'unreachable: {r.unreachable}' for r in results if r.unreachable]
  provider = seqio.get_mixture_or_task(mixture)
  members = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  others = sorted(
    t.name for t in members if not isinstance(t.source, tasks.sources.PublicEpisodeSource)
  )
  if others:
    lines.append(f'not RLDS sources, not checked: {", ".join(others)}')
  return '\n'.join(lines), results


# ----------------------------------------------------------------------------------------
# The command line.
# ----------------------------------------------------------------------------------------


def _paths_text(paths: tuple[str, ...]) -> str:
  return ' + '.join(f'`{p}`' for p in paths)


def sources_markdown(extra: Sequence[public_rlds.Source] = ()) -> str:
  """The catalog's sources (and `extra`, a config's own) as a Markdown table, one row per
  source: docs/public_sources.md is the catalog's (test_docs checks it), so the docs show
  the mapping the reader runs."""
  lines = [
    '| source | dataset | data_dir | spec | tokens/step | mapping (spec field <- step path) |',
    '| --- | --- | --- | --- | --- | --- |',
  ]
  catalog = [public_rlds.Source.from_config(n, e) for n, e in public_catalog.SOURCES.items()]
  for source in sorted([*catalog, *extra], key=lambda s: s.name):
    name = source.name
    spec = specs.get_spec(source.spec)
    mapping = '; '.join(
      f'{field} <- {_paths_text(paths)}' for field, paths in sorted(source.observation.items())
    )
    mapping += f'; action <- {_paths_text(source.action)}'
    lines.append(
      f'| `{name}` | `{source.dataset}` | {source.data_dir or "TFDS default"} | `{spec.name}` '
      f'| {spec.tokens_per_timestep} | {mapping} |'
    )
  return '\n'.join(lines) + '\n'


def _config_name() -> str:
  return config_flags.get_config_filename(flags.FLAGS['config']) or 'the config'


def _registered_config(config: Any) -> Any:
  """The config, its own specs and sources registered (a config with a `data` section)."""
  if config is not None and 'data' in config:
    from gato_jax.data import tasks  # noqa: PLC0415 - registers every task (imports seqio).

    tasks.register_from_config(config)
  return config


@dataclasses.dataclass
class Options:
  """The command line's flags (define_flags), apart from --config."""

  data_dir: str | None = None
  source: str | None = None
  max_episodes: int = 3
  name: str | None = None
  write: str | None = None
  mixture: str = 'gato_public'
  episodes: int = 2


def run_command(args: Sequence[str], options: Options, config: Any, config_name: str) -> None:
  """One command: `args` are the positional arguments (`describe NAME`), and what it
  prints goes to stdout. A cause to report raises CommandError, a bad command line
  app.UsageError."""
  command, *rest = args or (['read'] if options.source else [''])
  if command not in COMMANDS:
    raise app.UsageError(f'the first argument must be one of {COMMANDS}, got {command!r}')
  if command == 'describe':
    if len(rest) != 1:
      raise app.UsageError('describe takes one dataset name: describe NAME [--data_dir=DIR]')
    snippet = describe(rest[0], options.data_dir, config, options.name, config_name).snippet()
    if options.write:
      with open(options.write, 'w') as f:
        f.write(snippet)
    print(snippet, end='')
    return
  if rest:
    raise app.UsageError(f'{command} takes no arguments, got {rest}')
  _registered_config(config)
  data_dir = options.data_dir
  if not data_dir and 'data' in config:
    data_dir = config.data.get('public_data_dir') or None
  if command == 'list':
    print(sources_markdown(public_rlds.sources_from_config(config.get('data') or {})), end='')
    return
  if command == 'check':
    from gato_jax.model import ModelOptions  # noqa: PLC0415 - jax only when checking.

    model = ModelOptions.from_config(config) if 'model' in config else None
    report, results = check(options.mixture, data_dir, options.episodes, model)
    print(report)
    misfits = [r.source.name for r in results if not r.unreachable and r.fit != 'ok']
    if misfits:
      raise cli.CommandError(f'{len(misfits)} source(s) do not fit: {", ".join(misfits)}')
    return
  sources = dict(config.get('sources') or {})  # configs/public_rlds.py's form.
  if options.source in sources:
    source = sources[options.source]
  elif options.source in public_rlds.registered():
    source = public_rlds.get(options.source)
  else:
    known = sorted({*sources, *public_rlds.registered()})
    raise app.UsageError(f'--source must be one of {known}, got {options.source!r}')
  read = read_public_episodes(source, data_dir, max_episodes=options.max_episodes)
  rows = [{'episode': e.seed, 'steps': len(e.actions), 'return': e.episode_return} for e in read]
  print(tables.format_table(rows))


def main(argv: Sequence[str]) -> None:
  args = flags.FLAGS
  options = Options(**{f.name: args[f.name].value for f in dataclasses.fields(Options)})
  try:
    run_command(argv[1:], options, args.config, _config_name())
  except DatasetUnavailableError as e:
    raise cli.CommandError(str(e)) from None  # The message says it all; no traceback.


def define_flags() -> None:
  """Only when run as a program: importing this module (tests) claims no flags."""
  config_flags.DEFINE_config_file(
    'config',
    'configs/gato_1b2.py',
    'Run config: its model sizes the proposal (describe); its '
    'data.specs and data.public_sources are registered (check, read).',
  )
  flags.DEFINE_string('data_dir', None, 'TFDS data directory holding the dataset(s).')
  flags.DEFINE_string('source', None, 'read: a registered source (or one of config.sources).')
  flags.DEFINE_integer('max_episodes', 3, 'read: episodes to read.')
  flags.DEFINE_string('name', None, 'describe: the task and source name (default: from NAME).')
  flags.DEFINE_string('write', None, 'describe: also write the snippet to this file.')
  flags.DEFINE_string('mixture', 'gato_public', 'check: the mixture whose sources to check.')
  flags.DEFINE_integer('episodes', 2, 'check: episodes read per source.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
