"""Episodes from real environments: rollouts checked against the TaskSpec, and the TFDS
builder that writes them in the RLDS layout (gato_jax/data/episodes.py, which reads them).

  generate('cartpole', 'data', episodes=20)   # DATA_DIR/gato_episodes/cartpole/1.0.0

`python -m data_pipelines.generate` and `python -m data_pipelines.prepare` call `generate`.
With a Beam runner (`generate(..., runner='DirectRunner', num_workers=2)`) the rollouts run
as the Beam transform of data_pipelines/beam_rollouts.py and TFDS writes the same records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tqdm
from tensorflow_datasets.rlds import rlds_base

from gato_jax import cli, envs, scores, specs
from gato_jax import tokenizer as tok
from gato_jax.data import episodes
from gato_jax.data.episodes import Episode

# Random-policy episodes (they measure the random return, and are not stored) use seeds
# this far above the stored ones, so the two never share an episode.
RANDOM_SEED_OFFSET = 1_000_000
# Runners `generate(runner=...)` takes (data_pipelines/beam_rollouts.py passes their options).
BEAM_RUNNERS = ('DirectRunner', 'DataflowRunner', 'FlinkRunner', 'SparkRunner')


@dataclasses.dataclass
class EpisodesConfig(rlds_base.DatasetConfig):
  """One task's dataset: how many episodes, from which seed, with which policy."""

  task: str = ''
  episodes: int = 10
  seed: int = 0
  policy: str = 'expert'
  random_episodes: int = 5  # Not stored: they measure the random return for normalizing.
  max_steps: int | None = None  # Cap on steps per episode; None keeps the env's own limit.


def episodes_config(task: str, **kwargs: Any) -> EpisodesConfig:
  spec = specs.get_spec(task)
  return EpisodesConfig(
    name=episodes.dataset_name(task, kwargs.get('policy', 'expert')),
    task=task,
    description=f'{kwargs.get("policy", "expert")} episodes of {task}',
    observation_info=episodes.nest({f.name: episodes.feature(f) for f in spec.observation}),
    action_info=episodes.feature(spec.action),
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

  VERSION = tfds.core.Version(episodes.VERSION)
  RELEASE_NOTES = {'1.0.0': 'RLDS layout, returns in metadata.json.'}
  BUILDER_CONFIGS: list[EpisodesConfig] = []

  def _info(self) -> tfds.core.DatasetInfo:
    return rlds_base.build_info(self.builder_config, self, ds_metadata=tfds.core.MetadataDict())

  # Set by `generate` for a Beam run: seeds per work item. None rolls out in this process.
  seeds_per_range: int | None = None

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager  # Everything comes from environments on this machine.
    if self.seeds_per_range is None:
      return {'train': self._generate_examples()}
    from data_pipelines import beam_rollouts  # Only Beam runs need apache_beam installed.

    # The dataset's temporary directory: renamed only when complete, returns file deleted.
    self._returns_path = f'{self.data_dir}/{beam_rollouts.RETURNS_FILE}'
    return {
      'train': beam_rollouts.Rollouts(self.builder_config, self.seeds_per_range,
                                      self._returns_path)
    }

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
      rollout(config.task, 'random', config.seed + RANDOM_SEED_OFFSET + i,
              config.max_steps).episode_return
      for i in tqdm.trange(config.random_episodes, desc=f'{config.task} (random)', unit='ep')
    ]
    self._record_returns(returns, random_returns)

  def _process_pipeline_result(self, pipeline_result: Any) -> None:
    """After a Beam run: the returns the workers measured go to metadata.json."""
    del pipeline_result
    from data_pipelines import beam_rollouts

    returns, random_returns = beam_rollouts.read_returns(self._returns_path)
    tf.io.gfile.remove(self._returns_path)  # Not part of the dataset.
    self._record_returns(returns, random_returns)

  def _record_returns(self, returns: Sequence[float], random_returns: Sequence[float]) -> None:
    """metadata.json: the returns in seed order, and the evaluator's 100% and 0%."""
    config: EpisodesConfig = self.builder_config
    self.info.metadata.update(
      {
        'task': config.task,
        'policy': config.policy,
        'episodes': config.episodes,
        'seed': config.seed,
        'episode_returns': list(returns),
        'expert_return': scores.expert_return(returns),
        'random_returns': list(random_returns),
        'random_return': float(np.mean(random_returns)) if random_returns else None,
      }
    )


