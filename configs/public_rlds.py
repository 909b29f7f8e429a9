"""Public RLDS datasets mapped onto this project's TaskSpecs (they need the network).

  python -m data_pipelines.public_rlds --config=configs/public_rlds.py --source=rlu_atari_pong

Each source: `dataset` (TFDS name with its config), `spec` (a task in gato_jax/envs/specs.py
whose embodiment matches), `observation` (spec field -> path inside a step, or a list of
paths to concatenate) and `action` (path or list of paths).
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
    }
  )
  return config
