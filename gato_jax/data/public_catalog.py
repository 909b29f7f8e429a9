"""The public RLDS datasets this project trains on, each mapped onto a TaskSpec: `SOURCES`.

A source names a TFDS dataset, the spec its episodes become and where each spec field lies in a
step (the mapping format and the reader: data_pipelines/public_rlds.py). Pure data: nothing here
imports TensorFlow, so configs and the mixture look sources up cheaply. Four families:

  atari  RL Unplugged Atari (TFDS `rlu_atari`): DQN replay of the 46 ALE games Gato played, 5
         runs each (configs '<Game>_run_<n>'). Run 1 of every game is registered as
         'rlu_atari_<game>'; `atari_source(game, run)` gives any other run. All games share the
         'rlu_atari' spec: frames resized to the env Atari size, actions bounded by ALE's 18.
  dmc    RL Unplugged DM Control Suite (TFDS `rlu_control_suite`): all 9 configs, as
         'rlu_control_suite_<config>'. cartpole_swingup takes the generated cartpole's spec
         (the same body); the others a dataset-only 'rlu_<config>' spec (specs.RLU_CONTROL_SUITE).
  dmlab  RL Unplugged DeepMind Lab (TFDS `rlu_dmlab_<level>`): the 5 levels, the first
         config of each ('training_0'), as 'rlu_dmlab_<level>', all on the 'rlu_dmlab' spec.
  oxe    Open X-Embodiment: the ten largest datasets of its mixture, read in place from the
         project's bucket (gs://gresearch/robotics, version 0.1.0 as published there), as
         'oxe_<robot>' on a dataset-only spec of the same name. Their step features are on the
         TFDS catalog pages (tensorflow.org/datasets/catalog/<dataset>).

Adding a source: read the dataset's step features (TFDS builder info offline for the code-
registered RL Unplugged builders, the catalog page for OXE), pick or add the spec in
gato_jax/specs/catalog.py, map it here and add it to tests/test_public_catalog.py.
"""

from __future__ import annotations

from typing import Any

from gato_jax.specs.catalog import RLU_CONTROL_SUITE

Source = dict[str, Any]

# The games of TFDS rlu_atari's BUILDER_CONFIGS, as its config names spell them.
ATARI_GAMES = (
  'Alien',
  'Amidar',
  'Assault',
  'Asterix',
  'Atlantis',
  'BankHeist',
  'BattleZone',
  'BeamRider',
  'Boxing',
  'Breakout',
  'Carnival',
  'Centipede',
  'ChopperCommand',
  'CrazyClimber',
  'DemonAttack',
  'DoubleDunk',
  'Enduro',
  'FishingDerby',
  'Freeway',
  'Frostbite',
  'Gopher',
  'Gravitar',
  'Hero',
  'IceHockey',
  'Jamesbond',
  'Kangaroo',
  'Krull',
  'KungFuMaster',
  'MsPacman',
  'NameThisGame',
  'Phoenix',
  'Pong',
  'Pooyan',
  'Qbert',
  'Riverraid',
  'RoadRunner',
  'Robotank',
  'Seaquest',
  'SpaceInvaders',
  'StarGunner',
  'TimePilot',
  'UpNDown',
  'VideoPinball',
  'WizardOfWor',
  'YarsRevenge',
  'Zaxxon',
)
ATARI_RUNS = 5  # DQN training runs logged per game: configs <Game>_run_1 .. _run_5.


def atari_source(game: str, run: int) -> Source:
  """RL Unplugged Atari run `run` (1-5) of `game` (as spelled in ATARI_GAMES, e.g. 'MsPacman').

  Every run of every game has the same mapping; only the TFDS config differs, so a mixture
  that wants more Atari data adds `atari_source(game, 2)` and so on.
  """
  if game not in ATARI_GAMES:
    raise ValueError(f'unknown RL Unplugged Atari game {game!r}; known games: {ATARI_GAMES}')
  if not 1 <= run <= ATARI_RUNS:
    raise ValueError(f'RL Unplugged Atari has runs 1 to {ATARI_RUNS}, got {run}')
  return {
    'dataset': f'rlu_atari/{game}_run_{run}',
    'data_dir': None,
    'spec': 'rlu_atari',
    'observation': {'pixels': 'observation'},  # 84x84x1 grayscale, resized and made RGB.
    'action': 'action',  # int64 index into the game's minimal action set.
    'domain': 'atari',
  }


def _control_suite_source(config: str) -> Source:
  # Observation fields carry the dataset's own names, so the spec's names are the paths.
  if config == 'cartpole_swingup':
    spec, fields = 'dmc_cartpole_balance', ('position', 'velocity')
  else:
    spec, fields = f'rlu_{config}', tuple(RLU_CONTROL_SUITE[config][0])
  return {
    'dataset': f'rlu_control_suite/{config}',
    'data_dir': None,
    'spec': spec,
    'observation': {name: f'observation/{name}' for name in fields},
    'action': 'action',
    'domain': 'dmc',
  }


