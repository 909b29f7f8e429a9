"""Gato's token layout: codecs, patches, TaskSpec order, round trips and bad input."""

import re

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gato_jax import tokenizer as tok
from gato_jax.specs import TaskSpec

HALF_BIN = 1.0 / tok.NUM_BINS  # Bins are 2/1024 wide on [-1, 1].
OFFSET = 32000
finite_floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)


# -- mu-law and bins ----------------------------------------------------------------------


def test_mu_law_fixed_points_and_saturation():
  y = tok.mu_law_encode(np.array([-tok.M, 0.0, tok.M]))
  np.testing.assert_allclose(y, [-1.0, 0.0, 1.0], atol=1e-6)
  # Beyond ±M the companded value passes ±1; the bins then saturate at the edges.
  beyond = tok.mu_law_encode(np.array([-10 * tok.M, 10 * tok.M]))
  assert beyond[0] < -1 and beyond[1] > 1
  tokens = tok.continuous_to_tokens(np.array([-10 * tok.M, -tok.M, 0.0, tok.M, 10 * tok.M]), OFFSET)
  np.testing.assert_array_equal(tokens - OFFSET, [0, 0, 512, 1023, 1023])
  assert tokens.dtype == np.int32


def test_mu_law_matches_the_paper_formula():
  x = np.array([-3.0, 0.5, 7.0])
  expected = np.sign(x) * np.log(np.abs(x) * 100 + 1) / np.log(256 * 100 + 1)
  np.testing.assert_allclose(tok.mu_law_encode(x), expected, rtol=1e-6)
  np.testing.assert_allclose(tok.mu_law_decode(tok.mu_law_encode(x)), x, rtol=1e-5)


def test_bins_at_minus_one_zero_one_and_their_centres():
  tokens = tok.continuous_to_tokens(np.array([-1.0, 0.0, 1.0]), OFFSET, mu_law=False)
  np.testing.assert_array_equal(tokens, [OFFSET, OFFSET + 512, OFFSET + 1023])
  centres = tok.tokens_to_continuous(tokens, OFFSET, mu_law=False)
  np.testing.assert_allclose(centres, [-1 + HALF_BIN, HALF_BIN, 1 - HALF_BIN], atol=1e-7)


def test_decoding_tokens_outside_the_range_raises():
  with pytest.raises(ValueError, match=r'\[32000, 33024\)'):
    tok.tokens_to_continuous(np.array([OFFSET + 1024]), OFFSET)


@pytest.mark.parametrize('mu_law', [True, False])
@pytest.mark.parametrize(
  'values, where',
  [
    ([0.1, np.nan], r'value nan at index 1 '),
    ([np.inf, 0.0], r'value inf at index 0 '),
    ([[0.0, 0.5], [-np.inf, 1.0]], r'value -inf at index \(1, 0\) '),
  ],
)
def test_encoding_nan_or_inf_raises_naming_the_index(values, where, mu_law):
  # Defect 7 of issue 16: NaN became an arbitrary int32 token, with only a RuntimeWarning.
  with pytest.raises(ValueError, match=where + r'is not finite'):
    tok.continuous_to_tokens(np.array(values), OFFSET, mu_law=mu_law)


def test_huge_finite_values_still_saturate():
  # Only NaN and inf are refused: a huge finite value is the edge bin.
  tokens = tok.continuous_to_tokens(np.array([-1e30, 1e30]), OFFSET)
  np.testing.assert_array_equal(tokens - OFFSET, [0, 1023])


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=2), elements=st.floats(-1, 1, width=32)))
def test_linear_round_trip_within_half_a_bin(x):
  decoded = tok.tokens_to_continuous(
    tok.continuous_to_tokens(x, OFFSET, mu_law=False), OFFSET, False
  )
  assert decoded.dtype == np.float32
  assert np.all(np.abs(decoded - x) <= HALF_BIN + 1e-6)


@settings(max_examples=200, deadline=None)
@given(
  hnp.arrays(np.float32, hnp.array_shapes(max_dims=2), elements=st.floats(-256, 256, width=32))
)
def test_mu_law_round_trip_within_half_a_bin_in_companded_space(x):
  decoded = tok.tokens_to_continuous(tok.continuous_to_tokens(x, OFFSET), OFFSET)
  error = np.abs(tok.mu_law_encode(decoded) - tok.mu_law_encode(x))
  assert np.all(error <= HALF_BIN + 1e-5)


