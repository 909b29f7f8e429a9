"""data_pipelines.public_rlds describe (its proposal: data_pipelines/spec_proposal.py) and
check, and docs/adding_a_dataset.md's whole path (a robot's own RLDS dataset, written outside
the project, to training), run offline."""

import contextlib
import dataclasses
import io
import json
import math
import pathlib
import re
import shlex
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from ml_collections import config_flags

from data_pipelines import public_rlds as cli_rlds
from data_pipelines import spec_proposal
from gato_jax import cli, specs
from gato_jax.data import public_rlds
from gato_jax.specs import config as spec_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / 'docs/adding_a_dataset.md'
DOC_ROOT = '/tmp/my_robot'  # Where the doc's commands write; a temporary directory here.
DOC_CONFIG = 'docs/examples/my_robot_config.py'


def load_config(args: list[str]) -> ml_collections.ConfigDict:
  """`--config=PATH` and its `--config.key=value` overrides, parsed as the commands do."""
  argv = ['prog', *(a for a in args if a.startswith('--config'))]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=values, sys_argv=argv)
  values(argv)
  return values.config


def run_public_rlds(args: list[str]) -> str:
  """`python -m data_pipelines.public_rlds ARGS` in this process; returns its stdout."""
  positional = [a for a in args if not a.startswith('--')]
  named = dict(a[2:].split('=', 1) for a in args if a.startswith('--') and '=' in a)
  config_path = named.pop('config', 'configs/gato_1b2.py')
  types = {f.name: f.type for f in dataclasses.fields(cli_rlds.Options)}
  options = cli_rlds.Options(**{k: int(v) if types[k] == 'int' else v for k, v in named.items()})
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    cli_rlds.run_command(positional, options, load_config([f'--config={config_path}']), config_path)
  return out.getvalue()


def proposal_config(snippet: str) -> ml_collections.ConfigDict:
  """What pasting the snippet into a config's get_config() gives."""
  config = ml_collections.ConfigDict({'data': {'specs': {}, 'public_sources': {}}})
  exec(compile(snippet, 'describe', 'exec'), {'config': config})
  return config


def validate(snippet: str, name: str, monkeypatch) -> tuple[specs.TaskSpec, public_rlds.Source]:
  """The proposal's spec and source, each checked as register_from_config checks them."""
  config = proposal_config(snippet)
  assert list(config.data.specs) == [name] and list(config.data.public_sources) == [name]
  spec = spec_config.from_dict(name, config.data.specs[name])
  monkeypatch.setitem(specs.DATASET_SPECS, name, spec)
  source = public_rlds.Source.from_config(name, config.data.public_sources[name].to_dict())
  return spec, source


# ----------------------------------------------------------------------------------------
# describe
# ----------------------------------------------------------------------------------------


def test_describe_a_dm_control_dataset_tfds_knows_from_its_code(monkeypatch):
  snippet = run_public_rlds(['describe', 'rlu_control_suite/cartpole_swingup'])
  spec, source = validate(snippet, 'rlu_control_suite_cartpole_swingup', monkeypatch)
  assert [f.name for f in spec.observation] == ['state']
  assert spec.observation[0].shape == (5,) and spec.observation[0].mu_law
  assert source.observation == {'state': ('observation/position', 'observation/velocity')}
  assert spec.action == spec_config.field_from_dict(
    {'type': 'continuous', 'name': 'action', 'shape': [1], 'mu_law': False, 'low': -1.0,
     'high': 1.0}, 'action')  # fmt: skip
  assert source.action == ('action',) and source.data_dir is None
  assert '# CONFIRM low/high' in snippet


def test_describe_an_atari_dataset_sizes_its_grayscale_frames_and_asks_for_the_actions(
  monkeypatch,
):
  snippet = run_public_rlds(['describe', 'rlu_atari/Pong_run_1', '--name=pong_logs'])
  spec, source = validate(snippet, 'pong_logs', monkeypatch)
  (image,) = spec.observation
  assert (image.height, image.width, image.num_tokens) == (80, 80, 25)
  assert source.observation == {'image': ('observation',)} and source.dataset == (
    'rlu_atari/Pong_run_1'
  )
  assert 'image 84x84x1 -> 80x80 = 25 patches' in snippet and 'grayscale repeated' in snippet
  assert spec.action.num_values == 1024 and "'num_values': 1024" in snippet
  assert '# action: int64 -> discrete. CONFIRM num_values' in snippet
  assert max(len(line) for line in snippet.splitlines()) <= 100


