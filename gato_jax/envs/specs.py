"""TaskSpecs of the environments this project generates data from and evaluates in.

One spec per task name; the data pipeline, the seqio tasks and the evaluator all look tasks
up here, so a task is tokenized the same way everywhere. Expert and random returns stay
None until the dataset generator measures them (they are recorded with each dataset).
"""

from __future__ import annotations

from gato_jax.tokenizer import ContinuousField, DiscreteField, TaskSpec, TextField

# minigrid's symbolic 7x7 view: (object, colour, state) per cell; object ids go up to 10.
_BABYAI_OBSERVATION = (
  TextField('mission', max_tokens=48),
  DiscreteField('image', (7, 7, 3), num_values=11),
  DiscreteField('direction', (), num_values=4),
)
_BABYAI_LEVELS = ('GoToRedBall', 'GoToLocal', 'PickupLoc', 'PutNextLocal', 'BossLevel')


def _classic(name: str, state_dim: int, action: DiscreteField | ContinuousField) -> TaskSpec:
  return TaskSpec(name, observation=(ContinuousField('state', (state_dim,)),), action=action)


TASK_SPECS: dict[str, TaskSpec] = {
  spec.name: spec
  for spec in (
    _classic('cartpole', 4, DiscreteField('action', (), num_values=2)),
    _classic('acrobot', 6, DiscreteField('action', (), num_values=3)),
    _classic('mountaincar', 2, DiscreteField('action', (), num_values=3)),
    # Pendulum's torque lies in [-2, 2]: mapped linearly onto the bins, no mu-law.
    _classic('pendulum', 3, ContinuousField('action', (1,), mu_law=False, low=-2.0, high=2.0)),
    *(
      TaskSpec(
        f'babyai_{level.lower()}',
        observation=_BABYAI_OBSERVATION,
        action=DiscreteField('action', (), num_values=7),
      )
      for level in _BABYAI_LEVELS
    ),
  )
}

# Gymnasium ids of the tasks that roll out in a real environment here; 'module:' imports the
# package that registers the id.
ENV_IDS: dict[str, str] = {
  'cartpole': 'CartPole-v1',
  'acrobot': 'Acrobot-v1',
  'mountaincar': 'MountainCar-v0',
  'pendulum': 'Pendulum-v1',
  **{f'babyai_{level.lower()}': f'minigrid:BabyAI-{level}-v0' for level in _BABYAI_LEVELS},
}


def get_spec(name: str) -> TaskSpec:
  """The spec of a task, with an error that lists the known ones."""
  try:
    return TASK_SPECS[name]
  except KeyError:
    raise ValueError(f'unknown task {name!r}; known tasks: {sorted(TASK_SPECS)}') from None
