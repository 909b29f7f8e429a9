"""Training on my_robot's own RLDS dataset mixed with generated CartPole, config only.

docs/adding_a_dataset.md walks through it:

  python docs/examples/write_my_robot.py --data_dir=/tmp/my_robot/tfds
  python -m data_pipelines.public_rlds describe my_robot --data_dir=/tmp/my_robot/tfds \
      --config=configs/demo.py
  python -m data_pipelines.prepare --config=docs/examples/my_robot_config.py
  python -m gato_jax.train --config=docs/examples/my_robot_config.py --workdir=/tmp/my_robot/run
"""

import ml_collections

from configs import demo


def get_config() -> ml_collections.ConfigDict:
  config = demo.get_config()  # The CPU demo's model: describe sized the image for it.
  config.total_steps = 5  # Enough to see it train; a real run takes the demo's 1000 or more.
  config.checkpoint_every_steps = 5
  config.log_every_steps = 1
  # The generated half: CartPole episodes, written by data_pipelines.prepare.
  config.data.data_dir = '/tmp/my_robot/generated'
  config.data.episodes_per_task = 5
  config.data.task_episodes = ''
  config.data.max_episode_steps = 100
  # Pasted from `describe my_robot`; both CONFIRM lines checked against the robot's logger:
  # instructions are at most 24 bytes, and every action part lies in [-1, 1].
  config.data.specs['my_robot'] = {
    'observation': [
      {'type': 'text', 'name': 'instruction', 'max_tokens': 32},
      {'type': 'image', 'name': 'image', 'height': 112, 'width': 144},
      {'type': 'continuous', 'name': 'state', 'shape': [7]},
    ],
    'action': {
      'type': 'continuous',
      'name': 'action',
      'shape': [7],
      'mu_law': False,
      'low': -1.0,
      'high': 1.0,
    },
  }
  config.data.public_sources['my_robot'] = {
    'dataset': 'my_robot',
    'data_dir': '/tmp/my_robot/tfds',
    'spec': 'my_robot',
    'observation': {
      'image': 'observation/image',
      'instruction': 'language_instruction',
      'state': ['observation/gripper_width', 'observation/joint_positions'],
    },
    'action': ['action/gripper', 'action/joint_velocities'],
    'domain': 'other',
  }
  # The source is the seqio task gato_my_robot; a mixture takes it next to a generated task.
  config.data.mixtures['my_robot_and_cartpole'] = {'gato_my_robot': 1.0, 'gato_cartpole': 1.0}
  config.data.mixture = 'my_robot_and_cartpole'
  return config
