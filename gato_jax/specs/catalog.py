"""The TaskSpecs of the environments this project generates data from and evaluates in.

One spec per task name; the data pipeline, the seqio tasks and the evaluator all look tasks
up through `gato_jax.specs.get_spec`, so a task is tokenized the same way everywhere. This
module is pure data: it imports no simulator, so looking a spec up stays cheap where no
environment runs. Expert and random returns are not part of a spec: the dataset generator
measures them and records them with each dataset (metadata.json). DATASET_SPECS adds the
embodiments known only from a public dataset, which have no environment here.
"""

from __future__ import annotations

import math

from gato_jax.specs.task_spec import TaskSpec
from gato_jax.tokenizer import ContinuousField, DiscreteField, ImageField, TextField


# minigrid's symbolic 7x7 view: (object, colour, state) per cell; object ids go up to 10.
# Missions of the local levels are at most 42 bytes; BossLevel's compound missions reach 144
# bytes in 300 sampled levels, so its text field is longer (fewer with SentencePiece).
def _babyai_observation(mission_tokens: int) -> tuple[TextField, DiscreteField, DiscreteField]:
  return (
    TextField('mission', max_tokens=mission_tokens),
    DiscreteField('image', (7, 7, 3), num_values=11),
    DiscreteField('direction', (), num_values=4),
  )


_BABYAI_LEVELS = ('GoToRedBall', 'GoToLocal', 'PickupLoc', 'PutNextLocal', 'BossLevel')

# Meta-World v3 tasks whose scripted policy solves them (docs/environments.md). The arm is
# driven by 3 end-effector deltas and a gripper command, all in [-1, 1]: binned directly.
_METAWORLD_TASKS = ('reach', 'push', 'pick-place', 'drawer-close', 'door-open')

# DM Control suite: (domain, task) -> observation fields as dm_control names and shapes them.
# Every action here lies in [-1, 1]: binned directly, no mu-law.
_DMC_TASKS: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {
  ('cartpole', 'balance'): {'position': (3,), 'velocity': (2,)},
  ('point_mass', 'easy'): {'position': (2,), 'velocity': (2,)},
  ('reacher', 'easy'): {'position': (2,), 'to_target': (2,), 'velocity': (2,)},
}
_DMC_ACTION_DIMS = {'cartpole': 1, 'point_mass': 2, 'reacher': 2}
# Pixel tasks render one camera straight at this size (multiples of the 16-pixel patch).
DMC_PIXELS_SIZE = (64, 64)
_DMC_PIXEL_TASKS = (('cartpole', 'balance'),)

# Atari frames (210x160) are resized to 96x80 (HxW): halving the width keeps Pong's 2-pixel
# ball one pixel wide, and 96 rows keep the aspect ratio near the screen's in 6x5 = 30 patches.
ATARI_SIZE = (96, 80)
# Minimal action sets of the v5 ids (ale_py): Pong 6, Breakout 4.
_ATARI_GAMES = {'Pong': 6, 'Breakout': 4}


def _state(name: str, state_dim: int, action: DiscreteField | ContinuousField) -> TaskSpec:
  return TaskSpec(name, observation=(ContinuousField('state', (state_dim,)),), action=action)


def _unit_action(dims: int) -> ContinuousField:
  return ContinuousField('action', (dims,), mu_law=False, low=-1.0, high=1.0)


def _dmc_name(domain: str, task: str) -> str:
  return f'dmc_{domain}_{task}'


