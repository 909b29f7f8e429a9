"""The TaskSpec of every task, looked up by name: `get_spec('cartpole')`.

  task_spec.py  TaskSpec (one embodiment: observation fields, action) and TaskTokenizer
  catalog.py    the concrete specs: TASK_SPECS (tasks with an environment here, their
                DOMAINS and ENV_IDS) and DATASET_SPECS (embodiments known only from a
                public dataset)

Pure data: nothing here imports an environment or TensorFlow, so the data pipeline, the
model and the evaluator look specs up without loading a simulator.
"""

from __future__ import annotations

from gato_jax.specs.catalog import DATASET_SPECS, DOMAINS, ENV_IDS, TASK_SPECS
from gato_jax.specs.task_spec import TaskSpec, TaskTokenizer

__all__ = [
  'DATASET_SPECS',
  'DOMAINS',
  'ENV_IDS',
  'TASK_SPECS',
  'TaskSpec',
  'TaskTokenizer',
  'get_spec',
  'register',
]


def get_spec(name: str) -> TaskSpec:
  """The spec of a task, with or without an env, with an error that lists the known ones."""
  spec = TASK_SPECS.get(name) or DATASET_SPECS.get(name)
  if spec is None:
    known = sorted({**TASK_SPECS, **DATASET_SPECS})
    raise ValueError(f'unknown task {name!r}; known tasks: {known}')
  return spec


def register(spec: TaskSpec) -> TaskSpec:
  """Adds a dataset-only spec (an embodiment with no environment here) under its name.

  For a public dataset's robot described outside this package (docs/adding_a_dataset.md).
  A name already taken raises: one name, one tokenization.
  """
  if spec.name in TASK_SPECS or spec.name in DATASET_SPECS:
    raise ValueError(f'task {spec.name!r} already has a spec; pick another name')
  DATASET_SPECS[spec.name] = spec
  return spec
