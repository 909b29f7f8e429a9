"""The seqio task and mixture registry: every dataset Gato trains on, and how they mix.

Importing this module registers, T5X style:
  gato_<task>            one per environment task (gato_jax/specs/catalog.py), from the
                         episodes data_pipelines/generate.py and prepare.py write
  gato_text_local        lines of local text files (config data.text_files), offline
  gato_c4                TFDS `c4/en` (needs the network or a prepared data_dir)
  gato_shapes_captions   the offline drawn-shapes captions (gato_jax/data/captions.py)
  gato_coco_captions     TFDS `coco_captions` (needs the network or a prepared data_dir)
  gato_<source>          one per public RLDS dataset of gato_jax/data/public_catalog.py
                         (RL Unplugged, Open X-Embodiment), read in place
and the mixtures `gato_demo` (what the CPU demo trains on), `gato_table1` /
`gato_table1_offline` (paper table 1's sample weights over the domains available here) and
`gato_public` (the same weights over the public datasets).

A run's config adds its own (`register_from_config`): modules to import, specs, public
sources and mixtures, all as config. docs/adding_a_dataset.md walks through both ways.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import seqio

from gato_jax import specs
from gato_jax.data import preprocessors, public_catalog, public_rlds, sources
from gato_jax.model import inputs
from gato_jax.specs import config as spec_config

# Token ids arrive already in the Gato layout; the text vocabulary that made them is in
# config.tokenizer, applied by the preprocessors. seqio only needs a placeholder here.
_IDS = seqio.PassThroughVocabulary(size=0)
OUTPUT_FEATURES = {
  name: seqio.Feature(_IDS, add_eos=False, dtype=dtype, rank=rank)
  for name, (dtype, rank) in inputs.feature_specs().items()
}
# Windows hold compact patches; 256 of them at L = 1024 stay under about 100 MB.
SHUFFLE_BUFFER = 256


def episode_preprocessors(task: str, filter_returns: bool = True, dataset: str = '') -> list:
  """Filter by return, tokenize with the TaskSpec, window with prompts (preprocessors.py).

  `task` names the TaskSpec; `dataset` the data in errors when it is not the task's own.
  `filter_returns=False` keeps every episode: for datasets that are not expert data on
  purpose, like Gato's "DM Control random".
  """
  return [
    *([preprocessors.filter_by_return] if filter_returns else []),
    functools.partial(preprocessors.tokenize_episodes, task=task, name=dataset),
    functools.partial(preprocessors.window_episodes, task=task),
  ]


def task_name(task: str) -> str:
  return f'gato_{task}'


for _task in specs.TASK_SPECS:
  seqio.TaskRegistry.add(
    task_name(_task),
    source=sources.EpisodeSource(_task),
    preprocessors=episode_preprocessors(_task),
    output_features=OUTPUT_FEATURES,
    shuffle_buffer_size=SHUFFLE_BUFFER,
  )


def register_public_source(source: public_rlds.Source) -> str:
  """A public RLDS dataset as the seqio task `gato_<source name>`; returns the task's name.

  Its episodes carry no expert or random return, so the return filter keeps them all: as
  published, they are the data (RL Unplugged logs every episode of its agents' runs).
  """
  name = task_name(source.name)
  if source.name in specs.TASK_SPECS:
    raise ValueError(f'public source {source.name!r} takes the name of an environment task')
  public_rlds.register(source)
  if name not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
      name,
      source=sources.PublicEpisodeSource(source),
      preprocessors=episode_preprocessors(source.spec, dataset=source.dataset),
      output_features=OUTPUT_FEATURES,
      shuffle_buffer_size=SHUFFLE_BUFFER,
    )
  return name


for _name, _entry in public_catalog.SOURCES.items():
  register_public_source(public_rlds.Source.from_config(_name, _entry))


def register_from_config(config: Any) -> None:
  """What a run's config adds to the registries, before its mixture is looked up.

  `data.modules` (comma-separated Python modules, imported: a user's own seqio tasks,
  mixtures and `specs.register` calls, as T5X imports MIXTURE_OR_TASK_MODULE),
  `data.specs` (name -> spec as config, gato_jax/specs/config.py) and
  `data.public_sources` (name -> source as config, gato_jax/data/public_rlds.py). Running
  it again with the same config changes nothing; a name taken by something else is an
  error naming the key.
  """
  data = config.data
  for module in filter(None, (m.strip() for m in (data.get('modules') or '').split(','))):
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ValueError(f'config key data.modules: cannot import {module!r}: {e}') from e
  for name, entry in dict(data.get('specs') or {}).items():
    spec = spec_config.from_dict(name, entry, f'config key data.specs.{name}')
    try:
      if specs.get_spec(name) == spec:
        continue
    except ValueError:
      specs.register(spec)
      continue
    raise ValueError(f'config key data.specs.{name}: task {name!r} already has another spec')
  for source in public_rlds.sources_from_config(data):
    try:
      register_public_source(source)
    except ValueError as e:
      raise ValueError(f'config key data.public_sources.{source.name}: {e}') from None
  for name, rates in dict(data.get('mixtures') or {}).items():
    where = f'config key data.mixtures.{name}'
    rates = dict(rates)
    for task, rate in rates.items():
      if task not in seqio.TaskRegistry.names():
        raise ValueError(f'{where}: unknown task {task!r}')
      if not isinstance(rate, int | float) or rate <= 0:
        raise ValueError(f'{where}.{task}: the rate must be a positive number, got {rate!r}')
    if name in seqio.MixtureRegistry.names():
      known = {
        t.name: seqio.get_mixture_or_task(name).get_rate(t)
        for t in seqio.get_mixture_or_task(name).tasks
      }
      if known != rates:
        raise ValueError(f'{where}: mixture {name!r} is already registered with {known}')
      continue
    seqio.MixtureRegistry.add(name, list(rates.items()))


seqio.TaskRegistry.add(
  'gato_text_local',
  source=sources.TextFileSource(),
  preprocessors=[preprocessors.text_windows],
  output_features=OUTPUT_FEATURES,
  shuffle_buffer_size=SHUFFLE_BUFFER,
)
seqio.TaskRegistry.add(
  'gato_c4',
  source=seqio.TfdsDataSource(tfds_name='c4/en:3.1.0'),
  preprocessors=[preprocessors.text_windows],
  output_features=OUTPUT_FEATURES,
  shuffle_buffer_size=SHUFFLE_BUFFER,
)
for _name, _dataset in (
  ('gato_shapes_captions', 'gato_shapes_captions'),
  ('gato_coco_captions', 'coco_captions'),
):
  seqio.TaskRegistry.add(
    _name,
    source=seqio.FunctionDataSource(sources.caption_dataset_fn(_dataset), splits=('train',)),
    preprocessors=[preprocessors.caption_sequences],
    output_features=OUTPUT_FEATURES,
    shuffle_buffer_size=SHUFFLE_BUFFER,
  )

# Paper table 1 sample weights (percent) for the domains we have, split evenly among each
# domain's tasks. Classic control is not in Gato's data; it gets a small weight of its own.
DOMAIN_WEIGHTS = {
  'atari': 9.5,
  'babyai': 9.06,
  'dmc': 4.62 + 7.07,  # DM Control states and pixels.
  'metaworld': 8.96,
  'classic': 1.0,
}
TEXT_WEIGHT = 6.7  # MassiveText.
CAPTION_WEIGHT = 0.67  # COCO's share.


def table1_rates() -> list[tuple[str, float]]:
  """(task, rate) for every environment task: its domain's weight over the domain's size."""
  by_domain: dict[str, list[str]] = {}
  for task in specs.TASK_SPECS:
    by_domain.setdefault(specs.DOMAINS[task], []).append(task)
  return [
    (task_name(t), DOMAIN_WEIGHTS[d] / len(tasks)) for d, tasks in by_domain.items() for t in tasks
  ]


seqio.MixtureRegistry.add(
  'gato_table1', [*table1_rates(), ('gato_c4', TEXT_WEIGHT), ('gato_coco_captions', CAPTION_WEIGHT)]
)
# The same table over data published outside this project: RL Unplugged's Atari, DM Lab
# and DM Control (states) logs and Open X-Embodiment's robots, with C4 for MassiveText and
# COCO captions. Open X-Embodiment stands in for Gato's real and simulated robot data (RGB
# stacking, real and sim): their 2.66 together.
PUBLIC_DOMAIN_WEIGHTS = {'atari': 9.5, 'dmlab': 9.35, 'dmc': 4.62, 'oxe': 1.33 + 1.33}


def public_rates() -> list[tuple[str, float]]:
  """(task, rate) for every catalog source: its domain's weight over the domain's size."""
  by_domain: dict[str, list[str]] = {}
  for name, entry in public_catalog.SOURCES.items():
    by_domain.setdefault(entry['domain'], []).append(name)
  return [
    (task_name(n), PUBLIC_DOMAIN_WEIGHTS[d] / len(names))
    for d, names in by_domain.items()
    for n in names
  ]


seqio.MixtureRegistry.add(
  'gato_public', [*public_rates(), ('gato_c4', TEXT_WEIGHT), ('gato_coco_captions', CAPTION_WEIGHT)]
)
seqio.MixtureRegistry.add(
  'gato_table1_offline',
  [*table1_rates(), ('gato_text_local', TEXT_WEIGHT), ('gato_shapes_captions', CAPTION_WEIGHT)],
)
# The CPU demo: one task from each of the five domains (Atari for images), two more classic
# control tasks whose experts a tiny model can imitate in minutes, and captions. The rates
# spend the 1000 steps of a 1M-parameter model where it can learn: BabyAI yields one action
# label per 256-token window (its timestep is 196 tokens), Acrobot and MountainCar need many
# samples at the rare steps where their experts switch direction, and Meta-World reach
# learns from its 200 episodes' goals when it gets a share like theirs (alone, 1000 steps
# reach 64% of expert; at 0.25 it had ~200 windows and learned only the mean action, below
# random: docs/performance.md, "Learning"). Atari and captions stay in at low rates: the
# Breakout pixels need far more than this budget (alone for 5,000 steps, 200 times the
# windows this rate gives it, it reads frames but rarely serves; same section).
DEMO_RATES = {
  'cartpole': 1.0,
  'acrobot': 1.5,
  'mountaincar': 1.5,
  'babyai_gotoredball': 3.0,
  'metaworld_reach': 2.0,
  'atari_breakout': 0.25,
}
seqio.MixtureRegistry.add(
  'gato_demo',
  [*((task_name(t), rate) for t, rate in DEMO_RATES.items()), ('gato_shapes_captions', 0.25)],
)


def members(mixture_or_task: str) -> list[seqio.Task]:
  """The tasks of a mixture (its sub-mixtures' too), or the task itself."""
  provider = seqio.get_mixture_or_task(mixture_or_task)
  return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def episode_sources(mixture_or_task: str) -> list[sources.EpisodeSource]:
  """The episode datasets a mixture or task reads (their task and policy)."""
  return [t.source for t in members(mixture_or_task) if isinstance(t.source, sources.EpisodeSource)]


def caption_tasks(mixture_or_task: str) -> list[str]:
  return [t.name for t in members(mixture_or_task) if t.name == 'gato_shapes_captions']


def public_sources(mixture_or_task: str) -> list[public_rlds.Source]:
  """The public RLDS sources a mixture or task reads."""
  return [
    t.source.source
    for t in members(mixture_or_task)
    if isinstance(t.source, sources.PublicEpisodeSource)
  ]


def episode_specs(mixture_or_task: str) -> list[str]:
  """Every TaskSpec whose episodes a mixture tokenizes: environment tasks and public data."""
  names = {s.task for s in episode_sources(mixture_or_task)}
  return sorted(names | {s.spec for s in public_sources(mixture_or_task)})


def episode_tasks(mixture_or_task: str) -> list[str]:
  """The environment tasks (spec names) a mixture or task trains on, e.g. to evaluate."""
  return sorted({s.task for s in episode_sources(mixture_or_task)})
