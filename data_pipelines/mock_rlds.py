"""A public dataset's published features filled with synthetic values, as a real RLDS dataset.

Public datasets (RL Unplugged, Open X-Embodiment) are too large, and too far away, for tests
and benchmarks to read. What the reader depends on is their *form*: the step features, how
each is encoded in the files (JPEG or PNG images, zlib tensors, strings) and where TFDS finds
them. This module owns that form, once, for everything that stands in for a public dataset:

  OXE_FEATURES, oxe_features  Open X-Embodiment's published step features (TFDS catalog
                              pages, version 0.1.0): not in TFDS's code, so written out here.
                              RL Unplugged's come from TFDS's own builders offline, e.g.
                              `tfds.builder('rlu_atari/Pong_run_1').info.features`.
  value, episode              valid values for any features: they fit every spec the catalog
                              maps onto (ints index any action set, floats in action bounds).
  write                       episodes of those values written by TFDS itself (tfrecord
                              shards, dataset_info.json, features.json) under the dataset's
                              own name, so `tfds.builder(name, data_dir=...)` (the reader's
                              `public_rlds.builder`) reads them in place, decoding images as
                              the published files make it.

tests/test_public_catalog.py checks every catalog source against these features;
benchmarks/pipeline.py measures the reader on datasets written by `write`.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

f = tfds.features

STEPS = 3  # Steps per episode unless asked: enough for first, middle and last.
INSTRUCTION = 'put the red block in the bowl'
EPISODE_ID = 7  # The id `episode` gives, distinct from any index a reader might make up.
BRIGHT = 200  # The top half of every frame: a reader that flips or shifts frames shows it.


# ----------------------------------------------------------------------------------------
# Published features.
# ----------------------------------------------------------------------------------------


def tensor(*shape: int, dtype: Any = np.float32, encoding: Any = f.Encoding.NONE) -> f.Tensor:
  """A step tensor as the catalog pages print it: shape, dtype and (kuka) zlib encoding."""
  return f.Tensor(shape=shape, dtype=dtype, encoding=encoding)


def image(height: int, width: int) -> f.Image:
  """An Open X-Embodiment camera frame: RGB, stored JPEG-encoded in the published files, so
  reading one costs a JPEG decode as it does on the real data."""
  return f.Image(shape=(height, width, 3), dtype=np.uint8, encoding_format='jpeg')


_RT1_ACTION = {
  'gripper_closedness_action': tensor(1),
  'rotation_delta': tensor(3),
  'terminate_episode': tensor(3, dtype=np.int32),
  'world_vector': tensor(3),
}
# Dataset -> (action, observation without the language fields). Episode metadata no
# mapping reads is left out; the language embedding stays, as every dataset has it.
OXE_FEATURES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
  'fractal20220817_data': (
    {
      **_RT1_ACTION,
      'base_displacement_vector': tensor(2),
      'base_displacement_vertical_rotation': tensor(1),
    },
    {'base_pose_tool_reached': tensor(7), 'gripper_closed': tensor(1), 'image': image(256, 320)},
  ),
  'kuka': (
    {
      **_RT1_ACTION,
      'base_displacement_vector': tensor(2),
      'base_displacement_vertical_rotation': tensor(1),
    },
    {
      # Stored zlib-compressed; the key holds a '/', so no '/'-path can name it.
      'clip_function_input/base_pose_tool_reached': tensor(7, encoding=f.Encoding.ZLIB),
      'clip_function_input/workspace_bounds': tensor(3, 3),
      'gripper_closed': tensor(1, encoding=f.Encoding.ZLIB),
      'height_to_bottom': tensor(1),
      'image': image(512, 640),
      'task_id': tensor(1, encoding=f.Encoding.ZLIB),
    },
  ),
  'bridge': (
    {
      'open_gripper': tensor(dtype=np.bool_),
      'rotation_delta': tensor(3),
      'terminate_episode': tensor(),
      'world_vector': tensor(3),
    },
    {'image': image(480, 640), 'state': tensor(7)},
  ),
  'taco_play': (
    {
      'actions': tensor(7),
      'rel_actions_gripper': tensor(7),
      'rel_actions_world': tensor(7),
      'terminate_episode': tensor(),
    },
    {
      'depth_gripper': tensor(84, 84),
      'depth_static': tensor(150, 200),
      'rgb_gripper': image(84, 84),
      'rgb_static': image(150, 200),
      'robot_obs': tensor(15),
      'structured_language_instruction': tensor(dtype=np.str_),
    },
  ),
  'jaco_play': (
    {
      'gripper_closedness_action': tensor(1),
      'terminate_episode': tensor(3, dtype=np.int32),
      'world_vector': tensor(3),
    },
    {
      'end_effector_cartesian_pos': tensor(7),
      'end_effector_cartesian_velocity': tensor(6),
      'image': image(224, 224),
      'image_wrist': image(224, 224),
      'joint_pos': tensor(8),
    },
  ),
  'berkeley_cable_routing': (
    {'rotation_delta': tensor(3), 'terminate_episode': tensor(), 'world_vector': tensor(3)},
    {
      'image': image(128, 128),
      'robot_state': tensor(7),
      'top_image': image(128, 128),
      'wrist225_image': image(128, 128),
      'wrist45_image': image(128, 128),
    },
  ),
  'roboturk': (
    {**_RT1_ACTION, 'terminate_episode': tensor()},
    {'front_rgb': image(480, 640)},
  ),
  'nyu_door_opening_surprising_effectiveness': (
    {**_RT1_ACTION, 'terminate_episode': tensor()},
    {'image': image(720, 960)},
  ),
  'viola': (
    {
      'gripper_closedness_action': tensor(),
      'rotation_delta': tensor(3),
      'terminate_episode': tensor(),
      'world_vector': tensor(3),
    },
    {
      'agentview_rgb': image(224, 224),
      'ee_states': tensor(16),
      'eye_in_hand_rgb': image(224, 224),
      'gripper_states': tensor(1),
      'joint_states': tensor(7),
    },
  ),
  'berkeley_autolab_ur5': (
    {
      'gripper_closedness_action': tensor(),
      'rotation_delta': tensor(3),
      'terminate_episode': tensor(),
      'world_vector': tensor(3),
    },
    {
      'hand_image': image(480, 640),
      'image': image(480, 640),
      # A depth map: float32 frames, which TFDS stores PNG-encoded.
      'image_with_depth': f.Image(shape=(480, 640, 1), dtype=np.float32),
      'robot_state': tensor(15),
    },
  ),
}


def oxe_features(dataset: str, widen: str | None = None) -> f.FeaturesDict:
  """`dataset`'s published features; `widen` (a '/'-path in a step) gets one more value, a
  misfit for tests of the reader's errors."""
  action, observation = OXE_FEATURES[dataset]
  step = {
    'action': dict(action),
    'is_first': tensor(dtype=np.bool_),
    'is_last': tensor(dtype=np.bool_),
    'is_terminal': tensor(dtype=np.bool_),
    'observation': {
      **observation,
      'natural_language_embedding': tensor(512),
      'natural_language_instruction': tensor(dtype=np.str_),
    },
    'reward': f.Scalar(dtype=np.float32),
  }
  if widen:
    group, key = widen.split('/')
    step[group][key] = tensor(step[group][key].shape[0] + 1)
  episode_features = {'steps': f.Dataset(step)}
  if dataset == 'kuka':
    episode_features['success'] = tensor(dtype=np.bool_)
  return f.FeaturesDict(episode_features)


