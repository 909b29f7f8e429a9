"""Sequence packing: a packed row computes each of its segments as if it were alone, and the
pipeline's packer lays whole sequences into rows, drops none, and resumes exactly."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio
import tensorflow as tf
import tiny_train_config
from flax import nnx

from configs import demo, models
from data_pipelines import captions, rollouts
from gato_jax import data, optimizer, sharding, tokenizer, train
from gato_jax.data import options, tasks  # noqa: F401 (tasks registers the Gato tasks)
from gato_jax.data.feature_converter import pack_sequences
from gato_jax.data.preprocessors import PATCH_FEATURES, TOKEN_FEATURES
from gato_jax.model import Gato, ModelOptions, decode, inputs, splash
from gato_jax.model.loss import next_token_loss
from gato_jax.model.transformer import segment_positions

Kind = tokenizer.TokenKind
VOCAB = tokenizer.TokenLayout(text_vocab_size=256).vocab_size
ROW = 32  # Model tests' row length.


def _model(position_encoding: str) -> Gato:
  config = models.model_config('demo')
  config.num_layers, config.d_model, config.mlp_dim = 2, 64, 128
  config.position_encoding = position_encoding
  return Gato(ModelOptions.from_model_config(config), VOCAB, nnx.Rngs(0))


def _sequence(length: int, seed: int) -> dict[str, np.ndarray]:
  """One sequence of real tokens of every embedding path: text, image, observation, action."""
  rng = np.random.default_rng(seed)
  kinds = rng.choice([Kind.TEXT, Kind.IMAGE, Kind.OBSERVATION_DISCRETE, Kind.ACTION_DISCRETE],
                     length).astype(np.int32)
  image = kinds == Kind.IMAGE
  seq = inputs.zeros((length,))
  seq['tokens'][:] = rng.integers(0, VOCAB, length)
  seq['kinds'][:] = kinds
  seq['local_positions'][:] = np.where(kinds == Kind.TEXT, 0, rng.integers(1, 20, length))
  seq['patches'][image] = rng.integers(0, 256, (int(image.sum()), 16, 16, 3))
  seq['patch_positions'][image] = [0, 32, 96, 128]
  return seq


def _alone_and_packed(lengths=(11, 9, 7), seed=0):
  """Each sequence alone in its own padded row, and all of them packed into one row."""
  seqs = [_sequence(n, seed + i) for i, n in enumerate(lengths)]
  alone = inputs.stack([inputs.pad(s, ROW, left=False) for s in seqs])
  packed = inputs.stack([inputs.pad(inputs.concat(seqs), ROW, left=False)])
  packed['segment_ids'] = np.zeros((1, ROW), np.int32)
  packed['segment_ids'][0, :sum(lengths)] = np.repeat(np.arange(1, len(lengths) + 1), lengths)
  return seqs, alone, packed


@nnx.jit
def _logits(model, batch):
  return model(batch)


@pytest.mark.parametrize('encoding', ['rope', 'none'])
def test_a_packed_row_gives_each_segment_the_logits_and_loss_it_gets_alone(encoding):
  model = _model(encoding)
  seqs, alone, packed = _alone_and_packed()
  alone_logits = np.asarray(_logits(model, alone))
  packed_logits = np.asarray(_logits(model, packed))
  start = 0
  for row, seq in enumerate(seqs):
    n = len(seq['tokens'])
    np.testing.assert_allclose(packed_logits[0, start:start + n], alone_logits[row, :n],
                               atol=2e-5, rtol=1e-5)
    start += n
  # Per token: the same targets, the same cross-entropy; no target across a boundary.
  _, alone_m = next_token_loss(alone_logits, alone['tokens'], alone['kinds'])
  _, packed_m = next_token_loss(packed_logits, packed['tokens'], packed['kinds'],
                                segment_ids=packed['segment_ids'])
  counts = ('targets', 'sequences', 'count/text', 'count/action_discrete',
            'count/observation_discrete')
  for key in counts:
    assert float(packed_m[key]) == float(alone_m[key]), key
  assert float(packed_m['sequences']) == 3
  for key in ('loss', 'sequence_nll', 'nll/text', 'nll/observation_discrete'):
    assert float(packed_m[key]) == pytest.approx(float(alone_m[key]), rel=1e-5), key


def test_attention_does_not_cross_segments():
  model = _model('rope')
  _, _, packed = _alone_and_packed()
  changed = {k: v.copy() for k, v in packed.items()}
  changed['tokens'][0, :11] = (changed['tokens'][0, :11] + 7) % VOCAB  # Segment 1 only.
  changed['local_positions'][0, :11] = 3
  a, b = np.asarray(_logits(model, packed)), np.asarray(_logits(model, changed))
  assert np.abs(a[0, :11] - b[0, :11]).max() > 1e-3  # Segment 1 itself did change...
  np.testing.assert_array_equal(a[0, 11:], b[0, 11:])  # ...and nothing after it did.


def test_positions_restart_at_every_segment():
  ids = jnp.asarray([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]])
  np.testing.assert_array_equal(segment_positions(ids),
                                [[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 0]])


def test_an_unpacked_row_with_segment_one_matches_the_row_without_ids():
  model = _model('rope')
  _, alone, _ = _alone_and_packed()
  with_ids = {**alone, 'segment_ids': (alone['kinds'] != Kind.PAD).astype(np.int32)}
  real = alone['kinds'] != Kind.PAD
  np.testing.assert_allclose(np.asarray(_logits(model, with_ids))[real],
                             np.asarray(_logits(model, alone))[real], atol=2e-5, rtol=1e-5)


def test_the_kv_cache_refuses_packed_rows_and_takes_unpacked_ones_as_before():
  model = _model('rope')
  _, alone, packed = _alone_and_packed()
  with pytest.raises(ValueError, match='one sequence per row'):
    decode.prefill(model, packed)
  logits, _ = decode.prefill(model, alone)
  real = alone['kinds'] != Kind.PAD
  np.testing.assert_allclose(np.asarray(logits)[real], np.asarray(_logits(model, alone))[real],
                             atol=2e-5, rtol=1e-5)


def test_splash_kernel_keeps_segments_apart_like_the_masked_xla_attention():
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 128, 2, 32)) for i in range(3))
  ids = np.zeros((2, 128), np.int32)
  ids[0, :50], ids[0, 50:120] = 1, 2
  ids[1, :128] = 1
  ids = jnp.asarray(ids)
  mask = (ids[:, :, None] == ids[:, None, :])[:, None]
  want = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)
  got = splash.splash_attention(q, k, v, segment_ids=ids, interpret=True)
  np.testing.assert_allclose(got, want, atol=2e-5)


# -- the pipeline's packer ----------------------------------------------------------------

LENGTH = 256
MIXTURE = 'test_packing_mix'
if MIXTURE not in seqio.MixtureRegistry.names():
  seqio.MixtureRegistry.add(MIXTURE, [('gato_cartpole', 1.0), ('gato_shapes_captions', 1.0)])


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('packing_data'))
  # Short episodes and two-pair caption sets: sequences of 60-70 tokens, which pack.
  rollouts.generate('cartpole', root, episodes=4, max_steps=10, random_episodes=1)
  captions.GatoShapesCaptions(data_dir=root, examples=30).download_and_prepare()
  return root


def _config(data_dir: str, pack: bool):
  config = demo.get_config()
  config.model.max_length = LENGTH
  config.data.update(mixture=MIXTURE, data_dir=data_dir, pack=pack, caption_pairs=2)
  return config


def _key(seq: dict[str, np.ndarray]) -> bytes:
  return b''.join(np.ascontiguousarray(seq[k]).tobytes() for k in (*TOKEN_FEATURES,
                                                                     *PATCH_FEATURES))


def test_the_packer_lays_whole_sequences_into_rows_and_drops_none(data_dir):
  options.configure(options.from_config(_config(data_dir, pack=True)))
  lengths = {k: LENGTH for k in (*TOKEN_FEATURES, *PATCH_FEATURES)}
  sequences = seqio.get_mixture_or_task(MIXTURE).get_dataset(
    lengths, shuffle=True, seed=1, num_epochs=None).take(60)
  given = list(sequences.as_numpy_iterator())
  replay = tf.data.Dataset.from_generator(lambda: iter(given),
                                          output_signature=sequences.element_spec)
  rows = list(pack_sequences(replay, LENGTH).as_numpy_iterator())
  assert len(rows) < len(given)  # Short caption sets did share rows.
  out = []
  for row in rows:
    ids = row['segment_ids']
    assert len(ids) == len(row['tokens']) <= LENGTH
    assert ids[0] == 1 and set(np.diff(ids)) <= {0, 1}  # 1, 1, ..., 2, 2, ...: contiguous.
    image = np.cumsum(np.r_[0, row['kinds'] == Kind.IMAGE])
    for s in range(1, ids[-1] + 1):
      lo, hi = np.flatnonzero(ids == s)[[0, -1]] + [0, 1]
      seg = {k: row[k][lo:hi] for k in TOKEN_FEATURES}
      seg.update({k: row[k][image[lo]:image[hi]] for k in PATCH_FEATURES})
      out.append(seg)
  # Every sequence comes out once, whole, in one row: the same multiset, token for token.
  assert collections.Counter(map(_key, out)) == collections.Counter(map(_key, given))
  assert sum(len(s['tokens']) for s in out) == sum(len(s['tokens']) for s in given)


def test_packed_batches_follow_the_contract_with_less_padding(data_dir):
  pads = {}
  for pack in (False, True):
    it = data.make_iterator(_config(data_dir, pack), batch_size=4, seed=0)
    batches = [next(it) for _ in range(4)]
    for b in batches:
      assert set(b) == set(inputs.BATCH)
      ids, kinds = b['segment_ids'], b['kinds']
      np.testing.assert_array_equal(ids == 0, kinds == Kind.PAD)  # 0 exactly at PAD.
      for row in ids:
        real = row[row > 0]
        assert real[0] == 1 and set(np.diff(real)) <= {0, 1}
    most = max(b['segment_ids'].max() for b in batches)
    assert most == 1 if not pack else most > 1  # Unpacked: segment 1 on every real token.
    pads[pack] = np.mean([(b['kinds'] == Kind.PAD).mean() for b in batches])
  assert pads[True] < pads[False] / 2


def test_resume_with_packing_is_exact(data_dir, tmp_path):
  config = _config(data_dir, pack=True)
  a = data.make_iterator(config, batch_size=2, seed=3)
  for _ in range(3):
    next(a)
  a.save(str(tmp_path))
  expected = [next(a) for _ in range(3)]
  resumed = data.make_iterator(config, batch_size=2, seed=3)
  resumed.restore(str(tmp_path))
  for want in expected:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_pack_must_be_a_bool(data_dir):
  config = _config(data_dir, pack=True)
  config.data.unlock()
  del config.data['pack']
  config.data.pack = 'yes'
  with pytest.raises(ValueError, match='data.pack must be a bool'):
    options.from_config(config)


def test_packing_keeps_a_finite_stream_whole_even_when_it_ends_mid_row():
  ds = tf.data.Dataset.from_tensor_slices({'n': [3, 2, 4, 1]}).map(
    lambda ex: {**{k: tf.zeros([ex['n'], *inputs.SPEC[k].trailing], inputs.SPEC[k].dtype)
                   for k in TOKEN_FEATURES},
                **{k: tf.zeros([0, *inputs.SPEC[k].trailing], inputs.SPEC[k].dtype)
                   for k in PATCH_FEATURES}})
  rows = [r['segment_ids'].tolist() for r in pack_sequences(ds, 6).as_numpy_iterator()]
  # 3 and 2 share a row; 4 does not fit and is shorter than the open 5, so that row goes
  # out and 4 opens the next; 1 joins it; the stream's end sends it out.
  assert rows == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 2]]


def test_the_train_step_on_packed_rows_matches_the_same_sequences_unpacked():
  """The trainer's plumbing: 16 sequences as 16 padded rows (data.pack off) or two per row
  (on) give one loss, per token and per sequence ('sequences' normalization)."""
  lengths = [10 + i % 7 for i in range(16)]
  seqs = [_sequence(n, 100 + i) for i, n in enumerate(lengths)]
  for s in seqs:  # One-bucket patch intervals: the training key has nothing to draw.
    s['patch_positions'][s['kinds'] == Kind.IMAGE] = [3, 4, 5, 6]
  length = 32

  def rows(groups):
    batch = inputs.stack([inputs.pad(inputs.concat(g), length, left=False) for g in groups])
    ids = [np.repeat(np.arange(1, len(g) + 1), [len(s['tokens']) for s in g]) for g in groups]
    batch['segment_ids'] = np.stack([np.pad(i, (0, length - len(i))) for i in ids])
    batch['segment_ids'] = batch['segment_ids'].astype(np.int32)
    batch['loss_mask'] = (batch['kinds'] != Kind.PAD).astype(np.int32)
    return batch

  unpacked = rows([[s] for s in seqs])
  packed = rows([seqs[i:i + 2] for i in range(0, 16, 2)])
  config = tiny_train_config.with_overrides(**{
    'model.dropout_rate': 0.0, 'loss_normalization': 'sequences', 'model.max_length': length,
    'model.num_layers': 1})
  mesh = sharding.make_mesh(config)
  tx = optimizer.make_optimizer(config)
  layout = train.abstract_train_state(config, mesh, tx)
  state = train.init_train_state(config, mesh, tx, layout)
  results = []
  for pack, batch in ((False, unpacked), (True, packed)):
    config.data.pack = pack
    with sharding.axis_rules(mesh, config.axis_rules):
      placed = sharding.shard_batch(batch, mesh, config.axis_rules)
      step = jax.jit(train.make_train_step(config, layout.graphdef, tx))
      results.append(jax.device_get(step(state, placed, 0)[1]))
  alone, together = results
  assert together['targets'] == alone['targets'] > 0
  np.testing.assert_allclose(together['loss'], alone['loss'], rtol=1e-5)
  np.testing.assert_allclose(together['grad_norm'], alone['grad_norm'], rtol=1e-4)
