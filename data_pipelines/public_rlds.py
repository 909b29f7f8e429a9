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

`describe` proposes a TaskSpec and a source mapping from a dataset's features, as a
config snippet; its rules are data_pipelines/spec_proposal.py's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from ml_collections import config_flags

from data_pipelines import spec_proposal
from gato_jax import cli, specs, tables
from gato_jax.data import episodes, public_catalog, public_rlds
from gato_jax.data.public_rlds import DatasetUnavailableError

COMMANDS = ('read', 'describe', 'check', 'list')


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
    proposal = spec_proposal.describe(rest[0], options.data_dir, config, options.name, config_name)
    snippet = proposal.snippet()
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