def builder(task: str, data_dir: str, **config: Any) -> GatoEpisodes:
  """The builder of `task`'s dataset under `data_dir` (generation settings in `config`)."""
  return GatoEpisodes(config=episodes_config(task, **config), data_dir=data_dir)


def check_settings(episodes: int = 10, random_episodes: int = 5, max_steps: int | None = None,
                   names: dict[str, str] | None = None) -> None:
  """Raises ValueError naming the first bad generation setting, before anything is written.

  A dataset of no episodes has no expert return to normalize scores with. `names` maps a
  setting to what the caller calls it (`{'episodes': '--episodes'}`), for the message.
  """
  names = names or {}
  for name, value, least in (('episodes', episodes, 1), ('random_episodes', random_episodes, 0),
                             ('max_steps', max_steps, 1)):
    if name == 'max_steps' and value is None:
      continue
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
      raise ValueError(f'{names.get(name, name)} must be an int of at least {least}, '
                       f'got {value!r}')


def check_data_dir(data_dir: str, name: str = 'data_dir') -> None:
  """Raises ValueError when `data_dir`, or a directory above it, exists but is no directory.

  Otherwise TFDS fails deep inside with a NotADirectoryError about its `downloads` folder.
  Local paths only; an object store (gs://) has no files in the way of directories.
  """
  if '://' in data_dir:
    return
  path = pathlib.Path(data_dir).absolute()
  for p in (path, *path.parents):
    if p.exists():
      if not p.is_dir():
        which = 'is' if p == path else f'is under {p}, which is'
        raise ValueError(f'{name}={data_dir} {which} a file, not a directory')
      return


def _new_directories(data_dir: str, dataset_dir: str) -> list[pathlib.Path]:
  """The directories TFDS will create for one dataset that do not exist yet, deepest first."""
  if '://' in data_dir:
    return []
  root = pathlib.Path(data_dir).absolute()
  dataset = pathlib.Path(dataset_dir).absolute()
  candidates = [root / 'downloads' / 'extracted', root / 'downloads',
                *[p for p in dataset.parents if root in p.parents or p == root]]
  return sorted({p for p in candidates if not p.exists()}, key=lambda p: -len(p.parts))


def generate(task: str, data_dir: str, *, runner: str | None = None, num_workers: int = 1,
             beam_options: str = '', seeds_per_range: int | None = None,
             **config: Any) -> GatoEpisodes:
  """Rolls out and writes the dataset; TFDS writes to a temporary directory and renames it
  only when complete, so an interrupted run never leaves a dataset that looks finished.

  Settings and `data_dir` are checked before anything is created, and a failed run
  removes the directories it created that are still empty: a failure leaves no empty
  dataset directory that the next run or a person would have to explain.

  With `runner` (one of BEAM_RUNNERS) the rollouts run as an Apache Beam pipeline on
  `num_workers` workers, `seeds_per_range` episodes per work item (by default about four
  items per worker), `beam_options` passed to the runner as they are
  (beam_rollouts.pipeline_options). The records written are the same as without.
  """
  check_settings(**{k: config[k] for k in ('episodes', 'random_episodes', 'max_steps')
                    if k in config})
  check_data_dir(data_dir)
  if runner is None and (num_workers != 1 or beam_options or seeds_per_range is not None):
    raise ValueError('num_workers, beam_options and seeds_per_range need a Beam runner')
  for name, value in (('num_workers', num_workers), ('seeds_per_range', seeds_per_range)):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                              or value < 1):
      raise ValueError(f'{name} must be an int of at least 1, got {value!r}')
  b = builder(task, data_dir, **config)
  download_config = None
  if runner is not None:
    try:
      from data_pipelines import beam_rollouts  # Only Beam runs need apache_beam installed.
    except ModuleNotFoundError as e:
      if e.name != 'apache_beam':
        raise
      raise cli.CommandError(f"runner {runner} needs Apache Beam: pip install -e '.[beam]'") from e
    options = beam_rollouts.pipeline_options(runner, num_workers, beam_options)
    b.seeds_per_range = seeds_per_range or beam_rollouts.default_range_size(
      b.builder_config.episodes, num_workers)
    download_config = tfds.download.DownloadConfig(beam_options=options)
  created = _new_directories(data_dir, os.fspath(b.data_dir))
  try:
    with cli.phase(f'generation of {b.builder_config.name} into {b.data_dir}'):
      b.download_and_prepare(download_config=download_config)
  except BaseException:
    for directory in created:
      with contextlib.suppress(OSError):  # Not empty (or already gone): kept.
        directory.rmdir()
    raise
  return b
