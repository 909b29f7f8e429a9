r"""Generate episode datasets (TFDS, RLDS layout) by rolling out experts in real environments.

  python -m data_pipelines.generate --list
  python -m data_pipelines.generate --task=cartpole --episodes=20 --data_dir=data
  python -m data_pipelines.generate --task=cartpole,babyai_gotolocal --episodes=50 \
      --data_dir=gs://BUCKET/gato_data

At scale, the rollouts run as an Apache Beam pipeline (the `beam` extra; docs/datasets.md):

  python -m data_pipelines.generate --task=cartpole --episodes=1000 --data_dir=data \
      --runner=DirectRunner --num_workers=2
  python -m data_pipelines.generate --task=cartpole --episodes=100000 \
      --data_dir=gs://BUCKET/gato_data --runner=DataflowRunner --num_workers=50 \
      --beam_options='--project=PROJECT --region=REGION --temp_location=gs://BUCKET/tmp'

Each dataset lands in DATA_DIR/gato_episodes/TASK/1.0.0 with a metadata.json that records
the expert return (Gato's windowed maximum) and the random-policy return, which the
evaluator normalizes scores with. An existing complete dataset is kept, not regenerated.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from data_pipelines import rollouts
from gato_jax import cli, envs, specs, tables
from gato_jax.data import episodes

_LIST = flags.DEFINE_bool('list', False, 'Print the tasks that can be generated and exit.')
_TASK = flags.DEFINE_list('task', [], 'Task names (see --list), comma-separated.')
_EPISODES = flags.DEFINE_integer('episodes', 10, 'Episodes to store per task.')
_DATA_DIR = flags.DEFINE_string('data_dir', 'data', 'TFDS data directory (local or gs://).')
_SEED = flags.DEFINE_integer('seed', 0, 'Episode i uses seed + i, so datasets are reproducible.')
_POLICY = flags.DEFINE_enum('policy', 'expert', envs.POLICY_KINDS, 'Policy that acts.')
_RANDOM_EPISODES = flags.DEFINE_integer(
  'random_episodes', 5, 'Episodes of a random policy that measure the random return.'
)
_MAX_STEPS = flags.DEFINE_integer('max_steps', None, 'Cap on steps per episode.')
_RUNNER = flags.DEFINE_enum(
  'runner',
  None,
  rollouts.BEAM_RUNNERS,
  'Run the rollouts as an Apache Beam pipeline on this runner; unset, in this process.',
)
_NUM_WORKERS = flags.DEFINE_integer(
  'num_workers',
  1,
  'Beam workers: processes of this machine (DirectRunner), Dataflow VMs or Flink parallelism.',
)
_BEAM_OPTIONS = flags.DEFINE_string(
  'beam_options', '', "Passed to the Beam runner as they are, e.g. '--project=P --region=R'."
)
_SEEDS_PER_RANGE = flags.DEFINE_integer(
  'seeds_per_range',
  None,
  'Episodes per Beam work item (a range of seeds); by default '
  'about four items per worker, at most 100 episodes each.',
)


def list_tasks() -> str:
  rows = []
  for task in envs.task_names():
    spec = specs.get_spec(task)
    rows.append(
      {
        'dataset': episodes.dataset_name(task, _POLICY.value),
        'domain': envs.task_domain(task),
        'tokens/step': spec.tokens_per_timestep,
        'observation': ', '.join(
          f'{f.name}:{type(f).__name__[:-5].lower()}' for f in spec.observation
        ),
        'action': f'{spec.action_kind} {spec.action.shape or ""}'.strip(),
      }
    )
  return tables.format_table(rows)


def check_flags() -> None:
  """Every flag checked before any directory is created or rollout starts; errors name it."""
  for task in _TASK.value:
    specs.get_spec(task)  # An unknown task raises, listing the known ones.
  flag_names = {name: f'--{name}' for name in ('episodes', 'random_episodes', 'max_steps')}
  rollouts.check_settings(_EPISODES.value, _RANDOM_EPISODES.value, _MAX_STEPS.value, flag_names)
  rollouts.check_data_dir(_DATA_DIR.value, '--data_dir')
  if _RUNNER.value is None:
    for flag, value, unset in (
      (_NUM_WORKERS, _NUM_WORKERS.value, 1),
      (_BEAM_OPTIONS, _BEAM_OPTIONS.value, ''),
      (_SEEDS_PER_RANGE, _SEEDS_PER_RANGE.value, None),
    ):
      if value != unset:
        raise ValueError(f'--{flag.name} needs --runner (a Beam runner)')
  for flag in (_NUM_WORKERS, _SEEDS_PER_RANGE):
    if flag.value is not None and flag.value < 1:
      raise ValueError(f'--{flag.name} must be an int of at least 1, got {flag.value}')


def main(argv: Sequence[str]) -> None:
  del argv
  if _LIST.value:
    print(list_tasks())
    return
  if not _TASK.value:
    raise app.UsageError('--task is required (or --list to see the tasks)')
  check_flags()
  summary = []
  for task in _TASK.value:
    builder = rollouts.generate(
      task,
      _DATA_DIR.value,
      episodes=_EPISODES.value,
      seed=_SEED.value,
      policy=_POLICY.value,
      random_episodes=_RANDOM_EPISODES.value,
      max_steps=_MAX_STEPS.value,
      runner=_RUNNER.value,
      num_workers=_NUM_WORKERS.value,
      beam_options=_BEAM_OPTIONS.value,
      seeds_per_range=_SEEDS_PER_RANGE.value,
    )
    meta = episodes.load(episodes.dataset_name(task, _POLICY.value), _DATA_DIR.value).info.metadata
    summary.append(
      {
        'dataset': episodes.dataset_name(task, _POLICY.value),
        'episodes': meta['episodes'],
        'expert_return': meta['expert_return'],
        'random_return': meta['random_return'],
        'path': builder.data_dir,
      }
    )
  print(tables.format_table(summary))


if __name__ == '__main__':
  # Interrupted, TFDS keeps nothing that looks finished (see rollouts.generate).
  with cli.sigterm_during_startup('data_pipelines.generate', 'before the dataset is complete'):
    cli.run(main)
