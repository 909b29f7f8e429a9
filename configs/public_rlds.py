"""Public RLDS datasets mapped onto this project's TaskSpecs (they need the network).

  python -m data_pipelines.public_rlds --config=configs/public_rlds.py --source=oxe_fractal

Each source: `dataset` (TFDS name with its config, and a version where the dataset is read
from prepared files), `spec` (a task in gato_jax/specs/catalog.py whose embodiment matches:
TASK_SPECS, or DATASET_SPECS for a robot with no environment here), `observation` (spec
field -> path inside a step, or a list of paths to concatenate), `action` (path or list of
paths: Open X-Embodiment actions are dicts, so list their parts in the order the spec's
action has them) and, optionally, `data_dir` (where the prepared dataset lives; --data_dir
overrides it).

Adding a source: read the dataset's feature structure on its TFDS catalog page, pick or add
the spec (an image field is resized to the spec's size, a text field takes the instruction
string), write the mapping here, and test it offline as tests/test_public_rlds.py does.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.sources = ml_collections.ConfigDict(
    {
      # RL Unplugged Atari: 84x84 grayscale frames, resized to the Atari spec's RGB size.
      'rlu_atari_pong': {
        'dataset': 'rlu_atari/Pong_run_1',
        'spec': 'atari_pong',
        'observation': {'pixels': 'observation'},
        'action': 'action',
      },
      # RL Unplugged DM Control: the same cartpole body as the generated dmc_cartpole tasks.
      'rlu_control_suite_cartpole': {
        'dataset': 'rlu_control_suite/cartpole_swingup',
        'spec': 'dmc_cartpole_balance',
        'observation': {'position': 'observation/position', 'velocity': 'observation/velocity'},
        'action': 'action',
      },
      # Open X-Embodiment's RT-1 data: 256x320 frames, halved to the spec's 128x160. The
      # project publishes it prepared in its own bucket; the version in the name makes TFDS
      # read those files in place instead of preparing a copy.
      'oxe_fractal': {
        'dataset': 'fractal20220817_data:0.1.0',
        'data_dir': 'gs://gresearch/robotics',
        'spec': 'oxe_fractal',
        'observation': {
          'image': 'observation/image',
          'instruction': 'observation/natural_language_instruction',
          'state': ['observation/base_pose_tool_reached', 'observation/gripper_closed'],
        },
        'action': [
          'action/world_vector',
          'action/rotation_delta',
          'action/gripper_closedness_action',
        ],
      },
    }
  )
  return config