# -- images --------------------------------------------------------------------------------


def test_patches_are_in_raster_order_and_scaled():
  # Patch (r, c) of a 32x48 image is filled with the value 10 * (3r + c).
  image = np.zeros((32, 48, 3), np.uint8)
  for r in range(2):
    for c in range(3):
      image[16 * r : 16 * (r + 1), 16 * c : 16 * (c + 1)] = 10 * (3 * r + c)
  patches = tok.image_to_patches(image)
  assert patches.shape == (6, 16, 16, 3) and patches.dtype == np.float32
  expected = (np.arange(6) * 10 / 255 * 2 - 1) / 4
  np.testing.assert_allclose(patches.reshape(6, -1).min(1), expected, rtol=1e-6)
  np.testing.assert_allclose(patches.reshape(6, -1).max(1), expected, rtol=1e-6)
  # The corner pixels of [-1, 1] / 4.
  full = tok.image_to_patches(np.full((16, 16, 3), 255, np.uint8))
  np.testing.assert_allclose(full, 0.25)
  np.testing.assert_allclose(tok.image_to_patches(np.zeros((16, 16, 3), np.uint8)), -0.25)


def test_unit_pixels_keep_black_at_zero_and_bad_names_are_refused():
  pixels = np.array([0, 51, 255], np.uint8)
  np.testing.assert_allclose(tok.normalize_patches(pixels, 'unit'), [0.0, 0.2, 1.0], rtol=1e-6)
  np.testing.assert_allclose(tok.normalize_patches(pixels, 'paper'), [-0.25, -0.15, 0.25],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="one of \\('paper', 'unit'\\), got 'imagenet'"):
    tok.normalize_patches(pixels, 'imagenet')


def test_patch_keeps_pixel_layout_inside_each_patch():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  patches = tok.patchify(image)
  np.testing.assert_array_equal(patches[1], image[:16, 16:])  # Row 0, column 1.
  np.testing.assert_array_equal(patches[2], image[16:, :16])  # Row 1, column 0.


@pytest.mark.parametrize(
  'image, message',
  [
    (np.zeros((16, 16), np.uint8), r'shape \[H, W, 3\]'),
    (np.zeros((16, 16, 3), np.float32), 'uint8'),
    (np.zeros((20, 16, 3), np.uint8), 'multiples of 16'),
  ],
)
def test_image_to_patches_rejects_bad_images(image, message):
  with pytest.raises(ValueError, match=message):
    tok.image_to_patches(image)


def test_patch_position_intervals_cover_128_buckets():
  intervals = tok.patch_position_intervals(80, 64)  # 5 rows x 4 columns of patches.
  assert intervals.shape == (20, 4)
  np.testing.assert_array_equal(intervals[0], [0, 25, 0, 32])
  np.testing.assert_array_equal(intervals[5], [25, 51, 32, 64])  # Row 1, column 1.
  np.testing.assert_array_equal(intervals[-1], [102, 128, 96, 128])
  assert np.all(intervals[:, 1] > intervals[:, 0]) and np.all(intervals[:, 3] > intervals[:, 2])


# -- layout and TaskSpec -------------------------------------------------------------------


def test_offsets_derive_from_the_text_vocab_size():
  layout = tok.TokenLayout(text_vocab_size=100)
  assert layout.discrete_offset == 100
  assert layout.continuous_offset == 100 + 1024
  assert layout.separator == 100 + 2048
  assert layout.vocab_size == 100 + 2048 + 2
  assert layout.action_token_range('continuous') == (1124, 2148)
  assert tok.TokenLayout(32000).continuous_offset == 33024


def _mixed_spec():
  return TaskSpec(
    'mixed',
    observation=[
      tok.ContinuousField('z_state', (2,)),
      tok.DiscreteField('a_grid', (2, 2), num_values=5),
      tok.ImageField('camera', 16, 32),
      tok.TextField('mission', max_tokens=6),
      tok.ContinuousField('arm/joints', (3,)),
    ],
    action=tok.ContinuousField('action', (2,), mu_law=False, low=-2.0, high=2.0),
  )


