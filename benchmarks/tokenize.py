r"""Tokenizer throughput for a Meta-World-like timestep: an 80x64 camera image, 39 floats
of state and a 4-dim continuous action (64 tokens per timestep).

Two paths matter: the data pipeline tokenizes whole episodes at once (`tokenize_steps`),
the evaluator tokenizes one live observation per control step (`tokenize_timestep`).
Run it as a module: run as a script, benchmarks/ would come first on sys.path and this
file would shadow the standard library's `tokenize`.

  python -m benchmarks.tokenize
  python -m benchmarks.tokenize --steps=4000 --json_out=/tmp/tokenize.json
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from absl import flags

from benchmarks import report
from gato_jax import cli, specs
from gato_jax import tokenizer as tok

_STEPS = flags.DEFINE_integer('steps', 2000, 'Timesteps per batched call (one episode).')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats; the best is reported.')
_JSON_OUT = flags.DEFINE_string(
  'json_out', 'benchmarks/results/tokenize.json', 'Where to write the results.'
)

SPEC = specs.TaskSpec(
  'metaworld_pixels',
  observation=(tok.ImageField('image', 80, 64), tok.ContinuousField('state', (39,))),
  action=tok.ContinuousField('action', (4,), mu_law=False),
)


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
  fn()  # Warm-up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def measure(steps: int, repeats: int) -> list[dict[str, object]]:
  """Tokens/s for the batched and the per-timestep paths, and for the codecs alone."""
  rng = np.random.default_rng(0)
  observations = {
    'image': rng.integers(0, 256, (steps, 80, 64, 3), dtype=np.uint8),
    'state': rng.normal(size=(steps, 39)).astype(np.float32),
  }
  actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
  task = SPEC.tokenizer(tok.TokenLayout(32000))
  per_step = SPEC.tokens_per_timestep
  live = min(steps, 200)

  def one_at_a_time():
    for t in range(live):
      task.tokenize_timestep({k: v[t] for k, v in observations.items()}, actions[t])

  floats = rng.normal(size=steps * 43).astype(np.float32)
  cases = [
    ('tokenize_steps (pipeline)', steps, lambda: task.tokenize_steps(observations, actions)),
    ('tokenize_timestep (live)', live, one_at_a_time),
    (
      'continuous_to_tokens only',
      None,
      lambda: tok.continuous_to_tokens(floats, 33024),
    ),
    ('patchify only', None, lambda: tok.patchify(observations['image'])),
  ]
  rows = []
  for name, timesteps, fn in cases:
    seconds = _best_seconds(fn, repeats)
    if timesteps is None:  # Codec rows count the values they turn into tokens.
      n_tokens = floats.size if 'continuous' in name else steps * SPEC.image_patches_per_timestep
      rows.append({'path': name, 'timesteps/s': None, 'tokens/s': n_tokens / seconds})
    else:
      rows.append(
        {
          'path': name,
          'timesteps/s': timesteps / seconds,
          'tokens/s': timesteps * per_step / seconds,
        }
      )
  return rows


def main(argv: Sequence[str]) -> None:
  del argv
  report.emit(
    'tokenize',
    f'tokenizer throughput: 80x64 image + 39 floats + 4-dim action = '
    f'{SPEC.tokens_per_timestep} tokens/timestep',
    measure(_STEPS.value, _REPEATS.value),
    _JSON_OUT.value,
    tokens_per_timestep=SPEC.tokens_per_timestep,
    steps=_STEPS.value,
  )


if __name__ == '__main__':
  cli.run(main)