def _oxe_like_features() -> tfds.features.FeaturesDict:
  """An Open X-Embodiment-like step: two cameras, an embedding, a dict action."""
  f = tfds.features
  step = {
    'observation': {
      'image': f.Image(shape=(256, 320, 3)),
      'hand_image': f.Image(shape=(480, 640, 3)),  # Larger, but not named as the main one.
      'depth': f.Tensor(shape=(256, 320, 1), dtype=np.float32),
      'state': f.Tensor(shape=(8,), dtype=np.float32),
      'natural_language_instruction': f.Text(),
      'natural_language_embedding': f.Tensor(shape=(512,), dtype=np.float32),
    },
    'action': {
      'world_vector': f.Tensor(shape=(3,), dtype=np.float32),
      'rotation_delta': f.Tensor(shape=(3,), dtype=np.float32),
      'gripper_closedness_action': f.Tensor(shape=(1,), dtype=np.float32),
      'terminate_episode': f.Tensor(shape=(3,), dtype=np.int32),
    },
    'reward': f.Scalar(dtype=np.float32),
    'is_first': np.bool_,
    'is_last': np.bool_,
    'is_terminal': np.bool_,
  }
  return f.FeaturesDict({'steps': f.Dataset(step)})


@pytest.mark.parametrize(
  'local_positions, max_length, size',
  [(512, 1024, (128, 160)), (96, 1024, (96, 128)), (512, 128, (48, 64))],
)
def test_describe_fits_the_main_camera_to_the_model(local_positions, max_length, size):
  proposal = spec_proposal.propose(
    'oxe_like:1.0.0', _oxe_like_features(), 'gs://bucket', local_positions, max_length
  )
  assert proposal.name == 'oxe_like'
  observation = {f['name']: f for f in proposal.spec['observation']}
  assert (observation['image']['height'], observation['image']['width']) == size
  spec = spec_config.from_dict('oxe_like', proposal.spec)
  # The observation fits the local positions; a timestep, half the context.
  assert 2 + spec.observation_tokens <= local_positions
  assert spec.tokens_per_timestep <= max_length // 2
  assert observation['instruction'] == {'type': 'text', 'name': 'instruction', 'max_tokens': 32}
  assert proposal.source['observation'] == {
    'image': 'observation/image',
    'instruction': 'observation/natural_language_instruction',
    'state': 'observation/state',
  }
  assert proposal.source['action'] == [  # Sorted; the terminate flag left out.
    'action/gripper_closedness_action',
    'action/rotation_delta',
    'action/world_vector',
  ]
  assert proposal.spec['action']['shape'] == [7]
  not_mapped = ' '.join(proposal.not_mapped)
  for path in ('hand_image', 'depth', 'natural_language_embedding'):
    assert f'observation/{path}' in not_mapped
  assert 'left out: action/terminate_episode (int32[3])' in proposal.snippet()


def test_describe_refuses_a_model_with_no_room_for_the_image():
  with pytest.raises(
    cli.CommandError,
    match='no room for image observation/image: text, state and action take 48 tokens',
  ):
    spec_proposal.propose('oxe_like', _oxe_like_features(), None, 512, 64)


def test_describe_takes_a_class_label_actions_count(monkeypatch):
  f = tfds.features
  step = {
    'observation': {'rgb': f.Image(shape=(64, 64, 3)), 'pixels_small': f.Image(shape=(8, 8, 3))},
    'action': f.ClassLabel(num_classes=7),
    'reward': f.Scalar(dtype=np.float32),
    'is_terminal': np.bool_,
  }
  proposal = spec_proposal.propose(
    'grid', f.FeaturesDict({'steps': f.Dataset(step)}), None, 512, 1024
  )
  spec, source = validate(proposal.snippet(), 'grid', monkeypatch)
  assert spec.action == spec_config.field_from_dict(
    {'type': 'discrete', 'name': 'action', 'num_values': 7}, 'action'
  )
  assert '# action: ClassLabel of 7 -> discrete, 7 values' in proposal.snippet()
  assert 'CONFIRM num_values' not in proposal.snippet()
  assert 'not mapped: observation/pixels_small (image 8x8x3): one camera per spec' in (
    proposal.snippet()
  )
  assert source.observation == {'image': ('observation/rgb',)}  # Named rgb: the main camera.


def test_the_command_line_ends_a_failure_with_one_line_of_cause(tmp_path):
  done = subprocess.run(
    [sys.executable, '-m', 'data_pipelines.public_rlds', 'describe', 'no_such_robot',
     f'--data_dir={tmp_path}'],
    capture_output=True, text=True, cwd=ROOT,
  )  # fmt: skip
  assert done.returncode == cli.EXIT_EXPECTED, done.stderr[-2000:]
  assert done.stderr.splitlines()[-1] == (
    f'error: cannot read the features of no_such_robot in {tmp_path}: Dataset no_such_robot '
    'not found.'
  )


