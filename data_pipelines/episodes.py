"""Episodes from real environments as TFDS datasets in the RLDS layout, and reading them back.

One TFDS dataset per task, `gato_episodes/<task>`, one example per episode:

  steps: Dataset of {observation: {<TaskSpec fields>}, action, reward, discount,
                     is_first, is_last, is_terminal}
  episode_metadata: {task, env, policy, seed, episode_return}

This is the layout of RL Unplugged and Open X-Embodiment, so public datasets read the same
way. As in RLDS, an episode of T actions has T + 1 steps: the last holds the final
observation (is_last, and is_terminal when the env terminated rather than truncated) with a
zero action and reward that are not data; the pipeline drops that action.

The dataset's `metadata.json` records what the evaluator normalizes scores with: the expert
return (Gato's windowed maximum over the generated episodes) and the random-policy return,
measured here with episodes that are not stored.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tqdm
from tensorflow_datasets.rlds import rlds_base

from gato_jax import envs, scores, specs
from gato_jax import tokenizer as tok

DATASET = 'gato_episodes'


def _feature(f: tok.Field | tok.DiscreteField | tok.ContinuousField) -> Any:
  if isinstance(f, tok.TextField):
    return tfds.features.Text()
  if isinstance(f, tok.ImageField):
    return tfds.features.Image(shape=f.shape, encoding_format='png')
  if isinstance(f, tok.DiscreteField):
    return tfds.features.Tensor(shape=f.shape, dtype=np.int32)
  return tfds.features.Tensor(shape=f.shape, dtype=np.float32)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
  """{'a/b': x} -> {'a': {'b': x}}: TaskSpec paths back to nested features."""
  nested: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split('/')
    node = nested
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return nested


@dataclasses.dataclass
class EpisodesConfig(rlds_base.DatasetConfig):
  """One task's dataset: how many episodes, from which seed, with which policy."""

  task: str = ''
  episodes: int = 10
  seed: int = 0
  policy: str = 'expert'
  random_episodes: int = 5  # Not stored: they measure the random return for normalizing.
  max_steps: int | None = None  # Cap on steps per episode; None keeps the env's own limit.


def dataset_name(task: str, policy: str = 'expert') -> str:
  """`task` for expert data; `<task>_<policy>` otherwise (Gato's "DM Control random")."""
  return task if policy == 'expert' else f'{task}_{policy}'