TASK_SPECS: dict[str, TaskSpec] = {
  spec.name: spec
  for spec in (
    _state('cartpole', 4, DiscreteField('action', (), num_values=2)),
    _state('acrobot', 6, DiscreteField('action', (), num_values=3)),
    _state('mountaincar', 2, DiscreteField('action', (), num_values=3)),
    # Pendulum's torque lies in [-2, 2]: mapped linearly onto the bins, no mu-law.
    _state('pendulum', 3, ContinuousField('action', (1,), mu_law=False, low=-2.0, high=2.0)),
    *(
      TaskSpec(
        f'babyai_{level.lower()}',
        observation=_babyai_observation(160 if level == 'BossLevel' else 48),
        action=DiscreteField('action', (), num_values=7),
      )
      for level in _BABYAI_LEVELS
    ),
    # 39 floats: hand position, gripper, two objects' poses, the previous frame, the goal.
    *(
      _state(f'metaworld_{task.replace("-", "_")}', 39, _unit_action(4))
      for task in _METAWORLD_TASKS
    ),
    *(
      TaskSpec(
        _dmc_name(domain, task),
        observation=tuple(ContinuousField(k, shape) for k, shape in fields.items()),
        action=_unit_action(_DMC_ACTION_DIMS[domain]),
      )
      for (domain, task), fields in _DMC_TASKS.items()
    ),
    *(
      TaskSpec(
        f'{_dmc_name(domain, task)}_pixels',
        observation=(ImageField('pixels', *DMC_PIXELS_SIZE),),
        action=_unit_action(_DMC_ACTION_DIMS[domain]),
      )
      for domain, task in _DMC_PIXEL_TASKS
    ),
    *(
      TaskSpec(
        f'atari_{game.lower()}',
        observation=(ImageField('pixels', *ATARI_SIZE),),
        action=DiscreteField('action', (), num_values=num_actions),
      )
      for game, num_actions in _ATARI_GAMES.items()
    ),
  )
}

# Which wrapper module builds each task (gato_jax/envs/<domain>.py, 'dmc' for DM Control).
DOMAINS: dict[str, str] = {
  name: name.split('_')[0] if '_' in name else 'classic' for name in TASK_SPECS
}

# Each task's id in its own package: a gymnasium id, a Meta-World env name, or a DM Control
# 'domain/task' (with '/pixels' for the pixel variant).
ENV_IDS: dict[str, str] = {
  'cartpole': 'CartPole-v1',
  'acrobot': 'Acrobot-v1',
  'mountaincar': 'MountainCar-v0',
  'pendulum': 'Pendulum-v1',
  **{f'babyai_{level.lower()}': f'BabyAI-{level}-v0' for level in _BABYAI_LEVELS},
  **{f'metaworld_{task.replace("-", "_")}': f'{task}-v3' for task in _METAWORLD_TASKS},
  **{_dmc_name(d, t): f'{d}/{t}' for d, t in _DMC_TASKS},
  **{f'{_dmc_name(d, t)}_pixels': f'{d}/{t}/pixels' for d, t in _DMC_PIXEL_TASKS},
  **{f'atari_{game.lower()}': f'ALE/{game}-v5' for game in _ATARI_GAMES},
}


# Open X-Embodiment's RT-1 data (fractal20220817_data, Google's mobile manipulator): 256x320
# camera frames halved to 128x160, 8x10 = 80 patches with the aspect kept. The state is the
# tool pose (xyz, quaternion) and the gripper's closedness; the action is RT-1's arm command:
# world_vector (3), rotation_delta (3) and gripper_closedness_action (1).
FRACTAL_SIZE = (128, 160)
# RT-1's instructions are at most 68 bytes ('pick green jalapeno chip bag from middle drawer
# and place on counter'); SentencePiece needs far fewer tokens.
_FRACTAL_INSTRUCTION_TOKENS = 80
# RT-1 bounds world_vector and the gripper to [-1, 1] and rotation_delta to [-pi/2, pi/2]: one
# range covers all three. RT-1 clips logged actions to its bounds before tokenizing, so a rare
# value beyond them takes the edge bin here too rather than rejecting its episode.
_FRACTAL_ACTION = ContinuousField(
  'action', (7,), mu_law=False, low=-math.pi / 2, high=math.pi / 2, saturate=True
)

