"""A robot team's own logger: episodes of a made-up arm written as an RLDS dataset.

Nothing here is gato-jax: it is TFDS's own dataset writer, the way Open X-Embodiment's
datasets were made (a GeneratorBasedBuilder whose examples are episodes, their `steps` a
nested dataset). Replace `_episode` with your robot's recordings.

  python docs/examples/write_my_robot.py --data_dir=/tmp/my_robot/tfds --episodes=4
"""

import argparse

import numpy as np
import tensorflow_datasets as tfds

INSTRUCTIONS = ('pick up the red block', 'push the cup to the left', 'open the drawer')


class MyRobot(tfds.core.GeneratorBasedBuilder):
  """Episodes of a 6-joint arm: a scene camera, a wrist camera, joints and an instruction."""

  VERSION = tfds.core.Version('1.0.0')
  episodes = 4

  def _info(self) -> tfds.core.DatasetInfo:
    f = tfds.features
    step = {
      'observation': {
        'image': f.Image(shape=(120, 160, 3)),  # The scene camera.
        'wrist_image': f.Image(shape=(64, 64, 3)),
        'joint_positions': f.Tensor(shape=(6,), dtype=np.float32),
        'gripper_width': f.Tensor(shape=(1,), dtype=np.float32),
      },
      'language_instruction': f.Text(),
      'action': {
        'joint_velocities': f.Tensor(shape=(6,), dtype=np.float32),  # In [-1, 1].
        'gripper': f.Tensor(shape=(1,), dtype=np.float32),  # -1 open, 1 closed.
        'terminate_episode': f.Scalar(dtype=np.float32),
      },
      'reward': f.Scalar(dtype=np.float32),
      'discount': f.Scalar(dtype=np.float32),
      'is_first': np.bool_,
      'is_last': np.bool_,
      'is_terminal': np.bool_,
    }
    return tfds.core.DatasetInfo(
      builder=self,
      description='A made-up 6-joint arm, logged by its team.',
      features=f.FeaturesDict({'steps': f.Dataset(step), 'episode_id': np.int64}),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the episodes are ours.
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(self.episodes):
      yield i, {'steps': _episode(i), 'episode_id': i}


def _episode(seed: int, length: int = 12) -> list[dict]:
  """Stand-in for a recording: a bright block drifting across a dark table."""
  rng = np.random.default_rng(seed)
  instruction = INSTRUCTIONS[seed % len(INSTRUCTIONS)]
  steps = []
  for t in range(length):
    image = np.full((120, 160, 3), 40, np.uint8)
    x = 20 + 8 * t
    image[50:70, x : x + 20] = (200, 30, 30)
    last = t == length - 1
    steps.append(
      {
        'observation': {
          'image': image,
          'wrist_image': np.full((64, 64, 3), 10 * t, np.uint8),
          'joint_positions': rng.uniform(-1, 1, 6).astype(np.float32),
          'gripper_width': np.array([0.08 * (1 - t / length)], np.float32),
        },
        'language_instruction': instruction,
        'action': {
          'joint_velocities': rng.uniform(-1, 1, 6).astype(np.float32),
          'gripper': np.array([1.0 if t > length // 2 else -1.0], np.float32),
          'terminate_episode': np.float32(last),
        },
        'reward': np.float32(last),
        'discount': np.float32(1.0),
        'is_first': t == 0,
        'is_last': last,
        'is_terminal': last,
      }
    )
  return steps


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', required=True, help='Where TFDS writes my_robot/1.0.0.')
  parser.add_argument('--episodes', type=int, default=MyRobot.episodes)
  args = parser.parse_args()
  MyRobot.episodes = args.episodes
  builder = MyRobot(data_dir=args.data_dir)
  builder.download_and_prepare()
  print(f'wrote {args.episodes} episodes to {builder.data_dir}')
