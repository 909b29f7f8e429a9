"""Control latency: observation in, action out, with and without the KV cache.

  python -m benchmarks.control_latency --config=configs/demo.py
  python -m benchmarks.control_latency --config=configs/gato_1b2.py --tasks=atari_breakout \
      --batch_sizes=1,32

One step is what the evaluator does per env step (gato_jax/policy.py): tokenize the
observation with the task's TaskSpec, append it to every row's context, sample the action
tokens one at a time restricted to the action range, de-tokenize them. The environment
itself is left out (observations are recorded from it first), so the figures are the
agent's. The context starts empty and runs through several slides, so the cached figures
include the amortized re-prefill when the context passes L; without the cache, every
action token re-runs the whole L-token context. Parameters are freshly initialized:
latency does not depend on their values.
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx
from ml_collections import config_flags

from benchmarks import report
from gato_jax import cli, envs, policy, specs
from gato_jax import tokenizer as tok
from gato_jax.envs.wrappers import TokenizedEnv
from gato_jax.model import check_task_fits, from_config

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/demo.py', 'Experiment config.')
_TASKS = flags.DEFINE_list(
  'tasks',
  ['cartpole', 'metaworld_reach', 'atari_breakout'],
  'Tasks to time: discrete, multi-token continuous and image inputs.',
)
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '16'], 'Environments acting together.')
_STEPS = flags.DEFINE_integer('steps', 60, 'Timed steps per setting (after warm-up).')
_JSON = flags.DEFINE_string(
  'json_out', '', 'Output JSON; default benchmarks/results/control_latency_<config>.json.'
)


def recorded_observations(task: str, task_tokenizer: specs.TaskTokenizer, count: int) -> list:
  """Raw observations of a random-policy episode (restarted as needed), to replay."""
  env = TokenizedEnv(envs.make_env(task, 0), task_tokenizer)
  observation, _ = env.reset(seed=0)
  act = envs.make_policy(task, env.env, 'random', 0)
  observations = []
  while len(observations) < count:
    observations.append(observation.raw)
    action = env.encode_action(observation.raw, act(observation.raw))
    observation, _, terminated, truncated, _ = env.step(action)
    if terminated or truncated:
      observation, _ = env.reset(seed=len(observations))
  env.close()
  return observations


def time_steps(
  actor: policy.GatoPolicy,
  env: TokenizedEnv,
  observations: list,
  batch: int,
  warmup: int,
  steps: int,
) -> np.ndarray:
  """Seconds per step of `steps` timed steps, each over `batch` rows."""
  actor.begin([None] * batch, list(range(batch)))
  seconds = []
  for t in range(warmup + steps):
    start = time.perf_counter()
    live = [
      env.tokenize_observation(observations[(t + i) % len(observations)]) for i in range(batch)
    ]
    tokens = actor.act(live)
    for row in tokens:
      env.task_tokenizer.detokenize_action(row)
    seconds.append(time.perf_counter() - start)
  return np.asarray(seconds[warmup:])


def main(argv: list[str]) -> None:
  del argv
  config = _CONFIG.value
  model = from_config(config, nnx.Rngs(0))
  layout = tok.layout_from_config(config)
  length = config.model.max_length
  rows = []
  for task in _TASKS.value:
    spec = specs.get_spec(task)
    check_task_fits(spec, config.model)
    task_tokenizer = spec.tokenizer(layout)
    env = TokenizedEnv(envs.make_env(task, 0), task_tokenizer)
    observations = recorded_observations(task, task_tokenizer, 64)
    # Warm up through two slides, so every prefill shape is compiled before timing.
    slide_to = min(length // 2, length - spec.tokens_per_timestep)
    warmup = 2 * -(-(length - slide_to) // spec.tokens_per_timestep) + 2
    for batch in (int(b) for b in _BATCH_SIZES.value):
      for use_cache in (True, False):
        options = policy.SamplingOptions(prompt_mode='none', use_cache=use_cache)
        actor = policy.GatoPolicy(model, task_tokenizer, [], options)
        seconds = time_steps(
          actor, env, observations, batch, warmup if use_cache else 2, _STEPS.value
        )
        rows.append(
          {
            'task': task,
            'batch': batch,
            'kv_cache': 'yes' if use_cache else 'no',
            'tokens/step': spec.tokens_per_timestep,
            'action_tokens': spec.action_tokens,
            'step_ms': 1e3 * float(seconds.mean()),
            'p50_ms': 1e3 * float(np.percentile(seconds, 50)),
            'p95_ms': 1e3 * float(np.percentile(seconds, 95)),
            'actions/s': batch / float(seconds.mean()),
          }
        )
    env.close()
  for row in rows:
    if row['kv_cache'] == 'yes':
      other = next(
        r
        for r in rows
        if r['kv_cache'] == 'no' and r['task'] == row['task'] and r['batch'] == row['batch']
      )
      row['cache_speedup'] = other['step_ms'] / row['step_ms']
  name = pathlib.Path(config_flags.get_config_filename(flags.FLAGS['config'])).stem
  out = _JSON.value or f'benchmarks/results/control_latency_{name}.json'
  device = jax.devices()[0]
  report.emit(
    'control_latency',
    f'control latency: configs/{name}.py, context L = {length}',
    rows,
    out,
    config=name,
    context_length=length,
    backend=jax.default_backend(),
    device=getattr(device, 'device_kind', str(device)),
    steps=_STEPS.value,
  )


if __name__ == '__main__':
  jnp.zeros(())  # Initialize the backend before flags print anything device-dependent.
  cli.run(main)