# RL Unplugged's DM Control Suite (TFDS rlu_control_suite): each config's observation fields as
# its steps name them, with their shapes, and the action width. cartpole_swingup is left out: its
# cartpole body (position (3,), velocity (2,), a 1-wide action) is the generated dmc_cartpole
# tasks' exactly, so its episodes take the 'dmc_cartpole_balance' spec. walker_* and
# manipulator_* share a body but keep a spec per task, as the generated DMC tasks do.
RLU_CONTROL_SUITE: dict[str, tuple[dict[str, tuple[int, ...]], int]] = {
  'cheetah_run': ({'position': (8,), 'velocity': (9,)}, 6),
  'finger_turn_hard': (
    {'dist_to_target': (1,), 'position': (4,), 'target_position': (2,), 'velocity': (3,)},
    2,
  ),
  'fish_swim': ({'joint_angles': (7,), 'target': (3,), 'upright': (1,), 'velocity': (13,)}, 5),
  'humanoid_run': (
    {
      'com_velocity': (3,),
      'extremities': (12,),
      'head_height': (1,),
      'joint_angles': (21,),
      'torso_vertical': (3,),
      'velocity': (27,),
    },
    21,
  ),
  **{
    f'manipulator_{task}': (
      {
        'arm_pos': (16,),
        'arm_vel': (8,),
        'hand_pos': (4,),
        'object_pos': (4,),
        'object_vel': (3,),
        'target_pos': (4,),
        'touch': (5,),
      },
      5,
    )
    for task in ('insert_ball', 'insert_peg')
  },
  **{
    f'walker_{task}': ({'height': (1,), 'orientations': (14,), 'velocity': (9,)}, 6)
    for task in ('stand', 'walk')
  },
}

# RL Unplugged's DeepMind Lab frames are 72x96: upsampled to 80x96 (5x6 = 30 patches, as many
# as an Atari frame) so that no row of an already small frame is lost, where 64x96 would drop
# one in nine. The R2D2 agents that logged them chose among DMLab's 15 discrete actions.
DMLAB_SIZE = (80, 96)
_DMLAB_ACTIONS = 15

# Open X-Embodiment cameras keep their aspect at about 50-80 patches: 4:3 frames (480x640,
# 150x200) become 96x128 (6x8 = 48 patches), square ones (224x224, 128x128) 128x128 (64), 4:5
# ones (fractal's 256x320, kuka's 512x640) 128x160 (80). One camera per robot, the main one.
OXE_SIZE_4_3 = (96, 128)
OXE_SIZE_SQUARE = (128, 128)


def _oxe_action(dims: int, saturate: bool = False) -> ContinuousField:
  """A robot's arm command binned over [-1, 1], which holds the ranges published for these
  datasets (OXE's dataset sheet and colab: deltas of centimetres and tenths of a radian, a
  gripper command of -1, 0 or 1, bridge's open_gripper 0/1). Cable routing and roboturk publish
  none: an episode beyond ±1 fails naming its field instead of training on clipped values.
  `saturate` only where the dataset documents clipping to the range."""
  return ContinuousField('action', (dims,), mu_law=False, low=-1.0, high=1.0, saturate=saturate)


def _oxe(
  short: str,
  image: tuple[int, int],
  action: ContinuousField,
  state_dim: int = 0,
  instruction_tokens: int = 0,
  truncate: bool = False,
) -> TaskSpec:
  """One Open X-Embodiment robot: its main camera, the instruction if the dataset has one, the
  proprioceptive state if any (concatenated parts), and its action."""
  fields: list = [ImageField('image', *image)]
  if instruction_tokens:
    fields.append(TextField('instruction', max_tokens=instruction_tokens, truncate=truncate))
  if state_dim:
    fields.append(ContinuousField('state', (state_dim,)))
  return TaskSpec(f'oxe_{short}', observation=tuple(fields), action=action)