DMLAB_LEVELS = (
  'explore_object_rewards_few',
  'explore_object_rewards_many',
  'rooms_select_nonmatching_object',
  'rooms_watermaze',
  'seekavoid_arena01',
)


def _dmlab_source(level: str) -> Source:
  return {
    'dataset': f'rlu_dmlab_{level}/training_0',
    'data_dir': None,
    'spec': 'rlu_dmlab',
    'observation': {'pixels': 'observation/pixels'},  # 72x96 RGB.
    'action': 'action',
    'domain': 'dmlab',
  }


OXE_DATA_DIR = 'gs://gresearch/robotics'

# Open X-Embodiment: spec/source short name -> (dataset, observation, action). The action parts
# are listed in the spec's order; terminate_episode parts are episode bookkeeping, not actions.
_RT1_ACTION = ['action/world_vector', 'action/rotation_delta', 'action/gripper_closedness_action']
_OXE: dict[str, tuple[str, dict[str, Any], list[str]]] = {
  # RT-1 (Google's mobile manipulator): tool pose (7) and gripper closedness (1).
  'fractal': (
    'fractal20220817_data',
    {
      'image': 'observation/image',
      'instruction': 'observation/natural_language_instruction',
      'state': ['observation/base_pose_tool_reached', 'observation/gripper_closed'],
    },
    _RT1_ACTION,
  ),
  'kuka': (
    'kuka',
    {
      'image': 'observation/image',
      'instruction': 'observation/natural_language_instruction',
      'state': ['observation/gripper_closed', 'observation/height_to_bottom'],
    },
    _RT1_ACTION,
  ),
  'bridge': (
    'bridge',
    {
      'image': 'observation/image',
      'instruction': 'observation/natural_language_instruction',
      'state': 'observation/state',
    },
    ['action/world_vector', 'action/rotation_delta', 'action/open_gripper'],
  ),
  'taco_play': (
    'taco_play',
    {
      'image': 'observation/rgb_static',
      'instruction': 'observation/natural_language_instruction',
      'state': 'observation/robot_obs',
    },
    ['action/rel_actions_world'],
  ),
  'jaco_play': (
    'jaco_play',
    {
      'image': 'observation/image',
      'instruction': 'observation/natural_language_instruction',
      'state': ['observation/end_effector_cartesian_pos', 'observation/joint_pos'],
    },
    ['action/world_vector', 'action/gripper_closedness_action'],
  ),
  'cable_routing': (
    'berkeley_cable_routing',
    {
      'image': 'observation/image',
      'instruction': 'observation/natural_language_instruction',
      'state': 'observation/robot_state',
    },
    ['action/world_vector', 'action/rotation_delta'],
  ),
  'roboturk': (
    'roboturk',
    {'image': 'observation/front_rgb', 'instruction': 'observation/natural_language_instruction'},
    _RT1_ACTION,
  ),
  'nyu_door': (
    'nyu_door_opening_surprising_effectiveness',
    {'image': 'observation/image', 'instruction': 'observation/natural_language_instruction'},
    _RT1_ACTION,
  ),
  'viola': (
    'viola',
    {
      'image': 'observation/agentview_rgb',
      'instruction': 'observation/natural_language_instruction',
      'state': ['observation/joint_states', 'observation/gripper_states'],
    },
    _RT1_ACTION,
  ),
  'ur5': (
    'berkeley_autolab_ur5',
    {
      'image': 'observation/image',
      'instruction': 'observation/natural_language_instruction',
      'state': 'observation/robot_state',
    },
    _RT1_ACTION,
  ),
}
OXE_VERSION = '0.1.0'


def _oxe_source(short: str) -> Source:
  dataset, observation, action = _OXE[short]
  return {
    # The version makes TFDS read the prepared files in place instead of preparing a copy.
    'dataset': f'{dataset}:{OXE_VERSION}',
    'data_dir': OXE_DATA_DIR,
    'spec': f'oxe_{short}',
    'observation': observation,
    'action': action[0] if len(action) == 1 else list(action),
    'domain': 'oxe',
  }


SOURCES: dict[str, Source] = {
  **{f'rlu_atari_{game.lower()}': atari_source(game, 1) for game in ATARI_GAMES},
  **{
    f'rlu_control_suite_{config}': _control_suite_source(config)
    for config in ('cartpole_swingup', *RLU_CONTROL_SUITE)
  },
  **{f'rlu_dmlab_{level}': _dmlab_source(level) for level in DMLAB_LEVELS},
  **{f'oxe_{short}': _oxe_source(short) for short in _OXE},
}