def test_order_is_text_images_then_other_fields_lexicographically(byte_vocabulary):
  spec = _mixed_spec()
  assert [f.name for f in spec.observation] == [
    'mission',
    'camera',
    'a_grid',
    'arm/joints',
    'z_state',
  ]
  assert spec.token_spans() == [
    ('mission', 0, 6),
    ('camera', 6, 8),
    ('a_grid', 8, 12),
    ('arm/joints', 12, 15),
    ('z_state', 15, 17),
    ('|', 17, 18),
    ('action', 18, 20),
  ]
  layout = tok.TokenLayout(300)
  observation = {
    'mission': 'go',
    'camera': np.full((16, 32, 3), 7, np.uint8),
    'a_grid': np.array([[0, 1], [2, 4]]),
    'arm': {'joints': np.array([0.0, 256.0, -256.0])},  # Nested: field 'arm/joints'.
    'z_state': np.array([0.0, 0.0], np.float32),
  }
  out = spec.tokenizer(layout, byte_vocabulary).tokenize_timestep(observation, [2.0, -2.0])
  t = out.tokens[0]
  assert len(t) == spec.tokens_per_timestep == 20
  np.testing.assert_array_equal(t[:6], [106, 114, 0, 0, 0, 0])  # 'go' in bytes, then pad.
  np.testing.assert_array_equal(t[6:8], [layout.image_placeholder] * 2)
  np.testing.assert_array_equal(t[8:12], np.array([0, 1, 2, 4]) + 300)  # Row-major.
  np.testing.assert_array_equal(t[12:15], np.array([512, 1023, 0]) + layout.continuous_offset)
  assert t[17] == layout.separator
  np.testing.assert_array_equal(t[18:], np.array([1023, 0]) + layout.continuous_offset)
  K = tok.TokenKind
  assert list(out.kinds[0]) == (
    [K.OBSERVATION_TEXT] * 6
    + [K.IMAGE] * 2
    + [K.OBSERVATION_DISCRETE] * 4
    + [K.OBSERVATION_CONTINUOUS] * 5
    + [K.SEPARATOR]
    + [K.ACTION_CONTINUOUS] * 2
  )
  np.testing.assert_array_equal(out.local_positions[0], list(range(2, 19)) + [1, 1, 1])
  np.testing.assert_array_equal(out.loss_mask[0], [False] * 18 + [True] * 2)
  assert out.patches.shape == (1, 2, 16, 16, 3) and out.patches.dtype == np.uint8
  np.testing.assert_array_equal(out.patch_positions[0], [[0, 128, 0, 64], [0, 128, 64, 128]])


def test_tokenize_steps_equals_one_timestep_at_a_time(byte_vocabulary):
  spec = _mixed_spec()
  task = spec.tokenizer(tok.TokenLayout(300), byte_vocabulary)
  rng = np.random.default_rng(1)
  steps = 5
  observations = {
    'mission': np.array(['go', 'open', 'go', 'a', '']),
    'camera': rng.integers(0, 256, (steps, 16, 32, 3), dtype=np.uint8),
    'a_grid': rng.integers(0, 5, (steps, 2, 2)),
    'arm/joints': rng.normal(size=(steps, 3)) * 10,
    'z_state': rng.normal(size=(steps, 2)),
  }
  actions = rng.uniform(-2, 2, (steps, 2))
  batched = task.tokenize_steps(observations, actions)
  for t in range(steps):
    single = task.tokenize_timestep({k: v[t] for k, v in observations.items()}, actions[t])
    for name in ('tokens', 'kinds', 'local_positions', 'patches', 'patch_positions'):
      np.testing.assert_array_equal(
        getattr(single, name)[0], getattr(batched, name)[t], err_msg=name
      )


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, (3,), elements=st.floats(-5, 5)))
def test_continuous_action_round_trip_within_half_a_bin(action):
  spec = TaskSpec(
    'reach',
    observation=[tok.DiscreteField('d', (), 2)],
    action=tok.ContinuousField('action', (3,), mu_law=False, low=-5.0, high=5.0),
  )
  task = spec.tokenizer(tok.TokenLayout(32000))
  tokens = task.tokenize_timestep({'d': 1}, action).tokens[0, spec.observation_tokens + 1 :]
  decoded = task.detokenize_action(tokens)
  assert decoded.shape == (3,)
  assert np.all(
    np.abs(decoded - action) <= HALF_BIN * 5.0 + 1e-5
  )  # Half a bin, scaled by (high - low) / 2.


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 17))
def test_discrete_action_round_trip_is_exact(action):
  spec = TaskSpec('atari', [tok.DiscreteField('d', (), 2)], tok.DiscreteField('action', (), 18))
  task = spec.tokenizer(tok.TokenLayout(32000))
  tokens = task.tokenize_timestep({'d': 0}, action).tokens[0, -1:]
  assert tokens[0] == 32000 + action
  decoded = task.detokenize_action(tokens)
  assert decoded.shape == () and int(decoded) == action


