"""Public RLDS datasets map onto TaskSpecs; tested offline with tfds.testing.mock_data."""

import json

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import public_rlds as public_rlds_config
from data_pipelines.public_rlds import DatasetUnavailableError, read_public_episodes
from gato_jax import specs
from gato_jax import tokenizer as tok
from gato_jax.data import public_rlds

SOURCES = public_rlds_config.get_config().sources


def test_rlu_control_suite_maps_onto_the_dmc_cartpole_spec():
  with tfds.testing.mock_data(num_examples=2):
    read = list(read_public_episodes(SOURCES.rlu_control_suite_cartpole_swingup))
  assert len(read) == 2
  for episode in read:
    assert episode.task == 'dmc_cartpole_balance'
    assert episode.env == 'rlu_control_suite/cartpole_swingup'
    assert episode.observations['position'].shape[1:] == (3,)
    assert episode.observations['velocity'].shape[1:] == (2,)
    assert episode.actions.shape[1:] == (1,) and episode.actions.dtype == np.float32


def test_data_that_does_not_fit_the_spec_names_dataset_and_episode():
  # Mock Atari actions are random bytes, far outside ALE's 18 actions.
  with tfds.testing.mock_data(num_examples=1):
    with pytest.raises(
      ValueError,
      match=r'dataset rlu_atari/Pong_run_1, episode rlu_atari-train.tfrecord-\d+-of-\d+__\d+: '
      r"task 'rlu_atari', field 'action': "
      r'value \d+ at step 0',
    ):
      list(read_public_episodes(SOURCES.rlu_atari_pong))


def test_a_mapping_to_a_field_the_spec_lacks_is_refused():
  source = SOURCES.rlu_control_suite_cartpole_swingup.copy_and_resolve_references()
  source.observation['angle'] = 'observation/position'
  with pytest.raises(
    ValueError,
    match=r"must map every field of spec 'dmc_cartpole_balance' \(\['position', 'velocity'\]\) "
    r"and nothing else; unknown: \['angle'\]",
  ):
    next(read_public_episodes(source))


def test_grayscale_frames_become_rgb_of_the_spec_size():
  frames = np.zeros((2, 84, 84, 1), np.uint8)
  frames[:, :42] = 200  # Top half bright.
  field = tok.ImageField('pixels', 80, 64)
  out = public_rlds.fit_image(tf.constant(frames), field).numpy()
  assert out.shape == (2, 80, 64, 3) and out.dtype == np.uint8
  assert out[0, 5, 5].tolist() == [200, 200, 200] and out[0, 75, 5].tolist() == [0, 0, 0]


# ----------------------------------------------------------------------------------------
# Open X-Embodiment: fractal20220817_data (RT-1) onto the dataset-only spec 'oxe_fractal'.
# ----------------------------------------------------------------------------------------

FRACTAL_STEPS = 3


def _fractal_features() -> tfds.features.FeaturesDict:
  """The published features of fractal20220817_data's steps (its TFDS catalog page).

  TFDS takes an Open X-Embodiment dataset's features from its files in Google Cloud Storage,
  so offline the test writes them where mock_data looks. Episode metadata ('aspects',
  'attributes') is left out: no mapping reads it.
  """
  f = tfds.features
  return f.FeaturesDict(
    {
      'steps': f.Dataset(
        {
          'action': {
            'base_displacement_vector': f.Tensor(shape=(2,), dtype=np.float32),
            'base_displacement_vertical_rotation': f.Tensor(shape=(1,), dtype=np.float32),
            'gripper_closedness_action': f.Tensor(shape=(1,), dtype=np.float32),
            'rotation_delta': f.Tensor(shape=(3,), dtype=np.float32),
            'terminate_episode': f.Tensor(shape=(3,), dtype=np.int32),
            'world_vector': f.Tensor(shape=(3,), dtype=np.float32),
          },
          'is_first': f.Tensor(shape=(), dtype=np.bool_),
          'is_last': f.Tensor(shape=(), dtype=np.bool_),
          'is_terminal': f.Tensor(shape=(), dtype=np.bool_),
          'observation': {
            'base_pose_tool_reached': f.Tensor(shape=(7,), dtype=np.float32),
            'gripper_closed': f.Tensor(shape=(1,), dtype=np.float32),
            'image': f.Image(shape=(256, 320, 3), dtype=np.uint8),
            'natural_language_embedding': f.Tensor(shape=(512,), dtype=np.float32),
            'natural_language_instruction': f.Tensor(shape=(), dtype=np.str_),
          },
          'reward': f.Scalar(dtype=np.float32),
        }
      )
    }
  )


