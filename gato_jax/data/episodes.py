"""The episode format: TFDS datasets in the RLDS layout, their names, and reading them back.

One TFDS dataset per task, `gato_episodes/<task>`, one example per episode:

  steps: Dataset of {observation: {<TaskSpec fields>}, action, reward, discount,
                     is_first, is_last, is_terminal}
  episode_metadata: {task, env, policy, seed, episode_return}

This is the layout of RL Unplugged and Open X-Embodiment, so public datasets read the same
way. As in RLDS, an episode of T actions has T + 1 steps: the last holds the final
observation (is_last, and is_terminal when the env terminated rather than truncated) with a
zero action and reward that are not data; `acted_steps` drops it.

The dataset's `metadata.json` records what the evaluator normalizes scores with: the expert
return (Gato's windowed maximum over the generated episodes) and the random-policy return,
measured with episodes that are not stored. data_pipelines/rollouts.py writes datasets;
this module only reads them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from gato_jax import scores, specs
from gato_jax import tokenizer as tok

DATASET = 'gato_episodes'
VERSION = '1.0.0'


def feature(f: tok.Field) -> Any:
  """The TFDS feature that stores one TaskSpec field."""
  if isinstance(f, tok.TextField):
    return tfds.features.Text()
  if isinstance(f, tok.ImageField):
    return tfds.features.Image(shape=f.shape, encoding_format='png')
  if isinstance(f, tok.DiscreteField):
    return tfds.features.Tensor(shape=f.shape, dtype=np.int32)
  return tfds.features.Tensor(shape=f.shape, dtype=np.float32)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
  """{'a/b': x} -> {'a': {'b': x}}: TaskSpec paths back to nested features."""
  nested: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split('/')
    node = nested
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return nested


def dataset_name(task: str, policy: str = 'expert') -> str:
  """`task` for expert data; `<task>_<policy>` otherwise (Gato's "DM Control random")."""
  return task if policy == 'expert' else f'{task}_{policy}'


def acted_steps(
  observations: Mapping[str, np.ndarray], actions: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """The T timesteps the agent acted in, out of an RLDS episode's T + 1 steps.

  The final step (last observation, padding action) is not a timestep to train on, prompt
  with or replay. An episode without one acted step raises.
  """
  if len(actions) < 2:
    raise ValueError('the episode has no steps')
  return {k: v[:-1] for k, v in observations.items()}, actions[:-1]


def min_kept_return(expert: float | None, random: float | None, fraction: float) -> float:
  """The lowest episode return kept as a demonstration, for training and for prompts alike.

  `fraction` of the way from the random to the expert return (config data.min_return_fraction).
  A missing random return counts as 0, which is Gato's rule (return >= fraction of the
  expert's); measuring from the random return keeps the rule meaningful for negative
  returns (Pendulum). With no expert return, or one no better than random, every episode
  is kept (-inf).
  """

  def known(x: float | None) -> bool:
    return x is not None and not math.isnan(x)

  if not known(expert):
    return -math.inf
  random = random if known(random) else 0.0
  if expert <= random:
    return -math.inf
  return random + fraction * (expert - random)


@dataclasses.dataclass
class Episode:
  """One rollout as numpy arrays, T + 1 steps (the RLDS layout above)."""

  task: str
  env: str
  policy: str
  seed: int
  observations: dict[str, np.ndarray]
  actions: np.ndarray
  rewards: np.ndarray
  is_terminal: bool

  @property
  def episode_return(self) -> float:
    return float(self.rewards.sum())

  def acted_steps(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Observations and actions of the T acted timesteps (module-level `acted_steps`)."""
    return acted_steps(self.observations, self.actions)

  def to_example(self) -> dict[str, Any]:
    n = len(self.rewards)
    steps = []
    for t in range(n):
      steps.append(
        {
          'observation': nest({k: v[t] for k, v in self.observations.items()}),
          'action': self.actions[t],
          'reward': self.rewards[t],
          'discount': np.float32(0.0 if (t == n - 1 and self.is_terminal) else 1.0),
          'is_first': t == 0,
          'is_last': t == n - 1,
          'is_terminal': t == n - 1 and self.is_terminal,
        }
      )
    return {
      'steps': steps,
      'episode_metadata': {
        'task': self.task,
        'env': self.env,
        'policy': self.policy,
        'seed': self.seed,
        'episode_return': self.episode_return,
      },
    }


def stack_steps(steps: list[dict[str, Any]]) -> dict[str, Any]:
  """A list of (nested) step dicts to a dict of arrays with a leading time axis."""
  if not steps:
    return {}
  stacked = {}
  for k, v in steps[0].items():
    values = [s[k] for s in steps]
    stacked[k] = stack_steps(values) if isinstance(v, dict) else np.stack(values)
  return stacked


def dataset_dir(dataset: str, data_dir: str) -> str:
  """Where `dataset` (a task, or `dataset_name(task, policy)`) lives under `data_dir`."""
  return f'{data_dir}/{DATASET}/{dataset}/{VERSION}'


def is_prepared(path: str) -> bool:
  """Whether a TFDS dataset directory is complete: TFDS writes dataset_info.json last."""
  return tf.io.gfile.exists(f'{path}/dataset_info.json')


def load(task: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """A generated dataset, read from its directory alone (its features are stored there)."""
  path = dataset_dir(task, data_dir)
  if not is_prepared(path):
    raise FileNotFoundError(
      f'no dataset for task {task!r} at {path}; generate it with '
      f'python -m data_pipelines.generate --task={task} --data_dir={data_dir}'
    )
  return tfds.builder_from_directory(path)


def read_metadata(task: str, data_dir: str) -> dict[str, Any]:
  """The dataset's metadata.json, written by generation; see the module docstring.

  Its `expert_return` and `random_return` are the evaluator's 100% and 0%. The expert
  return is computed again from the recorded `episode_returns` by the rule in force
  (scores.expert_return), so a dataset written under an older rule is scored by today's;
  where the two differ the recorded value is kept as `recorded_expert_return` and a line
  says so.
  """
  load(task, data_dir)  # A missing or unfinished dataset raises with the generate command.
  path = f'{dataset_dir(task, data_dir)}/metadata.json'
  with tf.io.gfile.GFile(path) as f:
    meta = json.load(f)
  returns = meta.get('episode_returns')
  if returns:
    current = scores.expert_return(returns)
    if not math.isclose(current, meta.get('expert_return', math.nan), rel_tol=1e-9):
      if path not in _RULE_CHANGE_SAID:
        _RULE_CHANGE_SAID.add(path)
        print(
          f'{path}: expert_return {meta.get("expert_return")} was recorded under an older '
          f'rule; scoring with {current:.6g}, the windowed mean of its {len(returns)} '
          'episode returns (gato_jax/scores.py expert_return)',
          flush=True,
        )
      meta['recorded_expert_return'] = meta.get('expert_return')
      meta['expert_return'] = current
  return meta


_RULE_CHANGE_SAID: set[str] = set()  # metadata.json files whose rule change was printed.


def read_episodes(task: str, data_dir: str, split: str = 'train') -> Iterator[Episode]:
  """Episodes as numpy, each checked against the TaskSpec again on the way in.

  A bad episode raises a ValueError naming the dataset, the episode's env and seed, and the
  step, the same way generation reports it.
  """
  spec = specs.get_spec(task)
  for example in tfds.as_numpy(load(task, data_dir).as_dataset(split=split)):
    meta = example['episode_metadata']
    env, seed = meta['env'].decode(), int(meta['seed'])
    steps = stack_steps(list(example['steps']))
    try:
      if not steps:
        raise ValueError('the episode has no steps')
      observations = tok.flatten_observation(steps['observation'])
      checked, actions = spec.check_steps(observations, steps['action'])
    except ValueError as e:
      raise ValueError(f'dataset {DATASET}/{task}, env {env}, seed {seed}: {e}') from e
    yield Episode(
      task=task,
      env=env,
      policy=meta['policy'].decode(),
      seed=seed,
      observations=checked,
      actions=actions,
      rewards=steps['reward'],
      is_terminal=bool(steps['is_terminal'][-1]),
    )