# ----------------------------------------------------------------------------------------
# Synthetic values that fit every spec.
# ----------------------------------------------------------------------------------------


def value(
  feature: Any, t: int, steps: int = STEPS, noise: np.random.Generator | None = None
) -> Any:
  """Step t's value of a feature. Images are top-half bright (plus, with `noise`, a camera's
  grain, so that encoded frames are as large and slow to decode as real ones); ints are
  t % 3, an index into any action set; floats lie in [0, 0.6], inside every action bound;
  bools are True on the last step; strings are the instruction."""
  if isinstance(feature, f.FeaturesDict):
    return {k: value(v, t, steps, noise) for k, v in feature.items()}
  if isinstance(feature, f.Image):
    frame = np.zeros(feature.shape, feature.np_dtype)
    frame[: feature.shape[0] // 2] = BRIGHT
    if noise is not None:
      grain = noise.integers(-8, 9, feature.shape) + frame.astype(np.int32)
      frame = np.clip(grain, 0, 255).astype(feature.np_dtype)
    return frame
  if feature.tf_dtype == tf.string:
    return INSTRUCTION
  if feature.tf_dtype == tf.bool:
    return np.full(feature.shape, t == steps - 1)
  if feature.tf_dtype.is_integer:
    return np.full(feature.shape, t % 3, feature.np_dtype)
  pattern = (np.arange(int(np.prod(feature.shape))) % 5 + t % 3) / 10
  return pattern.reshape(feature.shape).astype(feature.np_dtype)


def episode(
  features: f.FeaturesDict,
  steps: int = STEPS,
  episode_id: int = EPISODE_ID,
  noise: np.random.Generator | None = None,
) -> dict[str, Any]:
  """One episode of `features` (with a nested `steps` dataset): metadata, `steps` steps."""
  step = features['steps'].feature
  out = {k: value(v, 0, steps, noise) for k, v in features.items() if k != 'steps'}
  if 'episode_id' in features:
    out['episode_id'] = episode_id
  return {**out, 'steps': [value(step, t, steps, noise) for t in range(steps)]}


# ----------------------------------------------------------------------------------------
# Writing: TFDS's own writer under the dataset's name.
# ----------------------------------------------------------------------------------------


def _builder_class(
  name: str, version: str, features: f.FeaturesDict, episodes: int, steps: int, noisy: bool
) -> type[tfds.core.GeneratorBasedBuilder]:
  """A builder for `name` ('dataset' or 'dataset/config') that generates the episodes.

  It is not registered, so a name TFDS's code already has (rlu_atari, fractal20220817_data)
  is free to take: the files land where that registered builder looks for prepared data.
  """
  dataset, _, config = name.partition('/')

  def _info(self: Any) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=f'Synthetic episodes with the features of {name}.',
      features=features,
    )

  def _split_generators(self: Any, dl_manager: Any) -> Mapping[str, Iterator[Any]]:
    del dl_manager  # Nothing to download.
    return {'train': self._generate_examples()}

  def _generate_examples(self: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for i in range(episodes):
      noise = np.random.default_rng(i) if noisy else None
      yield i, episode(features, steps, episode_id=i, noise=noise)

  def body(namespace: dict[str, Any]) -> None:
    namespace.update(
      name=dataset,
      VERSION=tfds.core.Version(version),
      BUILDER_CONFIGS=[tfds.core.BuilderConfig(name=config)] if config else [],
      _info=_info,
      _split_generators=_split_generators,
      _generate_examples=_generate_examples,
    )

  return types.new_class(
    f'Mock_{dataset}', (tfds.core.GeneratorBasedBuilder,), {'skip_registration': True}, body
  )


def write(
  name: str,
  version: str,
  features: f.FeaturesDict,
  episodes: int,
  data_dir: str,
  steps: int = STEPS,
  noisy: bool = True,
) -> str:
  """Writes `episodes` episodes of `steps` steps with `features` as TFDS dataset `name`
  ('dataset' or 'dataset/config') at `version` under `data_dir`; returns its directory.

  `tfds.builder(name + ':' + version, data_dir=data_dir)` then opens the files, and so does
  a code-registered name without a version (its code's version must be `version`). Episode
  i has episode_id i; `noisy` frames carry a camera's grain (see `value`). A dataset already
  written there is left as it is.
  """
  cls = _builder_class(name, version, features, episodes, steps, noisy)
  _, _, config = name.partition('/')
  builder = cls(data_dir=data_dir, config=config or None)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
  )
  return str(builder.data_dir)