def test_mu_law_action_round_trip(byte_vocabulary):
  spec = TaskSpec(
    'torque', [tok.DiscreteField('d', (), 2)], tok.ContinuousField('action', (2,))
  )
  task = spec.tokenizer(tok.TokenLayout(32000))
  action = np.array([-30.0, 0.25])
  decoded = task.detokenize_action(task.tokenize_timestep({'d': 0}, action).tokens[0, -2:])
  error = np.abs(tok.mu_law_encode(decoded) - tok.mu_law_encode(action))
  assert np.all(error <= HALF_BIN + 1e-6)


def test_sentencepiece_text_field(sentencepiece_vocabulary):
  spec = TaskSpec('babyai', [tok.TextField('mission', 32)], tok.DiscreteField('action', (), 7))
  task = spec.tokenizer(tok.TokenLayout(64), sentencepiece_vocabulary)
  out = task.tokenize_timestep({'mission': 'pick up the blue key'}, 3)
  ids = list(sentencepiece_vocabulary.encode('pick up the blue key'))
  np.testing.assert_array_equal(out.tokens[0, : len(ids)], ids)
  assert np.all(out.tokens[0, len(ids) : 32] == sentencepiece_vocabulary.pad_id)
  assert sentencepiece_vocabulary.decode(ids) == 'pick up the blue key'


# -- bad input: ValueError naming the task and the field ----------------------------------


def _simple_spec():
  return TaskSpec(
    'robot',
    observation=[
      tok.ContinuousField('joints', (3,)),
      tok.DiscreteField('grid', (2,), num_values=1024),
      tok.ImageField('camera', 16, 16),
      tok.TextField('mission', 4),
    ],
    action=tok.ContinuousField('action', (2,), mu_law=False),
  )


def _simple_task(vocabulary=None):
  return _simple_spec().tokenizer(tok.TokenLayout(300), vocabulary)


def _good_observation():
  return {
    'joints': np.zeros(3, np.float32),
    'grid': np.array([0, 1023]),
    'camera': np.zeros((16, 16, 3), np.uint8),
    'mission': 'go',
  }


@pytest.mark.parametrize(
  'field, value, message',
  [
    ('joints', np.array([0.0, np.nan, 0.0]), r'non-finite value nan at step 0, index \(1,\)'),
    ('joints', np.array([0.0, 0.0, np.inf]), 'non-finite value inf'),
    ('joints', np.array([0.0, 300.0, 0.0]), 'beyond what the bins represent'),
    ('joints', np.zeros(4), r'expected shape \(3,\)'),
    ('grid', np.array([0, 1024]), r'value 1024 .* outside \[0, 1024\)'),
    ('grid', np.array([-1, 0]), r'value -1 .* outside'),
    ('grid', np.array([0.5, 1.0]), 'must be integers'),
    ('camera', np.zeros((16, 16), np.uint8), 'rank-3 image'),
    ('camera', np.zeros((16, 16, 3), np.float32), 'uint8'),
    ('camera', np.zeros((32, 16, 3), np.uint8), r'expected shape \(16, 16, 3\)'),
    ('mission', 'go to the red ball', 'more than max_tokens=4'),
  ],
)
def test_bad_observation_values_name_task_and_field(byte_vocabulary, field, value, message):
  observation = _good_observation()
  observation[field] = value
  with pytest.raises(ValueError, match=f"task 'robot', field '{field}': .*{message}"):
    _simple_task(byte_vocabulary).tokenize_timestep(observation, [0.0, 0.0])