def test_fit_image_size_keeps_the_aspect_ratio_in_multiples_of_16():
  assert spec_proposal.fit_image_size(256, 320, 80) == (128, 160)
  assert spec_proposal.fit_image_size(120, 160, 80) == (112, 144)
  assert spec_proposal.fit_image_size(72, 96, 80) == (64, 80)
  assert spec_proposal.fit_image_size(480, 640, 12) == (48, 64)
  assert spec_proposal.fit_image_size(8, 8, 80) == (16, 16)  # Never below one patch.


# ----------------------------------------------------------------------------------------
# The doc's path: a robot's logger, describe, config, check, prepare, train.
# ----------------------------------------------------------------------------------------


def doc_steps() -> list[tuple[str, str | None]]:
  """(command, the output the doc shows for it or None) for the doc's robot walkthrough."""
  text = DOC.read_text()
  section = text[text.index('## Your own RLDS dataset') : text.index('## Public datasets')]
  blocks = re.findall(r'```(\w+)\n(.*?)```', section, re.S)
  steps = []
  for i, (language, body) in enumerate(blocks):
    if language != 'sh':
      continue
    commands = [c.strip() for c in body.replace('\\\n', ' ').splitlines() if c.strip()]
    following = blocks[i + 1] if i + 1 < len(blocks) else ('', '')
    shown = following[1] if following[0] == 'text' else None
    steps += [(c, None) for c in commands[:-1]] + [(commands[-1], shown)]
  return steps


@pytest.fixture(scope='module')
def walkthrough(tmp_path_factory):
  """The doc's commands, run under a temporary root: {command name: (args, output)}."""
  root = tmp_path_factory.mktemp('my_robot')
  config_path = root / 'my_robot_config.py'
  config_path.write_text((ROOT / DOC_CONFIG).read_text().replace(DOC_ROOT, str(root)))
  ran = {}
  for command, shown in doc_steps():
    args = shlex.split(command.replace(DOC_ROOT, str(root)).replace(DOC_CONFIG, str(config_path)))
    assert args[0] == 'python', command
    if args[1] == 'docs/examples/write_my_robot.py':  # The team's own script: its own process.
      done = subprocess.run(
        [sys.executable, str(ROOT / args[1]), *args[2:]], capture_output=True, text=True
      )
      assert done.returncode == 0, done.stderr[-3000:]
      ran['write'] = (args, done.stdout, shown)
    elif args[1:3] == ['-m', 'data_pipelines.public_rlds']:
      ran[args[3]] = (args, run_public_rlds(args[3:]), shown)
    elif args[1:3] == ['-m', 'data_pipelines.prepare']:
      from data_pipelines import prepare

      prepare.prepare(load_config(args[3:]))
      ran['prepare'] = (args, '', shown)
    elif args[1:3] == ['-m', 'gato_jax.train']:
      from gato_jax import train

      workdir = next(a.split('=', 1)[1] for a in args if a.startswith('--workdir='))
      config = load_config(args[3:])
      ran['train'] = (args, train.train(config, workdir), config.total_steps, workdir)
    else:
      pytest.fail(f'the doc runs a command this test does not know: {command}')
  return root, ran


def test_the_doc_runs_every_step_it_shows(walkthrough):
  _, ran = walkthrough
  assert list(ran) == ['write', 'describe', 'check', 'prepare', 'train']


def test_describe_of_the_robots_own_dataset_prints_what_the_doc_shows(walkthrough, monkeypatch):
  root, ran = walkthrough
  _, output, shown = ran['describe']
  assert output.replace(str(root), DOC_ROOT) == shown
  spec, source = validate(output, 'my_robot', monkeypatch)
  fields = {f.name: f for f in spec.observation}
  assert (fields['image'].height, fields['image'].width) == (112, 144)
  assert fields['instruction'].max_tokens == 32 and fields['state'].shape == (7,)
  assert spec.action.shape == (7,) and spec.tokens_per_timestep == 110
  assert source.action == ('action/gripper', 'action/joint_velocities')
  assert source.data_dir == f'{root}/tfds'
  assert 'not mapped: observation/wrist_image (image 64x64x3)' in output
  # The doc's config holds exactly the proposal, pasted.
  config = load_config([f'--config={ROOT / DOC_CONFIG}'])
  proposed = proposal_config(output.replace(str(root), DOC_ROOT)).data
  assert config.data.specs.my_robot.to_dict() == proposed.specs.my_robot.to_dict()
  assert config.data.public_sources.my_robot.to_dict() == proposed.public_sources.my_robot.to_dict()


