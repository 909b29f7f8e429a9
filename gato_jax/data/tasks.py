"""The seqio task and mixture registry: every dataset Gato trains on, and how they mix.

Importing this module registers, T5X style:
  gato_<task>            one per environment task (gato_jax/specs/catalog.py), from the
                         episodes data_pipelines/generate.py and prepare.py write
  gato_text_local        lines of local text files (config data.text_files), offline
  gato_c4                TFDS `c4/en` (needs the network or a prepared data_dir)
  gato_shapes_captions   the offline drawn-shapes captions (gato_jax/data/captions.py)
  gato_coco_captions     TFDS `coco_captions` (needs the network or a prepared data_dir)
and the mixtures `gato_demo` (what the CPU demo trains on) and `gato_table1` /
`gato_table1_offline` (paper table 1's sample weights over the domains available here).

Adding a dataset takes its TaskSpec, one `seqio.TaskRegistry.add` call and a line in a
mixture: docs/adding_a_dataset.md walks through an example.
"""

from __future__ import annotations

import functools

import seqio

from gato_jax import specs
from gato_jax.data import preprocessors, sources
from gato_jax.model import inputs

# Token ids arrive already in the Gato layout; the text vocabulary that made them is in
# config.tokenizer, applied by the preprocessors. seqio only needs a placeholder here.
_IDS = seqio.PassThroughVocabulary(size=0)
OUTPUT_FEATURES = {
  name: seqio.Feature(_IDS, add_eos=False, dtype=dtype, rank=rank)
  for name, (dtype, rank) in inputs.feature_specs().items()
}
# Windows hold compact patches; 256 of them at L = 1024 stay under about 100 MB.
SHUFFLE_BUFFER = 256


def episode_preprocessors(task: str, filter_returns: bool = True) -> list:
  """Filter by return, tokenize with the TaskSpec, window with prompts (preprocessors.py).

  `filter_returns=False` keeps every episode: for datasets that are not expert data on
  purpose, like Gato's "DM Control random".
  """
  return [
    *([preprocessors.filter_by_return] if filter_returns else []),
    functools.partial(preprocessors.tokenize_episodes, task=task),
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
seqio.MixtureRegistry.add(
  'gato_table1_offline',
  [*table1_rates(), ('gato_text_local', TEXT_WEIGHT), ('gato_shapes_captions', CAPTION_WEIGHT)],
)
# The CPU demo: one task from each of the five domains (Atari for images), two more classic
# control tasks whose experts a tiny model can imitate in minutes, and captions. The rates
# spend the 1000 steps of a 1M-parameter model where it can learn: BabyAI yields one action
# label per 256-token window (its timestep is 196 tokens), Acrobot and MountainCar need many
# samples at the rare steps where their experts switch direction. Meta-World, Atari and
# captions stay in the mix at low rates, as Gato's table 1 weights its domains unevenly.
DEMO_RATES = {
  'cartpole': 1.0,
  'acrobot': 2.0,
  'mountaincar': 2.0,
  'babyai_gotoredball': 3.0,
  'metaworld_reach': 0.25,
  'atari_breakout': 0.25,
}
seqio.MixtureRegistry.add(
  'gato_demo',
  [*((task_name(t), rate) for t, rate in DEMO_RATES.items()), ('gato_shapes_captions', 0.25)],
)


def episode_sources(mixture_or_task: str) -> list[sources.EpisodeSource]:
  """The episode datasets a mixture or task reads (their task and policy)."""
  provider = seqio.get_mixture_or_task(mixture_or_task)
  members = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  return [t.source for t in members if isinstance(t.source, sources.EpisodeSource)]


def caption_tasks(mixture_or_task: str) -> list[str]:
  provider = seqio.get_mixture_or_task(mixture_or_task)
  members = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  return [t.name for t in members if t.name == 'gato_shapes_captions']


def episode_tasks(mixture_or_task: str) -> list[str]:
  """The environment tasks (spec names) a mixture or task trains on, e.g. to evaluate."""
  return sorted({s.task for s in episode_sources(mixture_or_task)})