# Tasks known only from a public dataset (gato_jax/data/public_catalog.py maps each dataset onto
# one): no simulator runs them here, so they have no env, no expert to roll out and no measured
# returns. get_spec finds them; task_names() and the dataset generator, which need an env, never
# see them. Instruction sizes are in bytes (the byte vocabulary's worst case; SentencePiece needs
# far fewer). Datasets with a known instruction set are sized to fit its longest (kuka 'pick
# anything', cable routing 'route cable', nyu door 'open door', roboturk's three tasks, ur5's
# four); the others' instructions are free-form or unlisted, so a longer one is cut, not refused.
DATASET_SPECS: dict[str, TaskSpec] = {
  spec.name: spec
  for spec in (
    TaskSpec(
      'oxe_fractal',
      observation=(
        TextField('instruction', max_tokens=_FRACTAL_INSTRUCTION_TOKENS),
        ImageField('image', *FRACTAL_SIZE),
        ContinuousField('state', (8,)),
      ),
      action=_FRACTAL_ACTION,
    ),
    # Every RL Unplugged Atari game: 84x84 grayscale DQN frames resized to the env Atari size,
    # so logged and generated frames tokenize alike. Each game's minimal action set indexes
    # into ALE's 18 actions, which bound them all.
    TaskSpec(
      'rlu_atari',
      observation=(ImageField('pixels', *ATARI_SIZE),),
      action=DiscreteField('action', (), num_values=18),
    ),
    *(
      TaskSpec(
        f'rlu_{config}',
        observation=tuple(ContinuousField(k, shape) for k, shape in fields.items()),
        action=_unit_action(action_dims),
      )
      for config, (fields, action_dims) in RLU_CONTROL_SUITE.items()
    ),
    # Pixels only: the logged last_action is the previous timestep's action tokens already,
    # and Gato conditions on no reward.
    TaskSpec(
      'rlu_dmlab',
      observation=(ImageField('pixels', *DMLAB_SIZE),),
      action=DiscreteField('action', (), num_values=_DMLAB_ACTIONS),
    ),
    # QT-Opt's KUKA grasping, converted to RT-1's action format by the RT-1 authors: fractal's
    # action field. Its tool pose sits under a key with a '/' in it (clip_function_input/...),
    # which a '/'-path cannot name: the state is the gripper and the height above the bin.
    _oxe('kuka', FRACTAL_SIZE, _FRACTAL_ACTION, state_dim=2, instruction_tokens=16),
    # WidowX: 7 state values (xyz, rpy, gripper); world_vector, rotation_delta, open_gripper.
    _oxe('bridge', OXE_SIZE_4_3, _oxe_action(7), 7, instruction_tokens=64, truncate=True),
    # Franka (CALVIN setup): robot_obs is 15 values; rel_actions_world is CALVIN's relative
    # action, scaled and clipped to [-1, 1] (xyz, euler, gripper ±1).
    _oxe('taco_play', OXE_SIZE_4_3, _oxe_action(7, saturate=True), 15, 64, truncate=True),
    # Jaco 2: end-effector pose (7) and joint positions (8); world_vector and the gripper.
    _oxe('jaco_play', OXE_SIZE_SQUARE, _oxe_action(4), 15, 64, truncate=True),
    # Franka cable routing: robot_state (7); world_vector and rotation_delta (no gripper).
    _oxe('cable_routing', OXE_SIZE_SQUARE, _oxe_action(6), 7, instruction_tokens=16),
    # Sawyer teleoperation, front camera only, no state.
    _oxe('roboturk', OXE_SIZE_4_3, _oxe_action(7), instruction_tokens=16),
    # Hello Stretch opening cabinet doors: a wrist camera, no state.
    _oxe('nyu_door', OXE_SIZE_4_3, _oxe_action(7), instruction_tokens=16),
    # Franka: joint positions (7) and gripper width (1); gripper command is a scalar.
    _oxe('viola', OXE_SIZE_SQUARE, _oxe_action(7), 8, instruction_tokens=64, truncate=True),
    # UR5: robot_state (15); the longest of its four instructions is 62 bytes.
    _oxe('ur5', OXE_SIZE_4_3, _oxe_action(7), 15, instruction_tokens=80),
  )
}