def test_check_of_the_robots_mixture_prints_what_the_doc_shows(walkthrough):
  _, ran = walkthrough
  _, output, shown = ran['check']
  assert output == shown
  assert re.search(r'my_robot +my_robot +4 +12 +5280 +ok', output)  # 12 steps x 110 x 4.


def test_training_on_the_robot_and_generated_cartpole(walkthrough):
  _, ran = walkthrough
  _, last_step, total_steps, workdir = ran['train']
  assert last_step == total_steps == 5
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  losses = {json.loads(line)['step']: json.loads(line)['loss'] for line in lines if line.strip()}
  assert sorted(losses) == [1, 2, 3, 4, 5]
  assert all(math.isfinite(loss) and loss > 0 for loss in losses.values())


# ----------------------------------------------------------------------------------------
# check: unreachable sources, and a source that does not fit.
# ----------------------------------------------------------------------------------------


def test_check_names_each_unreachable_source_in_one_line(walkthrough, tmp_path):
  root, _ = walkthrough
  config = load_config([f'--config={ROOT / DOC_CONFIG}'])  # Its model and the demo's data.
  config.data.public_sources = {
    'pong_nowhere': {  # TFDS knows it from its code; no copy under this data_dir.
      'dataset': 'rlu_atari/Pong_run_1',
      'data_dir': str(tmp_path),
      'spec': 'atari_pong',
      'observation': {'pixels': 'observation'},
      'action': 'action',
      'domain': 'atari',
    },
    'robot_nowhere': {  # Not in TFDS's code nor here.
      'dataset': 'robot_nowhere',
      'data_dir': str(tmp_path / 'missing'),
      'spec': 'atari_pong',
      'observation': {'pixels': 'observation'},
      'action': 'action',
    },
  }
  config.data.specs = {}
  config.data.mixtures = {'nowhere': {'gato_pong_nowhere': 1.0, 'gato_robot_nowhere': 1.0}}
  from gato_jax.data import tasks

  tasks.register_from_config(config)
  report, results = cli_rlds.check('nowhere', None, 1)
  lines = report.splitlines()
  assert lines[0] == '(none reachable)' and all(not r.fit for r in results)
  unreachable = [line for line in lines if line.startswith('unreachable: ')]
  assert len(unreachable) == 2
  assert unreachable[0].startswith(
    'unreachable: public source pong_nowhere: TFDS knows rlu_atari/Pong_run_1 but holds no '
    f'prepared copy in {tmp_path}'
  )
  assert 'public source robot_nowhere: cannot open dataset robot_nowhere' in unreachable[1]


def test_check_fails_naming_a_source_whose_episodes_do_not_fit(walkthrough):
  root, _ = walkthrough
  config = load_config([f'--config={ROOT / DOC_CONFIG}'])
  narrow = config.data.specs.my_robot.to_dict()
  narrow['action'].update(low=-0.5, high=0.5)  # The logged velocities span [-1, 1].
  source = config.data.public_sources.my_robot.to_dict()
  source.update(spec='my_robot_narrow', data_dir=f'{root}/tfds')
  config.data.specs = {'my_robot_narrow': narrow}
  config.data.public_sources = {'my_robot_narrow': source}
  config.data.mixtures = {'narrow': {'gato_my_robot_narrow': 1.0}}
  from gato_jax.data import tasks

  tasks.register_from_config(config)
  options = cli_rlds.Options(mixture='narrow', episodes=1)
  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(cli.CommandError) as failed:
    cli_rlds.run_command(['check'], options, config, 'the test')
  assert str(failed.value) == '1 source(s) do not fit: my_robot_narrow'
  assert re.search(
    r"my_robot_narrow +my_robot +4 +- +- +dataset my_robot, episode .*: task 'my_robot_narrow', "
    r"field 'action': value .* is beyond what the bins represent",
    out.getvalue(),
  )


def test_describe_says_when_the_catalog_already_reads_the_dataset():
  """Pasting a proposal under a catalog source's name would be refused as another mapping."""
  from configs import gato_1b2

  proposal = spec_proposal.describe('rlu_control_suite/walker_walk', None, gato_1b2.get_config())
  assert proposal.snippet().startswith(
    '# rlu_control_suite/walker_walk is already registered as public source '
    'rlu_control_suite_walker_walk'
  )