def test_missing_and_unexpected_fields(byte_vocabulary):
  task = _simple_task(byte_vocabulary)
  observation = _good_observation()
  del observation['grid']
  with pytest.raises(ValueError, match="task 'robot', field 'grid': missing"):
    task.tokenize_timestep(observation, [0.0, 0.0])
  observation = {**_good_observation(), 'extra': np.zeros(2)}
  with pytest.raises(ValueError, match="task 'robot', field 'extra': not in the task spec"):
    task.tokenize_timestep(observation, [0.0, 0.0])


def test_bad_actions(byte_vocabulary):
  task = _simple_task(byte_vocabulary)
  with pytest.raises(ValueError, match="field 'action': value 1.5 .* beyond"):
    task.tokenize_timestep(_good_observation(), [1.5, 0.0])
  with pytest.raises(ValueError, match="field 'action': non-finite"):
    task.tokenize_timestep(_good_observation(), [np.nan, 0.0])
  with pytest.raises(ValueError, match="field 'action': expected 2 action tokens"):
    task.detokenize_action(np.array([1536]))
  with pytest.raises(
    ValueError, match=re.escape("field 'action': continuous tokens must lie in [1324, 2348)")
  ):
    task.detokenize_action(np.array([1324, 300]))


def test_saturation_and_truncation_only_where_the_spec_says_so(byte_vocabulary):
  spec = TaskSpec(
    'lenient',
    [tok.ContinuousField('x', (2,), saturate=True), tok.TextField('m', 2, truncate=True)],
    tok.DiscreteField('action', (), 3),
  )
  out = spec.tokenizer(tok.TokenLayout(300), byte_vocabulary).tokenize_timestep(
    {'x': np.array([-1e4, 1e4]), 'm': 'abc'}, 2
  )
  np.testing.assert_array_equal(out.tokens[0, :2], [97 + 3, 98 + 3])  # 'ab', cut to 2.
  np.testing.assert_array_equal(out.tokens[0, 2:4], [1324, 1324 + 1023])


def test_discrete_action_outside_its_range_is_rejected_when_decoding():
  spec = TaskSpec('grid', [tok.DiscreteField('d', (), 2)], tok.DiscreteField('action', (), 7))
  task = spec.tokenizer(tok.TokenLayout(300))
  with pytest.raises(ValueError, match=r"task 'grid', field 'action': token 307 .* \[300, 307\)"):
    task.detokenize_action(np.array([307]))
  with pytest.raises(ValueError, match=r"task 'grid', field 'action': value 7"):
    task.tokenize_timestep({'d': 0}, 7)


def test_spec_declarations_are_checked():
  with pytest.raises(ValueError, match="image field 'cam'.*multiples of 16"):
    tok.ImageField('cam', 84, 84)
  with pytest.raises(ValueError, match="discrete field 'x'.*num_values"):
    tok.DiscreteField('x', (), num_values=2000)
  with pytest.raises(ValueError, match="continuous field 'a'.*both low and high"):
    tok.ContinuousField('a', (1,), low=-1.0)
  with pytest.raises(ValueError, match="task 't': duplicate"):
    TaskSpec('t', [tok.DiscreteField('x'), tok.DiscreteField('x')], tok.DiscreteField('action'))


def test_vocabulary_must_fit_below_the_text_range(byte_vocabulary):
  spec = TaskSpec('babyai', [tok.TextField('mission', 4)], tok.DiscreteField('action', (), 7))
  with pytest.raises(ValueError, match='259 ids, more than text_vocab_size=100'):
    spec.tokenizer(tok.TokenLayout(100), byte_vocabulary)
  with pytest.raises(ValueError, match='has text fields but no vocabulary'):
    spec.tokenizer(tok.TokenLayout(300))


def test_check_steps_validates_without_a_vocabulary():
  # The dataset writer checks episodes before it has any vocabulary.
  spec = _simple_spec()
  observations = {k: np.asarray(v)[None] for k, v in _good_observation().items()}
  checked, actions = spec.check_steps(observations, np.zeros((1, 2)))
  assert checked['mission'].tolist() == ['go'] and actions.dtype == np.float32
  observations['joints'] = np.array([[0.0, 1.0, np.nan]])
  with pytest.raises(ValueError, match=r"task 'robot', field 'joints': non-finite .* step 0"):
    spec.check_steps(observations, np.zeros((1, 2)))