def _fractal_step(t: int, instruction: str) -> dict:
  image = np.zeros((256, 320, 3), np.uint8)
  image[:128] = 200  # Top half bright.
  last = t == FRACTAL_STEPS - 1
  return {
    'action': {
      'base_displacement_vector': np.zeros(2, np.float32),
      'base_displacement_vertical_rotation': np.zeros(1, np.float32),
      'gripper_closedness_action': np.array([1.0 if last else -1.0], np.float32),
      'rotation_delta': np.array([-0.5, 0.0, 1.5], np.float32),
      'terminate_episode': np.array([0, 1, 0], np.int32),
      'world_vector': np.array([0.1, 0.2, 0.3], np.float32) * (t + 1),
    },
    'is_first': t == 0,
    'is_last': last,
    'is_terminal': last,
    'observation': {
      'base_pose_tool_reached': np.arange(7, dtype=np.float32) / 10 + t,
      'gripper_closed': np.array([t % 2], np.float32),
      'image': image,
      'natural_language_embedding': np.zeros(512, np.float32),
      'natural_language_instruction': instruction,
    },
    'reward': np.float32(last),
  }


INSTRUCTIONS = ('pick coke can', 'place brown chip bag into white bowl')


def _stacked(encoded):
  # TFDS 4.9.10 encodes a string inside a nested Dataset as a list of 0-d arrays, which
  # tf.data cannot convert (mock_data's own generator fails on it): stack every list.
  if isinstance(encoded, dict):
    return {k: _stacked(v) for k, v in encoded.items()}
  if isinstance(encoded, list):
    if np.asarray(encoded[0]).dtype.kind in 'OSU':
      return np.array([np.asarray(v).item() for v in encoded], dtype=object)
    return np.stack(encoded)
  return encoded


def _fractal_as_dataset(builder, *args, **kwargs):
  """Stands in for reading the files: episodes of known values, encoded with the features."""
  features = builder.info.features
  encoded = [
    _stacked(
      features.encode_example({'steps': [_fractal_step(t, i) for t in range(FRACTAL_STEPS)]})
    )
    for i in INSTRUCTIONS
  ]
  signature = tf.nest.map_structure(
    lambda info: tf.TensorSpec(info.shape, info.tf_dtype), features.get_serialized_info()
  )
  ds = tf.data.Dataset.from_generator(lambda: iter(encoded), output_signature=signature)
  return ds.map(features.decode_example)


@pytest.fixture(scope='module')
def fractal_metadata(tmp_path_factory):
  """A data_dir holding fractal's metadata, so tfds.load resolves the dataset offline."""
  data_dir = tmp_path_factory.mktemp('tfds')
  version_dir = data_dir / 'fractal20220817_data' / '0.1.0'
  version_dir.mkdir(parents=True)
  _fractal_features().save_config(str(version_dir))
  info = {'name': 'fractal20220817_data', 'version': '0.1.0', 'splits': [{'name': 'train'}]}
  (version_dir / 'dataset_info.json').write_text(json.dumps(info))
  return str(data_dir)


def _read_fractal(source, data_dir: str) -> list:
  with tfds.testing.mock_data(data_dir=data_dir, as_dataset_fn=_fractal_as_dataset):
    return list(read_public_episodes(source))


def test_open_x_embodiment_fractal_maps_onto_its_dataset_only_spec(fractal_metadata):
  read = _read_fractal(SOURCES.oxe_fractal, fractal_metadata)
  assert [e.observations['instruction'].tolist() for e in read] == [
    [text] * FRACTAL_STEPS for text in INSTRUCTIONS
  ]
  episode = read[0]
  assert episode.task == 'oxe_fractal' and episode.env == 'fractal20220817_data:0.1.0'
  image = episode.observations['image']
  assert image.shape == (FRACTAL_STEPS, 128, 160, 3) and image.dtype == np.uint8
  assert image[0, 5, 5].tolist() == [200, 200, 200] and image[0, 120, 5].tolist() == [0, 0, 0]
  for t in range(FRACTAL_STEPS):
    step = _fractal_step(t, INSTRUCTIONS[0])
    obs, act = step['observation'], step['action']
    state = np.concatenate([obs['base_pose_tool_reached'], obs['gripper_closed']])
    np.testing.assert_array_equal(episode.observations['state'][t], state)
    action = np.concatenate(
      [act['world_vector'], act['rotation_delta'], act['gripper_closedness_action']]
    )
    np.testing.assert_array_equal(episode.actions[t], action)
  assert episode.actions.dtype == np.float32
  assert episode.rewards.tolist() == [0.0, 0.0, 1.0] and episode.is_terminal


