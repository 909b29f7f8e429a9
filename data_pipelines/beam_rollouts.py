"""Rollouts as an Apache Beam transform: the episodes of one dataset, sharded by seed range.

`data_pipelines.rollouts.GatoEpisodes` hands `Rollouts` to TFDS when generation runs on a
Beam runner (`generate --runner=...`); TFDS then encodes and writes the shards with its
own Beam writer, and writes dataset_info.json last, as in the single-process path.

Why seed ranges: episode i of a dataset is `rollout(task, policy, seed + i)`, so a range of
seeds is a self-contained work item that any worker can redo and get the same episodes.
A runner retries a failed bundle and keeps only the outputs of the attempt that succeeded,
so a lost worker's range is rolled out again, never written twice; and since each
example's key is its seed, TFDS's writer refuses a duplicate outright rather than storing
it. Apache Beam is imported only here: the single-process path never needs it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf

from data_pipelines import rollouts

# The returns of the stored episodes and of the unstored random ones, for metadata.json.
DATA, RANDOM = 'data', 'random'
RETURNS_FILE = 'returns.json'


@dataclasses.dataclass(frozen=True)
class SeedRange:
  """Episodes `rollout(task, policy, seed)` for seed in [start, stop): one work item."""

  kind: str  # DATA (stored) or RANDOM (only measures the random return).
  start: int
  stop: int


def seed_ranges(start: int, count: int, range_size: int, kind: str = DATA) -> list[SeedRange]:
  """[start, start + count) cut into consecutive ranges of at most `range_size` seeds."""
  if range_size < 1:
    raise ValueError(f'range_size must be at least 1, got {range_size}')
  return [
    SeedRange(kind, s, min(s + range_size, start + count))
    for s in range(start, start + count, range_size)
  ]


def pipeline_options(
  runner: str, num_workers: int = 1, beam_options: str = ''
) -> beam.options.pipeline_options.PipelineOptions:
  """The pipeline's options: the runner, its worker count, then `beam_options` verbatim.

  DirectRunner runs one worker in this process and N > 1 as N processes of this machine;
  Dataflow starts `num_workers` VMs and Flink runs with that parallelism. Spark takes its
  executors from the cluster, so `num_workers` is not passed. Anything else a runner
  needs (project, region, temp_location, the container image) comes in `beam_options`,
  e.g. '--project=P --region=R', which may also override these.
  """
  if runner not in rollouts.BEAM_RUNNERS:
    raise ValueError(f'runner must be one of {", ".join(rollouts.BEAM_RUNNERS)}, got {runner!r}')
  args = [f'--runner={runner}']
  if runner == 'DirectRunner':
    # Beam's DirectRunner first tries Prism, a binary it downloads from GitHub at run time;
    # the FnApiRunner is the local runner it falls back to, and the one with N workers.
    args = ['--runner=FnApiRunner']
    mode = 'multi_processing' if num_workers > 1 else 'in_memory'
    args += [f'--direct_num_workers={num_workers}', f'--direct_running_mode={mode}']
    # Worker processes otherwise log every bundle at INFO onto this terminal.
    args += ['--default_sdk_harness_log_level=WARNING']
  elif runner == 'DataflowRunner':
    args += [f'--num_workers={num_workers}']
  elif runner == 'FlinkRunner':
    args += [f'--parallelism={num_workers}']
  return beam.options.pipeline_options.PipelineOptions(args + shlex.split(beam_options))


def default_range_size(episodes: int, workers: int) -> int:
  """About four ranges per worker (a slow range does not hold up the end), at most 100
  episodes per range, so that a retried range redoes little work."""
  return max(1, min(100, math.ceil(episodes / (4 * max(workers, 1)))))


def work_items(config: rollouts.EpisodesConfig, range_size: int) -> list[SeedRange]:
  """Every range of a dataset: its stored episodes, then the random-return episodes."""
  items = seed_ranges(config.seed, config.episodes, range_size)
  if config.random_episodes:
    items += seed_ranges(
      config.seed + rollouts.RANDOM_SEED_OFFSET, config.random_episodes, range_size, RANDOM
    )
  return items


def _roll_out(
  item: SeedRange, task: str, policy: str, max_steps: int | None
) -> Iterator[tuple[str, int, Any]]:
  """(kind, seed, episode) for each seed of the range, in seed order."""
  acting = policy if item.kind == DATA else 'random'
  for seed in range(item.start, item.stop):
    yield item.kind, seed, rollouts.rollout(task, acting, seed, max_steps)


def _write_returns(pairs: Sequence[tuple[str, int, float]], path: str) -> None:
  """Both lists of returns in seed order, whatever order the workers finished in."""
  ordered = sorted(pairs, key=lambda p: p[1])
  returns = {kind: [r for k, _, r in ordered if k == kind] for kind in (DATA, RANDOM)}
  with tf.io.gfile.GFile(path, 'w') as f:  # A retried write rewrites the same bytes.
    json.dump(returns, f)


def read_returns(path: str) -> tuple[list[float], list[float]]:
  """The stored and the random episodes' returns that `Rollouts` wrote to `path`."""
  with tf.io.gfile.GFile(path) as f:
    returns = json.load(f)
  return returns[DATA], returns[RANDOM]


class Rollouts(beam.PTransform):
  """PBegin -> (key, example) of every stored episode; writes the returns to `returns_path`.

  The stored episodes are keyed by their seed, as in the single-process path, so TFDS
  shuffles and writes them to the same records. `returns_path` (in the dataset's
  temporary directory) carries the returns back to the builder, which puts them in
  metadata.json and deletes the file.
  """

  def __init__(self, config: rollouts.EpisodesConfig, range_size: int, returns_path: str):
    super().__init__()
    self._items = work_items(config, range_size)
    self._task, self._policy, self._max_steps = config.task, config.policy, config.max_steps
    self._returns_path = returns_path

  def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
    episodes = (
      pbegin
      | 'SeedRanges' >> beam.Create(self._items)
      # Create's elements may all land in one bundle: spread the ranges over the workers.
      | 'Spread' >> beam.Reshuffle()
      | 'RollOut'
      >> beam.FlatMap(_roll_out, task=self._task, policy=self._policy, max_steps=self._max_steps)
    )
    _ = (
      episodes
      | 'Returns' >> beam.Map(lambda e: (e[0], e[1], e[2].episode_return))
      | 'AllReturns' >> beam.combiners.ToList()
      | 'WriteReturns' >> beam.Map(_write_returns, path=self._returns_path)
    )
    return (
      episodes
      | 'Stored' >> beam.Filter(lambda e: e[0] == DATA)
      | 'ToExample' >> beam.Map(lambda e: (str(e[1]), e[2].to_example()))
    )
