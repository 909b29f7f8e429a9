r"""Roll out real episodes and show how their TaskSpecs tokenize them.

The first thing to run when adding a task: it shows the token layout, the tokens of one
timestep grouped by kind, and checks that every logged action survives the round trip
through tokens (the evaluator decodes sampled actions the same way).

  python -m data_pipelines.inspect_tokens --config=configs/demo.py
  python -m data_pipelines.inspect_tokens --config=configs/demo.py \
      --config.tasks=cartpole,babyai_gotolocal --config.episodes=3
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app
from ml_collections import config_flags

from data_pipelines import rollouts
from gato_jax import cli, specs, tables
from gato_jax import tokenizer as tok

_CONFIG: Any = None  # The --config flag, defined only when run as a script (see the end).


def rollout(
  task: str, seed: int, kind: str = 'expert', max_steps: int | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
  """One episode of `kind` ('expert' or 'random'), cut after `max_steps` if given.

  The dataset generator's rollout, checks included, without RLDS's final padding step:
  returns the stacked observations, the actions and the episode return.
  """
  episode = rollouts.rollout(task, kind, seed, max_steps)
  observations, actions = episode.acted_steps()
  return observations, actions, episode.episode_return


def describe_timestep(
  spec: specs.TaskSpec, steps: tok.TokenizedSteps, t: int = 0, show: int = 8
) -> str:
  """One timestep's tokens field by field: 'name  KIND  xcount  [first ids ...]'."""
  lines = []
  for name, start, stop in spec.token_spans():
    ids = steps.tokens[t, start:stop]
    kind = tok.TokenKind(steps.kinds[t, start]).name
    text = ' '.join(str(i) for i in ids[:show]) + (' ...' if len(ids) > show else '')
    lines.append(f'    {name:<12} {kind:<24} x{len(ids):<4} [{text}]')
  return '\n'.join(lines)


def run(config: Any) -> None:
  """Rolls out `config.episodes` per task in `config.tasks` and prints what they became."""
  layout = tok.layout_from_config(config)
  vocabulary = tok.vocabulary_from_config(config)
  tasks = [t.strip() for t in config.tasks.split(',') if t.strip()]
  print(
    f'token layout: text [0, {layout.text_vocab_size}) | discrete [{layout.discrete_offset}, '
    f'{layout.continuous_offset}) | continuous [{layout.continuous_offset}, {layout.separator}) '
    f'| separator {layout.separator} | image {layout.image_placeholder} '
    f'| vocab {layout.vocab_size}'
  )
  rows = []
  for task in tasks:
    spec = specs.get_spec(task)
    task_tokenizer = spec.tokenizer(layout, vocabulary)
    for episode in range(config.episodes):
      seed = config.seed + episode
      observations, actions, episode_return = rollout(task, seed)
      start = time.perf_counter()
      steps = task_tokenizer.tokenize_steps(observations, actions)
      seconds = time.perf_counter() - start
      action_tokens = steps.tokens[:, spec.observation_tokens + 1 :]
      decoded = np.stack([task_tokenizer.detokenize_action(a) for a in action_tokens])
      error = float(np.max(np.abs(decoded.astype(np.float64) - actions.reshape(decoded.shape))))
      if episode == 0:
        print(f'\n{task}: first timestep, {spec.tokens_per_timestep} tokens')
        print(describe_timestep(spec, steps))
      rows.append(
        {
          'task': task,
          'policy': 'expert',
          'seed': seed,
          'steps': len(actions),
          'return': episode_return,
          'tokens': int(steps.tokens.size),
          'action_error': error,
          'tokens/s': steps.tokens.size / max(seconds, 1e-9),
        }
      )
  print()
  print(tables.format_table(rows))


def main(argv: Sequence[str]) -> None:
  del argv
  if _CONFIG.value is None:
    raise app.UsageError('--config is required, e.g. --config=configs/demo.py')
  run(_CONFIG.value)


if __name__ == '__main__':
  # Defined here, not at import, so that tests importing several scripts that each take
  # --config do not register the flag twice.
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to an ml_collections config.')
  cli.run(main)
