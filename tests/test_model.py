"""The model's embeddings, options and loss (parameter counts: tests/test_model_sizes.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import models
from gato_jax import specs, tokenizer
from gato_jax.model import Gato, ModelOptions
from gato_jax.model.embedding import patch_position_buckets
from gato_jax.model.gato import PADDED_LOGIT
from gato_jax.model.loss import next_token_loss

Kind = tokenizer.TokenKind
VOCAB = tokenizer.TokenLayout(text_vocab_size=256).vocab_size  # 2306 ids, 2432 table rows.


def _config(**overrides):
  config = models.model_config('demo')
  config.num_layers, config.d_model, config.mlp_dim = 2, 64, 128
  config.update(overrides)
  return config


def _options(**overrides):
  return ModelOptions.from_model_config(_config(**overrides))


def _batch(batch_size=2, length=24, seed=0):
  rng = np.random.default_rng(seed)
  kinds = rng.choice(
    [Kind.TEXT, Kind.IMAGE, Kind.OBSERVATION_DISCRETE, Kind.SEPARATOR, Kind.ACTION_DISCRETE],
    (batch_size, length),
  )
  image = kinds == Kind.IMAGE
  return {
    'tokens': rng.integers(0, VOCAB, (batch_size, length)).astype(np.int32),
    'kinds': kinds.astype(np.int32),
    'local_positions': rng.integers(0, 20, (batch_size, length)).astype(np.int32),
    'patches': np.where(
      image[..., None, None, None], rng.integers(0, 256, (batch_size, length, 16, 16, 3)), 0
    ).astype(np.uint8),
    'patch_positions': np.where(image[..., None], [0, 32, 96, 128], 0).astype(np.int32),
  }


@pytest.fixture(scope='module')
def model():
  return Gato(_options(), VOCAB, nnx.Rngs(0))


def _forward(model, batch, key=None):
  return np.asarray(nnx.jit(lambda m, b, k: m(b, key=k))(model, batch, key))


def _embed(model, batch, key=None):
  return np.asarray(model.embedder(batch, jnp.float32, key))


# -- embeddings ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(lo=st.integers(0, 126), width=st.integers(1, 128), seed=st.integers(0, 2**31 - 1))
def test_patch_buckets_lie_in_the_interval_and_eval_takes_the_rounded_mean(lo, width, seed):
  hi = min(lo + width, 128)
  interval = jnp.asarray([[lo, hi]] * 64, jnp.int32)
  sampled = np.asarray(patch_position_buckets(interval, jax.random.key(seed)))
  assert sampled.min() >= lo and sampled.max() < hi
  mean = np.asarray(patch_position_buckets(interval, None))
  assert (mean == int(np.floor((lo + hi - 1) / 2 + 0.5))).all()


def test_training_samples_every_bucket_of_a_wide_interval():
  interval = jnp.asarray([[16, 24]] * 4000, jnp.int32)
  sampled = np.asarray(patch_position_buckets(interval, jax.random.key(0)))
  assert set(np.unique(sampled).tolist()) == set(range(16, 24))


def test_image_positions_ignore_their_token_id_and_other_positions_ignore_pixels(model):
  batch = _batch()
  image = batch['kinds'] == Kind.IMAGE
  base = _embed(model, batch)
  changed = {k: v.copy() for k, v in batch.items()}
  changed['tokens'] = np.where(image, (batch['tokens'] + 7) % VOCAB, batch['tokens'])
  changed['patches'] = np.where(image[..., None, None, None], batch['patches'], 99)
  changed['patch_positions'] = np.where(image[..., None], batch['patch_positions'], 5)
  np.testing.assert_array_equal(_embed(model, changed), base)

  changed = {k: v.copy() for k, v in batch.items()}
  changed['patches'] = 255 - batch['patches']
  diff = np.abs(_embed(model, changed) - base).max(-1)
  assert (diff[image] > 1e-3).all() and (diff[~image] == 0).all()


@pytest.mark.parametrize('pixels', ['paper', 'unit'])
def test_image_embedding_is_resnet_plus_row_and_column_tables(pixels):
  model = Gato(_options(pixel_normalization=pixels), VOCAB, nnx.Rngs(0))
  batch = _batch()
  b, t = np.argwhere(batch['kinds'] == Kind.IMAGE)[0]
  batch['local_positions'][b, t] = 0
  patch = tokenizer.normalize_patches(batch['patches'][b, t], pixels)
  row, col = (0 + 32) // 2, (96 + 128) // 2  # Rounded means of the batch's intervals.
  expected = (
    model.embedder.patches(jnp.asarray(patch)[None], jnp.float32)[0]
    + model.embedder.patch_rows[...][row]
    + model.embedder.patch_cols[...][col]
  )
  np.testing.assert_allclose(_embed(model, batch)[b, t], expected, atol=1e-5)


def test_local_position_zero_adds_nothing_and_others_add_their_row(model):
  batch = _batch()
  batch['kinds'][:] = Kind.TEXT
  batch['local_positions'][:] = 0
  plain = _embed(model, batch)
  np.testing.assert_allclose(plain, model.embedder.tokens[...][batch['tokens']], atol=1e-6)
  batch['local_positions'][:] = 5
  np.testing.assert_allclose(
    _embed(model, batch) - plain,
    np.broadcast_to(model.embedder.local_positions[...][5], plain.shape),
    atol=1e-5,
  )


def test_rope_needs_an_even_head_dim():
  with pytest.raises(ValueError, match='model.head_dim'):
    ModelOptions.from_model_config(_config(position_encoding='rope', head_dim=33))


def _cosines(rows):
  unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
  return lambda gap: float((unit[:-gap] * unit[gap:]).sum(1).mean())


def test_ordinal_init_makes_near_value_bins_similar_and_leaves_other_rows_normal():
  layout = tokenizer.TokenLayout(text_vocab_size=256)
  first = layout.continuous_offset
  table = np.asarray(Gato(_options(value_embedding_init='ordinal'), VOCAB, nnx.Rngs(0),
                          first_value_row=first).embedder.tokens[...])
  plain = np.asarray(Gato(_options(), VOCAB, nnx.Rngs(0)).embedder.tokens[...])
  values = table[first:first + tokenizer.NUM_BINS]
  ordinal, normal = _cosines(values), _cosines(plain[first:first + tokenizer.NUM_BINS])
  assert ordinal(1) > 0.9 and ordinal(4) > 0.5 and abs(ordinal(512)) < 0.2
  assert abs(normal(1)) < 0.1  # The paper's init: neighbours are unrelated.
  # Same scale as the rest of the table, which keeps its normal init (text, discrete, ...).
  norms = np.linalg.norm(values, axis=1)
  assert 0.8 < norms.mean() < 1.2
  others = np.concatenate([table[:first], table[first + tokenizer.NUM_BINS:]])
  assert 0.8 < np.linalg.norm(others, axis=1).mean() < 1.2 and abs(_cosines(others)(1)) < 0.1


def test_ordinal_init_needs_the_layout():
  with pytest.raises(ValueError, match='value_embedding_init'):
    Gato(_options(value_embedding_init='ordinal'), VOCAB, nnx.Rngs(0))


# -- outputs and options --------------------------------------------------------------------


def test_logits_cover_the_padded_table_and_padding_rows_are_masked(model):
  logits = _forward(model, _batch())
  assert model.vocab_rows == 2432 == _options().vocab_rows(VOCAB)
  assert logits.shape == (2, 24, 2432) and logits.dtype == np.float32
  assert (logits[..., VOCAB:] == PADDED_LOGIT).all()
  assert np.isfinite(logits[..., :VOCAB]).all() and (np.abs(logits[..., :VOCAB]) < 1e3).all()


def test_scan_and_unrolled_layers_share_parameters_and_numbers(model):
  unrolled = Gato(_options(scan_layers=False), VOCAB, nnx.Rngs(1))
  nnx.update(unrolled, nnx.state(model, nnx.Param))  # Same tree: checkpoints interchange.
  batch = _batch()
  np.testing.assert_allclose(_forward(unrolled, batch), _forward(model, batch), atol=1e-5)


@pytest.mark.parametrize('policy', ['minimal', 'full'])
def test_remat_changes_neither_loss_nor_gradients(model, policy):
  rematted = Gato(_options(remat=policy), VOCAB, nnx.Rngs(1))
  nnx.update(rematted, nnx.state(model, nnx.Param))
  batch = _batch()

  @nnx.jit
  def grads(m, b):
    return nnx.value_and_grad(lambda m: next_token_loss(m(b), b['tokens'], b['kinds'])[0])(m)

  (loss, g), (loss_r, g_r) = grads(model, batch), grads(rematted, batch)
  assert float(loss) == pytest.approx(float(loss_r), abs=1e-6)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_r), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_bfloat16_compute_keeps_float32_parameters_and_logits(model):
  fast = Gato(_options(dtype='bfloat16'), VOCAB, nnx.Rngs(1))
  nnx.update(fast, nnx.state(model, nnx.Param))
  assert fast.stack.blocks.mlp.wi.get_value().dtype == jnp.float32
  batch = _batch()
  logits, reference = _forward(fast, batch), _forward(model, batch)
  assert logits.dtype == np.float32
  real = slice(0, VOCAB)
  assert np.abs(logits[..., real] - reference[..., real]).max() < 0.1  # bf16 has 8 bits.
  assert np.abs(logits[..., real] - reference[..., real]).max() > 0  # It did run in bf16.


def test_a_key_turns_on_dropout_and_without_one_the_model_is_deterministic():
  model = Gato(_options(dropout_rate=0.1), VOCAB, nnx.Rngs(0))
  batch = _batch()
  batch['kinds'][batch['kinds'] == Kind.IMAGE] = Kind.TEXT  # No patch position sampling.
  np.testing.assert_array_equal(_forward(model, batch), _forward(model, batch))
  one, two = _forward(model, batch, jax.random.key(1)), _forward(model, batch, jax.random.key(2))
  assert np.abs(one - two).max() > 1e-3
  np.testing.assert_array_equal(one, _forward(model, batch, jax.random.key(1)))


@pytest.mark.parametrize(
  'key, value',
  [
    ('remat', 'some'),
    ('dtype', 'float16'),
    ('attention', 'flash'),
    ('num_heads', 0),
    ('dropout_rate', 1.0),
    ('resnet_groups', 3),
    ('value_embedding_init', 'sinusoidal'),
    ('position_encoding', 'alibi'),
    ('pixel_normalization', 'imagenet'),
  ],
)
def test_bad_model_options_name_their_config_key(key, value):
  config = _config()
  config[key] = value
  with pytest.raises(ValueError, match=f'model.{key}'):
    ModelOptions.from_model_config(config)


def test_model_options_are_typed_and_stay_valid():
  config = _config(remat='names', remat_save='query, context')
  options = ModelOptions.from_config(ml_collections.ConfigDict({'model': config}))
  assert options.remat_save == ('query', 'context') and options.remat_offload == ()
  assert options.vocab_rows(VOCAB) == 2432 and options.vocab_rows(2432) == 2432
  with pytest.raises(dataclasses.FrozenInstanceError):
    options.remat = 'full'
  # A changed copy is checked like the config it came from.
  with pytest.raises(ValueError, match="model.remat_save is set, which needs model.remat='names'"):
    dataclasses.replace(options, remat='full')
  # Unknown and missing keys are named too.
  config.extra = 1
  with pytest.raises(ValueError, match='model.extra is not a model option'):
    ModelOptions.from_model_config(config)
  del config['extra'], config['position_encoding']
  with pytest.raises(ValueError, match='model.position_encoding is missing'):
    ModelOptions.from_model_config(config)


# -- loss -----------------------------------------------------------------------------------


def test_loss_trains_only_on_text_and_actions_of_the_next_token():
  kinds = np.array(
    [
      [
        Kind.TEXT,
        Kind.TEXT,
        Kind.IMAGE,
        Kind.OBSERVATION_CONTINUOUS,
        Kind.SEPARATOR,
        Kind.ACTION_CONTINUOUS,
        Kind.PAD,
      ]
    ],
    np.int32,
  )
  tokens = np.array([[1, 2, 3, 4, 5, 6, 0]], np.int32)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(1, 7, 8)).astype(np.float32)
  # Position 0 predicts token 2 (text) perfectly; position 4 predicts token 6 (action) wrong.
  logits[0, 0, 2] = 50.0
  logits[0, 4, 6], logits[0, 4, 0] = 0.0, 50.0
  loss, metrics = next_token_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(kinds))

  log_probs = jax.nn.log_softmax(logits, -1)
  expected = -(log_probs[0, 0, 2] + log_probs[0, 4, 6]) / 2  # Targets at t=1 and t=5 only.
  assert float(loss) == pytest.approx(float(expected), rel=1e-5)
  assert float(metrics['targets']) == 2
  assert float(metrics['accuracy']) == 0.5
  assert float(metrics['accuracy/text']) == 1.0 and float(metrics['count/text']) == 1
  assert float(metrics['accuracy/action_continuous']) == 0.0
  assert float(metrics['count/action_continuous']) == 1
  assert float(metrics['count/separator']) == 1 and float(metrics['count/action_discrete']) == 0
  assert 'accuracy/image' not in metrics and 'accuracy/pad' not in metrics


def test_per_sequence_sums_weigh_every_row_alike():
  # Row 0 has one action target, row 1 three text targets, row 2 none.
  kinds = np.array(
    [
      [Kind.OBSERVATION_DISCRETE, Kind.SEPARATOR, Kind.ACTION_DISCRETE, Kind.PAD],
      [Kind.TEXT, Kind.TEXT, Kind.TEXT, Kind.TEXT],
      [Kind.IMAGE, Kind.IMAGE, Kind.PAD, Kind.PAD],
    ],
    np.int32,
  )
  tokens = np.array([[1, 2, 3, 0], [4, 5, 6, 7], [1, 1, 0, 0]], np.int32)
  logits = np.random.default_rng(1).normal(size=(3, 4, 8)).astype(np.float32)
  loss, metrics = next_token_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(kinds))
  nll = -np.take_along_axis(
    np.asarray(jax.nn.log_softmax(logits[:, :-1], -1)), tokens[:, 1:, None], -1
  )[..., 0]
  row0, row1 = nll[0, 1], nll[1].mean()
  assert float(metrics['sequences']) == 2  # Row 2 has no target and does not count.
  assert float(metrics['sequence_nll']) == pytest.approx(row0 + row1, rel=1e-5)
  assert float(loss) == pytest.approx((row0 + nll[1].sum()) / 4, rel=1e-5)  # Per token.


def test_loss_ignores_logits_at_non_target_positions():
  kinds = np.array([[Kind.TEXT, Kind.IMAGE, Kind.IMAGE, Kind.TEXT]], np.int32)
  tokens = np.array([[1, 2, 3, 4]], np.int32)
  logits = np.zeros((1, 4, 8), np.float32)
  loss, _ = next_token_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(kinds))
  logits[0, :2] = 100 * np.random.default_rng(0).normal(size=(2, 8))  # Predict image targets.
  logits[0, 3] = 7.0  # The last position has no target.
  loss2, _ = next_token_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(kinds))
  assert float(loss) == float(loss2) == pytest.approx(np.log(8))


def test_a_task_longer_than_the_local_position_table_is_refused():
  from configs import models
  from gato_jax.model import ModelOptions, check_task_fits

  model_config = ModelOptions.from_model_config(models.model_config('demo'))
  small = specs.TaskSpec(
    'small', [tokenizer.DiscreteField('x', (10,))], tokenizer.DiscreteField('action')
  )
  check_task_fits(small, model_config)  # 2 + 10 rows fit in the demo's table.
  big = specs.TaskSpec(
    'big', [tokenizer.DiscreteField('x', (200,))], tokenizer.DiscreteField('action')
  )
  with pytest.raises(ValueError, match=r"task 'big' .* model.local_positions >= 202"):
    check_task_fits(big, model_config)
