"""Sampling action tokens on device, one at a time, with or without the KV cache.

The evaluator's policy (gato_jax/policy.py) appends a batch of observations and samples
the action's tokens in one call of `cached_step`: each token restricted to [start, stop)
(the action kind's id range), sampled at `temperature` (0 = argmax) and appended before
the next is sampled. `uncached_token` samples one token from a full forward pass instead:
the benchmark's baseline and the check that the cache changes nothing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from gato_jax import tokenizer
from gato_jax.model import inputs
from gato_jax.model.gato import Cache, Gato


def _sample(logits: jax.Array, key: jax.Array, start: int, stop: int, temperature: float):
  """One token per row from logits [B, V], only ids in [start, stop); temperature 0 = argmax."""
  allowed = logits[:, start:stop]
  if temperature == 0.0:
    choice = jnp.argmax(allowed, axis=-1)
  else:
    choice = jax.random.categorical(key, allowed / temperature, axis=-1)
  return (choice + start).astype(jnp.int32)


def _action_position(tokens: jax.Array, kind: int) -> dict[str, jax.Array]:
  """Sampled tokens [B] as one action position per row."""
  position = inputs.zeros((tokens.shape[0], 1), xp=jnp)
  position['tokens'] = tokens[:, None]
  position['kinds'] = jnp.full_like(position['kinds'], kind)
  position['local_positions'] = jnp.full_like(
    position['local_positions'], tokenizer.LOCAL_POSITION_ACTION
  )
  return position


def cached_step(
  model: Gato,
  observation: dict[str, jax.Array],
  cache: Cache,
  key: jax.Array,
  forced: jax.Array | None = None,
  *,
  action_tokens: int,
  action_kind: int,
  start: int,
  stop: int,
  temperature: float,
) -> tuple[jax.Array, Cache]:
  """Appends a batch of observations and samples the action: [B, action_tokens], cache.

  Each sampled token is appended before the next is sampled; the last one too, so the
  cache ends the step holding the whole timestep. `forced` [B, action_tokens], when
  given, is appended in their place: every token is then sampled after the given ones
  before it, as teacher forcing predicts it (gato_jax/replay.py).
  """
  logits, cache = model.forward(observation, cache=cache)
  # jax.lax.scan cannot close over an NNX module (its layers run their own nnx.scan), so
  # the parameters ride in the carry and the module is rebuilt inside the loop body.
  graphdef, params = nnx.split(model)

  def one_token(carry, xs):
    last, cache, params = carry
    token_key, given = xs
    token = _sample(last, token_key, start, stop, temperature)
    appended = token if given is None else given
    logits, cache = nnx.merge(graphdef, params).forward(
      _action_position(appended, action_kind), cache=cache
    )
    return (logits[:, -1], cache, params), token

  keys = jax.random.split(key, action_tokens)
  xs = (keys, None if forced is None else forced.T)
  (_, cache, _), tokens = jax.lax.scan(one_token, (logits[:, -1], cache, params), xs)
  return tokens.T, cache


# The evaluator's decode step; gato_jax.aot compiles `cached_step` itself for the eval chip.
jit_cached_step = nnx.jit(
  cached_step,
  static_argnames=('action_tokens', 'action_kind', 'start', 'stop', 'temperature'),
  donate_argnames='cache',
)


@functools.partial(nnx.jit, static_argnames=('start', 'stop', 'temperature'))
def uncached_token(
  model: Gato,
  context: dict[str, jax.Array],
  last: jax.Array,
  key: jax.Array,
  *,
  start: int,
  stop: int,
  temperature: float,
) -> jax.Array:
  """The next token of right-padded contexts [B, L] whose last real position is `last`."""
  logits = model(context)
  rows = jnp.arange(logits.shape[0])
  return _sample(logits[rows, last], key, start, stop, temperature)
