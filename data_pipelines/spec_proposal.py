r"""`describe`: a TaskSpec and a source mapping proposed from an RLDS dataset's features.

  python -m data_pipelines.public_rlds describe NAME [--data_dir=DIR] [--config=CONFIG]
      [--name=TASK] [--write=PATH]

It reads the features only (`tfds.builder(NAME, data_dir=DIR).info`: TFDS knows a dataset
from its code, as RL Unplugged's, or from its files alone, as a user's own RLDS dataset),
so that a source needs no Python: the proposal is a config snippet to paste into the run's
config (`config.data.specs[...]`, `config.data.public_sources[...]`). Every choice has a
comment; lines marked CONFIRM are guesses the features cannot settle. The rules, for the
step fields (paths below `steps`):

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
the source through `public_rlds.Source.from_config` with that spec, so that what it prints
registers as pasted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from gato_jax import cli, specs
from gato_jax import tokenizer as tok
from gato_jax.data import public_rlds
from gato_jax.data.public_rlds import DatasetUnavailableError
from gato_jax.specs import config as spec_config

MAX_PATCHES = 80  # A modest image: Gato's RT-1 frames at 128x160.
TEXT_TOKENS = 32  # A short instruction in a byte or SentencePiece vocabulary.
MAX_STATE_VALUES = 64  # Larger float tensors are not proprioception: listed, not mapped.
IMAGE_NAMES = ('image', 'rgb', 'pixels', 'observation')
RESERVED_STEP_KEYS = ('action', 'reward', 'discount', 'is_first', 'is_last', 'is_terminal')


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
