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

# Tasks known only from a public dataset (data_pipelines/public_rlds.py): no simulator runs
# them here, so they have no env, no expert to roll out and no measured returns. get_spec
# finds them; task_names() and the dataset generator, which need an env, never see them.
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
  )
}
