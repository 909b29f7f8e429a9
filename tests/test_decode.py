"""KV-cached decoding matches the full forward pass, and the model is causal."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import models
from gato_jax import specs, tokenizer
from gato_jax.model import Gato, ModelOptions, decode

LAYOUT = tokenizer.TokenLayout(text_vocab_size=256)
TOLERANCE = 2e-5  # float32 logits; cached and full attention sum in different orders.
SPEC = specs.TaskSpec(
  name='mixed',
  observation=(
    tokenizer.ImageField('camera', 32, 32),
    tokenizer.ContinuousField('joints', (3,)),
  ),
  action=tokenizer.DiscreteField('button', (), num_values=6),
)


def _episode_batch(seed: int, text_tokens: int = 5, steps: int = 3) -> dict[str, np.ndarray]:
  """Text document, then `steps` timesteps of image + continuous obs, '|', discrete action."""
  rng = np.random.default_rng(seed)
  observations = {
    'camera': rng.integers(0, 256, (steps, 32, 32, 3), dtype=np.uint8),
    'joints': rng.normal(size=(steps, 3)).astype(np.float32),
  }
  tok = SPEC.tokenizer(LAYOUT).tokenize_steps(observations, rng.integers(0, 6, steps))
  n = steps * SPEC.tokens_per_timestep
  patches = np.zeros((n, 16, 16, 3), np.uint8)
  positions = np.zeros((n, 4), np.int32)
  image = tok.kinds.reshape(-1) == tokenizer.TokenKind.IMAGE
  patches[image] = tok.patches.reshape(-1, 16, 16, 3)
  positions[image] = tok.patch_positions.reshape(-1, 4)
  text = rng.integers(0, 256, text_tokens).astype(np.int32)

  def pad(x: np.ndarray, value: int = 0) -> np.ndarray:
    return np.concatenate([np.full((text_tokens, *x.shape[1:]), value, x.dtype), x])

  return {
    'tokens': np.concatenate([text, tok.tokens.reshape(-1)]),
    'kinds': pad(tok.kinds.reshape(-1).astype(np.int32), tokenizer.TokenKind.TEXT),
    'local_positions': pad(tok.local_positions.reshape(-1)),
    'patches': pad(patches),
    'patch_positions': pad(positions),
  }


def _config(position_encoding: str):
  config = models.model_config('demo')
  config.num_layers, config.d_model, config.mlp_dim, config.max_length = 2, 64, 128, 64
  config.position_encoding = position_encoding
  return config


# Every test here runs without and with rotary positions: caching, left padding and
# causality must hold for both.
@pytest.fixture(scope='module', params=['none', 'rope'])
def model(request):
  options = ModelOptions.from_model_config(_config(request.param))
  return Gato(options, LAYOUT.vocab_size, nnx.Rngs(0))


@pytest.fixture(scope='module')
def batch():
  one, two = _episode_batch(0), _episode_batch(1)
  return {k: np.stack([one[k], two[k]]) for k in one}


def _slice(batch, start, stop):
  return {k: v[:, start:stop] for k, v in batch.items()}


def test_the_sequence_mixes_every_modality(batch):
  kinds = set(np.unique(batch['kinds']).tolist())
  assert {
    tokenizer.TokenKind.TEXT,
    tokenizer.TokenKind.IMAGE,
    tokenizer.TokenKind.OBSERVATION_CONTINUOUS,
    tokenizer.TokenKind.SEPARATOR,
    tokenizer.TokenKind.ACTION_DISCRETE,
  } <= kinds


def test_cached_decoding_matches_the_full_forward_at_every_position(model, batch):
  full = np.asarray(nnx.jit(lambda m, b: m(b))(model, batch))
  length = batch['tokens'].shape[1]
  prompt = 7
  logits, cache = decode.prefill(model, _slice(batch, 0, prompt))
  steps = [logits]
  for t in range(prompt, length):
    logits, cache = decode.extend(model, _slice(batch, t, t + 1), cache)
    steps.append(logits)
  cached = np.concatenate([np.asarray(s) for s in steps], axis=1)
  assert int(cache['index']) == length
  real = slice(0, LAYOUT.vocab_size)
  np.testing.assert_allclose(cached[..., real], full[..., real], atol=TOLERANCE, rtol=0)


def test_a_whole_timestep_can_be_appended_at_once(model, batch):
  full = np.asarray(nnx.jit(lambda m, b: m(b))(model, batch))
  step = SPEC.tokens_per_timestep
  _, cache = decode.prefill(model, _slice(batch, 0, 5 + step))
  logits, cache = decode.extend(model, _slice(batch, 5 + step, 5 + 2 * step), cache)
  np.testing.assert_allclose(
    np.asarray(logits), full[:, 5 + step : 5 + 2 * step], atol=TOLERANCE, rtol=0
  )


def test_left_padding_leaves_the_real_tokens_logits_unchanged(model, batch):
  one = _slice(batch, 0, 20)
  shifted = {k: np.concatenate([np.zeros_like(v[:, :3]), v], axis=1) for k, v in one.items()}
  plain, _ = decode.prefill(model, one)
  padded, _ = decode.prefill(model, shifted)
  np.testing.assert_allclose(np.asarray(padded)[:, 3:], np.asarray(plain), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize('position', [3, 9, 20])
def test_changing_token_t_never_changes_earlier_logits(model, batch, position):
  forward = nnx.jit(lambda m, b: m(b))
  before = np.asarray(forward(model, batch))
  changed = {k: v.copy() for k, v in batch.items()}
  if changed['kinds'][0, position] == tokenizer.TokenKind.IMAGE:
    changed['patches'][:, position] = 255 - changed['patches'][:, position]
  else:
    changed['tokens'][:, position] = (changed['tokens'][:, position] + 1) % LAYOUT.vocab_size
  after = np.asarray(forward(model, changed))
  np.testing.assert_array_equal(after[:, :position], before[:, :position])
  assert np.abs(after[:, position:] - before[:, position:]).max() > 1e-3


def test_an_empty_cache_has_a_slot_per_layer_example_and_position(model):
  cache = decode.init_cache(model, 2, max_length=16)
  assert cache['k'].shape == cache['v'].shape == (2, 2, 16, 4, 32)  # [layers, B, S, H, K]
  assert cache['k'].dtype == jnp.float32  # The demo model computes in float32.
  assert cache['valid'].shape == (2, 16) and not bool(jnp.any(cache['valid']))
  assert int(cache['index']) == 0


@pytest.mark.parametrize('encoding', ['none', 'rope'])
def test_only_rope_tells_the_order_of_earlier_tokens(encoding):
  # Without a position encoding one attention layer sees its past as a set: swapping two
  # earlier tokens leaves the last position's logits unchanged, so the model cannot tell
  # the newest observation from older ones. Rotary positions make the order visible.
  config = _config(encoding)
  config.num_layers = 1
  model = Gato(ModelOptions.from_model_config(config), LAYOUT.vocab_size, nnx.Rngs(0))

  def last_logits(tokens):
    n = len(tokens)
    batch = {
      'tokens': np.asarray([tokens], np.int32),
      'kinds': np.full((1, n), tokenizer.TokenKind.TEXT, np.int32),
      'local_positions': np.zeros((1, n), np.int32),
      'patches': np.zeros((1, n, 16, 16, 3), np.uint8),
      'patch_positions': np.zeros((1, n, 4), np.int32),
    }
    return np.asarray(model(batch))[0, -1, : LAYOUT.vocab_size]

  change = np.abs(last_logits([5, 9, 3, 7]) - last_logits([9, 5, 3, 7])).max()
  if encoding == 'none':
    assert change < 1e-5
  else:
    assert change > 1e-3