def episodes_config(task: str, **kwargs: Any) -> EpisodesConfig:
  spec = specs.get_spec(task)
  return EpisodesConfig(
    name=dataset_name(task, kwargs.get('policy', 'expert')),
    task=task,
    description=f'{kwargs.get("policy", "expert")} episodes of {task}',
    observation_info=_nest({f.name: _feature(f) for f in spec.observation}),
    action_info=_feature(spec.action),
    reward_info=tfds.features.Scalar(np.float32),
    discount_info=tfds.features.Scalar(np.float32),
    episode_metadata_info={
      'episode_metadata': tfds.features.FeaturesDict(
        {
          'task': tfds.features.Text(),
          'env': tfds.features.Text(),
          'policy': tfds.features.Text(),
          'seed': tfds.features.Scalar(np.int64),
          'episode_return': tfds.features.Scalar(np.float32),
        }
      )
    },
    **kwargs,
  )


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

  def to_example(self) -> dict[str, Any]:
    n = len(self.rewards)
    steps = []
    for t in range(n):
      steps.append(
        {
          'observation': _nest({k: v[t] for k, v in self.observations.items()}),
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


def rollout(task: str, policy: str, seed: int, max_steps: int | None = None) -> Episode:
  """Runs one episode in the real env and checks every value against the TaskSpec.

  Bad data (NaN, a wrong shape, a missing field, no steps) raises a ValueError that names
  the env, the seed and the step, so nothing bad is ever written.
  """
  spec = specs.get_spec(task)
  env = envs.make_env(task, seed=seed)
  env_id = env.spec.id if env.spec is not None else task
  try:
    observation, _ = env.reset(seed=seed)
    act = envs.make_policy(task, env, policy, seed)
    observations, actions, rewards = [observation], [], []
    terminated = truncated = False
    while not (terminated or truncated) and (max_steps is None or len(actions) < max_steps):
      action = act(observation)
      observation, reward, terminated, truncated, _ = env.step(action)
      observations.append(observation)
      actions.append(np.asarray(action))
      rewards.append(reward)
  except Exception as e:
    # A policy or env that trips over a malformed observation: name what is malformed.
    cause: Exception = e
    try:
      spec.check_observations({k: np.asarray(v)[None] for k, v in observation.items()}, 1)
    except ValueError as bad:
      cause = bad
    where = f'env {env_id} (task {task!r}), seed {seed}, step {len(actions)}'
    raise ValueError(f'{where}: {cause}') from e
  finally:
    env.close()
  if not actions:
    raise ValueError(f'env {env_id} (task {task!r}), seed {seed}: the episode has no steps')
  # The final observation's action and reward are RLDS padding, not data.
  actions.append(np.zeros_like(actions[-1]))
  rewards.append(0.0)
  stacked = {k: np.stack([np.asarray(o[k]) for o in observations]) for k in observations[0]}
  rewards_array = np.asarray(rewards, dtype=np.float64)
  try:
    checked, actions_array = spec.check_steps(stacked, np.stack(actions))
    if not np.isfinite(rewards_array).all():
      bad = int(np.argwhere(~np.isfinite(rewards_array))[0, 0])
      raise ValueError(f'non-finite reward {rewards_array[bad]} at step {bad}')
  except ValueError as e:
    raise ValueError(f'env {env_id}, seed {seed}: {e}') from e
  for f in spec.observation:  # Stored as the feature dtypes: int32 and float32.
    if isinstance(f, tok.DiscreteField):
      checked[f.name] = checked[f.name].astype(np.int32)
  if isinstance(spec.action, tok.DiscreteField):
    actions_array = actions_array.astype(np.int32)
  return Episode(
    task=task,
    env=env_id,
    policy=policy,
    seed=seed,
    observations=checked,
    actions=actions_array,
    rewards=rewards_array.astype(np.float32),
    is_terminal=bool(terminated),
  )


class GatoEpisodes(tfds.core.GeneratorBasedBuilder):
  """Expert (or random) episodes of one task; the config is made by `episodes_config`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'RLDS layout, returns in metadata.json.'}
  BUILDER_CONFIGS: list[EpisodesConfig] = []

  def _info(self) -> tfds.core.DatasetInfo:
    return rlds_base.build_info(self.builder_config, self, ds_metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager  # Everything comes from environments on this machine.
    return {'train': self._generate_examples()}

  def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
    config: EpisodesConfig = self.builder_config
    returns = []
    progress = tqdm.tqdm(range(config.episodes), desc=f'{config.task} ({config.policy})', unit='ep')
    for i in progress:
      episode = rollout(config.task, config.policy, config.seed + i, config.max_steps)
      returns.append(episode.episode_return)
      progress.set_postfix(mean_return=f'{np.mean(returns):.3g}')
      yield f'{config.seed + i}', episode.to_example()
    random_returns = [
      rollout(config.task, 'random', config.seed + 1_000_000 + i, config.max_steps).episode_return
      for i in tqdm.trange(config.random_episodes, desc=f'{config.task} (random)', unit='ep')
    ]
    self.info.metadata.update(
      {
        'task': config.task,
        'policy': config.policy,
        'episodes': config.episodes,
        'seed': config.seed,
        'episode_returns': returns,
        'expert_return': scores.expert_return(returns),
        'random_returns': random_returns,
        'random_return': float(np.mean(random_returns)) if random_returns else None,
      }
    )


def builder(task: str, data_dir: str, **config: Any) -> GatoEpisodes:
  """The builder of `task`'s dataset under `data_dir` (generation settings in `config`)."""
  return GatoEpisodes(config=episodes_config(task, **config), data_dir=data_dir)


def generate(task: str, data_dir: str, **config: Any) -> GatoEpisodes:
  """Rolls out and writes the dataset; TFDS writes to a temporary directory and renames it
  only when complete, so an interrupted run never leaves a dataset that looks finished."""
  b = builder(task, data_dir, **config)
  b.download_and_prepare()
  return b


def _stack(steps: list[dict[str, Any]]) -> dict[str, Any]:
  """A list of (nested) step dicts to a dict of arrays with a leading time axis."""
  if not steps:
    return {}
  return {
    k: _stack([s[k] for s in steps]) if isinstance(v, dict) else np.stack([s[k] for s in steps])
    for k, v in steps[0].items()
  }


def dataset_dir(dataset: str, data_dir: str) -> str:
  """Where `dataset` (a task, or `dataset_name(task, policy)`) lives under `data_dir`."""
  return f'{data_dir}/{DATASET}/{dataset}/{GatoEpisodes.VERSION}'


def load(task: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """A generated dataset, read from its directory alone (its features are stored there)."""
  path = dataset_dir(task, data_dir)
  # TFDS writes dataset_info.json last, after renaming the finished directory into place.
  if not tf.io.gfile.exists(f'{path}/dataset_info.json'):
    raise FileNotFoundError(
      f'no dataset for task {task!r} at {path}; generate it with '
      f'python -m data_pipelines.generate --task={task} --data_dir={data_dir}'
    )
  return tfds.builder_from_directory(path)


def read_metadata(task: str, data_dir: str) -> dict[str, Any]:
  """The dataset's metadata.json, written by generation; see the module docstring.

  Its `expert_return` and `random_return` are the evaluator's 100% and 0%.
  """
  load(task, data_dir)  # A missing or unfinished dataset raises with the generate command.
  with tf.io.gfile.GFile(f'{dataset_dir(task, data_dir)}/metadata.json') as f:
    return json.load(f)


def read_episodes(task: str, data_dir: str, split: str = 'train') -> Iterator[Episode]:
  """Episodes as numpy, each checked against the TaskSpec again on the way in.

  A bad episode raises a ValueError naming the dataset, the episode's env and seed, and the
  step, the same way generation reports it.
  """
  spec = specs.get_spec(task)
  for example in tfds.as_numpy(load(task, data_dir).as_dataset(split=split)):
    meta = example['episode_metadata']
    env, seed = meta['env'].decode(), int(meta['seed'])
    steps = _stack(list(example['steps']))
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
