"""The registered public RLDS sources (gato_jax/data/public_rlds.py's form), as data.

tasks.py registers each as the seqio task `gato_<name>` and weights them by `domain` in
the `gato_public` mixture.
"""

SOURCES: dict[str, dict] = {
  # RL Unplugged Atari: 84x84 grayscale frames, resized to the Atari spec's RGB size.
  'rlu_atari_pong': {
    'dataset': 'rlu_atari/Pong_run_1',
    'data_dir': None,
    'spec': 'atari_pong',
    'observation': {'pixels': 'observation'},
    'action': 'action',
    'domain': 'atari',
  },
  # RL Unplugged DM Control: the same cartpole body as the generated dmc_cartpole tasks.
  'rlu_control_suite_cartpole': {
    'dataset': 'rlu_control_suite/cartpole_swingup',
    'data_dir': None,
    'spec': 'dmc_cartpole_balance',
    'observation': {'position': 'observation/position', 'velocity': 'observation/velocity'},
    'action': 'action',
    'domain': 'dmc',
  },
  # Open X-Embodiment's RT-1 data, read in place from the project's bucket.
  'oxe_fractal': {
    'dataset': 'fractal20220817_data:0.1.0',
    'data_dir': 'gs://gresearch/robotics',
    'spec': 'oxe_fractal',
    'observation': {
      'image': 'observation/image',
      'instruction': 'observation/natural_language_instruction',
      'state': ['observation/base_pose_tool_reached', 'observation/gripper_closed'],
    },
    'action': ['action/world_vector', 'action/rotation_delta', 'action/gripper_closedness_action'],
    'domain': 'oxe',
  },
}