def test_fractal_episodes_tokenize_with_the_spec(fractal_metadata, byte_vocabulary):
  episode = _read_fractal(SOURCES.oxe_fractal, fractal_metadata)[1]
  spec = specs.get_spec('oxe_fractal')
  task_tokenizer = spec.tokenizer(tok.TokenLayout(512), byte_vocabulary)
  steps = task_tokenizer.tokenize_steps(episode.observations, episode.actions)
  # 80 text tokens, 8x10 image patches, 8 state values, '|', 7 action values.
  assert steps.tokens.shape == (FRACTAL_STEPS, 80 + 80 + 8 + 1 + 7)
  text_ids = list(byte_vocabulary.encode(INSTRUCTIONS[1]))
  assert steps.tokens[0, : len(text_ids)].tolist() == text_ids
  assert (steps.tokens[0, len(text_ids) : 80] == byte_vocabulary.pad_id).all()
  assert steps.patches.shape == (FRACTAL_STEPS, 80, 16, 16, 3)
  decoded = task_tokenizer.detokenize_action(steps.tokens[2, -7:])
  half_bin = np.pi / 2 / tok.NUM_BINS  # [-pi/2, pi/2] over 1024 bins, halved.
  assert np.max(np.abs(decoded - episode.actions[2])) <= half_bin + 1e-6


_SOURCE = r'public source fractal20220817_data:0\.1\.0: '
_EPISODE = r'dataset fractal20220817_data:0\.1\.0, episode 0: '


@pytest.mark.parametrize(
  'field, paths, message',
  [
    (
      'action',
      'action',
      _SOURCE + r"step field 'action' of fractal20220817_data:0.1.0 is a dict of "
      r"\['base_displacement_vector'",
    ),
    (
      'action',
      ['action/world_vector', 'action/rotation_delta'],
      _EPISODE
      + r"task 'oxe_fractal', field 'action': expected shape \(7,\) per step .* got \(6,\)",
    ),
    (
      'action',
      ['action/world_vector', 'action/rotation_deltas'],
      _SOURCE + r"dataset fractal20220817_data:0.1.0 has no step field 'action/rotation_deltas'",
    ),
    (
      'instruction',
      'observation/natural_language_embedding',
      _EPISODE + r"task 'oxe_fractal', field 'instruction': expected one string per step, got "
      r'shape \(512,\)',
    ),
    (
      'state',
      ['observation/base_pose_tool_reached', 'observation/natural_language_instruction'],
      _SOURCE + r"step field 'observation/natural_language_instruction' of "
      r"fractal20220817_data:0.1.0 is string, not a number: it cannot be concatenated into 'state'",
    ),
  ],
)
def test_a_wrong_fractal_mapping_names_dataset_episode_and_field(
  fractal_metadata, field, paths, message
):
  """A mapping that misses the dataset's features fails before any episode, naming the
  source and field; one whose values misfit the spec names the episode too."""
  source = SOURCES.oxe_fractal.to_dict()  # A plain dict: a path may become a list, or back.
  if field == 'action':
    source['action'] = paths
  else:
    source['observation'][field] = paths
  source = ml_collections.ConfigDict(source)
  with pytest.raises(ValueError, match=message):
    _read_fractal(source, fractal_metadata)


def test_dataset_only_specs_have_no_env_and_fit_the_paper_model():
  from configs import models
  from gato_jax import envs
  from gato_jax.model import ModelOptions, check_task_fits

  assert 'oxe_fractal' not in envs.task_names()
  model = ModelOptions.from_model_config(models.model_config('1b2'))
  for name, spec in specs.DATASET_SPECS.items():
    assert specs.get_spec(name) is spec
    check_task_fits(spec, model)  # Raises past the 1b2 model's 512 local positions.
    assert spec.tokens_per_timestep <= model.max_length
  assert specs.get_spec('oxe_fractal').observation_tokens == 168


def test_an_unreachable_dataset_says_what_to_do(monkeypatch):
  def offline(*args, **kwargs):
    raise RuntimeError('FailedPreconditionError: Could not resolve host: www.googleapis.com')

  monkeypatch.setattr(tfds, 'builder', offline)
  with pytest.raises(
    DatasetUnavailableError,
    match=r'cannot open dataset fractal20220817_data:0\.1\.0 in gs://gresearch/robotics: '
    r'FailedPreconditionError: Could not resolve host.*data.public_data_dir \(or --data_dir\)',
  ):
    next(read_public_episodes(SOURCES.oxe_fractal))


def test_dataset_only_tasks_have_no_environment():
  from gato_jax import envs

  with pytest.raises(ValueError, match='no environment'):
    envs.make_env('oxe_fractal', seed=0)
