"""Public RLDS datasets map onto TaskSpecs; tested offline with tfds.testing.mock_data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import public_rlds
from data_pipelines.public_rlds import _fit_image, read_public_episodes
from gato_jax import tokenizer as tok

SOURCES = public_rlds.get_config().sources


def test_rlu_control_suite_maps_onto_the_dmc_cartpole_spec():
  with tfds.testing.mock_data(num_examples=2):
    read = list(read_public_episodes(SOURCES.rlu_control_suite_cartpole))
  assert len(read) == 2
  for episode in read:
    assert episode.task == 'dmc_cartpole_balance'
    assert episode.env == 'rlu_control_suite/cartpole_swingup'
    assert episode.observations['position'].shape[1:] == (3,)
    assert episode.observations['velocity'].shape[1:] == (2,)
    assert episode.actions.shape[1:] == (1,) and episode.actions.dtype == np.float32


def test_data_that_does_not_fit_the_spec_names_dataset_and_episode():
  # Mock Atari actions are random bytes, far outside Pong's 6 actions.
  with tfds.testing.mock_data(num_examples=1):
    with pytest.raises(
      ValueError,
      match=r"dataset rlu_atari/Pong_run_1, episode \d+: task 'atari_pong', field 'action': "
      r'value \d+ at step 0',
    ):
      list(read_public_episodes(SOURCES.rlu_atari_pong))


def test_a_mapping_to_a_field_the_spec_lacks_is_refused():
  source = SOURCES.rlu_control_suite_cartpole.copy_and_resolve_references()
  source.observation['angle'] = 'observation/position'
  with pytest.raises(ValueError, match=r"names \['angle'\], which task 'dmc_cartpole_balance'"):
    next(read_public_episodes(source))


def test_grayscale_frames_become_rgb_of_the_spec_size():
  frames = np.zeros((2, 84, 84, 1), np.uint8)
  frames[:, :42] = 200  # Top half bright.
  field = tok.ImageField('pixels', 80, 64)
  out = _fit_image(frames, field)
  assert out.shape == (2, 80, 64, 3) and out.dtype == np.uint8
  assert out[0, 5, 5].tolist() == [200, 200, 200] and out[0, 75, 5].tolist() == [0, 0, 0]
