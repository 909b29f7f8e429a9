r"""Generate episode datasets (TFDS, RLDS layout) by rolling out experts in real environments.

  python -m data_pipelines.generate --list
  python -m data_pipelines.generate --task=cartpole --episodes=20 --data_dir=data
  python -m data_pipelines.generate --task=cartpole,babyai_gotolocal --episodes=50 \
      --data_dir=gs://BUCKET/gato_data

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
