r"""Episode generation throughput: one process against Apache Beam's DirectRunner with N workers.

Each mode writes the same dataset (`data_pipelines.rollouts.generate`) twice into fresh
directories: a small run and a large one. Their difference is the steady state, episodes/s
with start-up amortized away; start-up is what the small run took beyond its episodes
(Beam workers are processes that import TensorFlow and the environments first). The wall
rate of the large run is what one such command gives end to end.

  python -m benchmarks.generate
  python -m benchmarks.generate --task=cartpole --episodes=4000 --workers=1,2,4

The default task, metaworld_reach, spends its time in MuJoCo and the scripted expert, as
generation at scale does; cartpole's rollouts are so cheap that Beam's own per-episode
work (pickling between processes, the shuffle before writing) dominates.

Needs the `beam` extra (pip install -e '.[beam]') for the Beam rows.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from typing import Any

import tensorflow_datasets as tfds
from absl import flags

from benchmarks import report
from data_pipelines import rollouts
from gato_jax import cli


def timed_generation(task: str, episodes: int, max_steps: int, workers: int | None) -> float:
  """Seconds to write `episodes` episodes of `task`; `workers` None is the single process."""
  beam = {} if workers is None else {'runner': 'DirectRunner', 'num_workers': workers}
  with tempfile.TemporaryDirectory() as data_dir:
    start = time.perf_counter()
    rollouts.generate(
      task, data_dir, episodes=episodes, max_steps=max_steps, random_episodes=0, **beam
    )
    return time.perf_counter() - start


def measure(
  task: str, episodes: int, small_episodes: int, max_steps: int, workers: int | None
) -> dict[str, Any]:
  """One row: steady-state episodes/s, start-up seconds and the large run's wall rate."""
  small = timed_generation(task, small_episodes, max_steps, workers)
  large = timed_generation(task, episodes, max_steps, workers)
  # Start-up varies by seconds on a shared machine: the extra episodes must take well
  # longer than that for their difference to mean anything.
  if large - small < 0.25 * small:
    raise ValueError(
      f'{episodes} episodes took {large:.1f} s, {small_episodes} took {small:.1f} s: too '
      'close to separate start-up from episodes; raise --episodes'
    )
  steady = (episodes - small_episodes) / (large - small)
  if workers is None:
    mode = 'single process'
  else:
    mode = f'Beam DirectRunner, {workers} worker{"s" if workers > 1 else ""}'
    mode += ' (multi_processing)' if workers > 1 else ' (in_memory)'
  return {
    'mode': mode,
    'episodes/s': round(steady, 2),
    'start-up s': round(max(small - small_episodes / steady, 0.0), 1),
    f'wall s ({episodes} ep)': round(large, 1),
    'wall episodes/s': round(episodes / large, 2),
  }


def main(argv: Sequence[str]) -> None:
  del argv
  args = flags.FLAGS
  if args.small_episodes >= args.episodes:
    raise ValueError('--small_episodes must be below --episodes (their difference is timed)')
  tfds.disable_progress_bar()
  modes = [None] + [int(w) for w in args.workers]
  rows = [measure(args.task, args.episodes, args.small_episodes, args.max_steps, w) for w in modes]
  report.emit(
    'generate',
    f'episode generation, {args.task}, {args.max_steps} steps per episode, '
    f'{args.episodes} episodes (steady state: minus a {args.small_episodes}-episode run)',
    rows,
    args.json_out,
    task=args.task,
    episodes=args.episodes,
    small_episodes=args.small_episodes,
    max_steps=args.max_steps,
  )


if __name__ == '__main__':
  flags.DEFINE_string(
    'task', 'metaworld_reach', 'Task to roll out (python -m data_pipelines.generate --list).'
  )
  flags.DEFINE_integer('episodes', 200, 'Episodes of the large run of each mode.')
  flags.DEFINE_integer('small_episodes', 10, 'Episodes of the small run that times start-up.')
  flags.DEFINE_integer('max_steps', 200, 'Cap on steps per episode.')
  flags.DEFINE_list('workers', ['1', '2'], 'Beam DirectRunner worker counts to measure.')
  flags.DEFINE_string('json_out', 'benchmarks/results/generate.json', 'Output JSON.')
  cli.run(main)
