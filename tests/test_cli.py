"""Every command's failure ends with one line naming the cause (gato_jax/cli.py).

Each case runs the real command as a subprocess and reads the last line of its stderr,
which is what a person or a launcher's log tail sees. The cases fail, or are signalled,
before any training step, so each costs the command's start-up (5 to 10 s of imports; the
corrupt shard also waits for the model's initialization before its first batch).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import tiny_train_config

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(
  os.environ,
  TF_CPP_MIN_LOG_LEVEL='2',
  JAX_PLATFORMS='cpu',
  PYTHONPATH=f'{REPO}:{REPO / "tests"}',
)


def run_command(module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=timeout)


def last_line(result: subprocess.CompletedProcess) -> str:
  lines = result.stderr.strip().splitlines()
  return lines[-1] if lines else ''


# -- the mechanism, in this process ---------------------------------------------------------


def test_one_line_joins_a_multi_line_message_and_names_types_that_need_it():
  from gato_jax import cli

  assert cli.one_line(ValueError('config key x\n  must be 1')) == 'config key x must be 1'
  assert cli.one_line(KeyError('x')) == "KeyError: 'x'"
  assert cli.one_line(FileNotFoundError(2, 'No such file', '/a')) == (
    "[Errno 2] No such file: '/a'")


def test_an_expected_error_is_one_line_and_exit_2_a_bug_keeps_its_traceback_then_exit_1(capsys):
  from gato_jax import cli

  def bad_input(argv):
    raise ValueError('config key batch_size must be a positive int,\ngot 0')

  def bug(argv):
    raise RuntimeError('something broke')

  with pytest.raises(SystemExit) as exited:
    cli.guarded(bad_input)(['prog'])
  assert exited.value.code == 2
  err = capsys.readouterr().err
  assert err == 'error: config key batch_size must be a positive int, got 0\n'
  with pytest.raises(SystemExit) as exited:
    cli.guarded(bug)(['prog'])
  assert exited.value.code == 1
  err = capsys.readouterr().err
  assert 'Traceback' in err and err.endswith('error: RuntimeError: something broke\n')


# -- the trainer ------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def two_layer_run(tmp_path_factory):
  """A workdir whose newest checkpoint (step 2) says it holds the tiny config's 2-layer model.

  Written by the trainer's own save path; the arrays are a stand-in (the refusal to resume
  reads the checkpoint's recorded config, before any array), which keeps this fast.
  """
  import jax.numpy as jnp
  from flax import nnx

  from gato_jax import checkpointing, data, sharding

  workdir = str(tmp_path_factory.mktemp('run'))
  config = tiny_train_config.get_config()
  params = nnx.State({'w': nnx.Param(jnp.zeros(4))})
  checkpoints = checkpointing.Checkpoints(workdir, max_to_keep=2)
  checkpoints.save(2, params, {'count': jnp.zeros(())}, data.make_iterator(config, 8),
                   checkpointing.meta(2, config, sharding.make_mesh(config)))
  checkpoints.close()
  return workdir


def test_resume_with_another_num_layers_ends_with_the_cause(two_layer_run):
  # Issue 16 defect 6: 321 lines, and the refusal was not the last of them.
  result = run_command('gato_jax.train', '--config=tests/tiny_train_config.py',
                       f'--workdir={two_layer_run}', '--config.model.num_layers=3')
  assert result.returncode == 2, result.stderr[-3000:]
  last = last_line(result)
  assert last.startswith('error: ') and 'num_layers' in last, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr


def test_an_unknown_config_key_is_one_line_naming_the_flag(tmp_path):
  result = run_command('gato_jax.train', '--config=tests/tiny_train_config.py',
                       f'--workdir={tmp_path}', '--config.model.num_layer=3')
  assert result.returncode == 2
  assert last_line(result) == ("error: --config.model.num_layer: the config has no key "
                               "'num_layer'; did you mean 'num_layers'?")
  assert 'Traceback' not in result.stderr
  result = run_command('gato_jax.evaluator', '--config=tests/tiny_train_config.py',
                       f'--workdir={tmp_path}', '--config.no_such_key=1')
  assert result.returncode == 2
  assert last_line(result) == "error: --config.no_such_key: the config has no key 'no_such_key'"


def test_a_bad_flag_value_ends_with_the_flag_not_the_help_hint(tmp_path):
  result = run_command('gato_jax.train', '--config=tests/tiny_train_config.py',
                       f'--workdir={tmp_path}', '--config.model.num_layers=x')
  assert result.returncode == 2
  assert last_line(result).startswith('error: IllegalFlagValueError: flag '
                                      '--config.model.num_layers=x: ')
  # A config file that raises: its own traceback is inside absl's message, cut to its end.
  result = run_command('gato_jax.aot', '--config=configs/gato_1b2.py:v9-1')
  assert result.returncode == 2
  assert last_line(result).startswith(
    'error: IllegalFlagValueError: flag --config=configs/gato_1b2.py:v9-1: Error whilst parsing '
    "config file: ValueError: unknown slice preset 'v9-1'; known presets: [")


def test_a_corrupt_dataset_shard_is_named_by_the_trainer(tmp_path):
  # Issue 16 defect 6: TF's "corrupted record at N", naming no file.
  from data_pipelines import rollouts

  data_dir = tmp_path / 'data'
  rollouts.generate('cartpole', str(data_dir), episodes=6, max_steps=40, random_episodes=1)
  (shard,) = (data_dir / 'gato_episodes' / 'cartpole' / '1.0.0').glob('*.tfrecord*')
  content = bytearray(shard.read_bytes())
  middle = len(content) // 2
  content[middle : middle + 64] = bytes(b ^ 0xFF for b in content[middle : middle + 64])
  shard.write_bytes(content)
  result = run_command('gato_jax.train', '--config=tests/tiny_train_config.py',
                       f'--workdir={tmp_path}/run', '--config.data.source=mixture',
                       '--config.data.mixture=gato_cartpole', f'--config.data.data_dir={data_dir}')
  assert result.returncode == 2, result.stderr[-3000:]
  assert last_line(result).startswith(f'error: corrupt training data: {shard}: corrupted record')


def test_sigterm_before_the_first_step_says_so_and_exits_143(tmp_path):
  # Issue 16 defect 8. 'mesh ... over 8 devices' is logged as start-up begins; seconds of
  # state initialization and compilation follow before the first step.
  log = tmp_path / 'stderr.txt'
  with open(log, 'w') as stderr:
    process = subprocess.Popen(
      [sys.executable, '-m', 'gato_jax.train', '--config=tests/tiny_train_config.py',
       f'--workdir={tmp_path}/run'], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr)
    wait_for_text(log, 'over 8 devices', process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM, log.read_text()[-3000:]
  last = log.read_text().strip().splitlines()[-1]
  assert last == ('SIGTERM during start-up (the trainer, before its first step): exiting '
                  'without a checkpoint')
  assert not (tmp_path / 'run' / 'checkpoints').exists() or not any(
    (tmp_path / 'run' / 'checkpoints').iterdir())


# -- data generation --------------------------------------------------------------------------


def test_generate_with_no_episodes_names_the_flag_and_creates_nothing(tmp_path):
  # Issue 16 defect 6: scores.expert_return's error, and empty dataset directories left.
  data_dir = tmp_path / 'data'
  result = run_command('data_pipelines.generate', '--task=cartpole', '--episodes=0',
                       f'--data_dir={data_dir}')
  assert result.returncode == 2
  assert last_line(result) == 'error: --episodes must be an int of at least 1, got 0'
  assert not data_dir.exists()


def test_generate_into_a_file_names_the_path(tmp_path):
  a_file = tmp_path / 'not_a_dir'
  a_file.write_text('')
  result = run_command('data_pipelines.generate', '--task=cartpole', '--episodes=1',
                       f'--data_dir={a_file}/data')
  assert result.returncode == 2
  assert last_line(result) == (f'error: --data_dir={a_file}/data is under {a_file}, which is '
                               'a file, not a directory')
  assert 'NotADirectoryError' not in result.stderr


def wait_for_text(path: pathlib.Path, text: str, process: subprocess.Popen, timeout=120) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if path.exists() and text in path.read_text(errors='replace'):
      return
    if process.poll() is not None:
      pytest.fail(f'exited {process.returncode} before {text!r}:\n{path.read_text()[-3000:]}')
    time.sleep(0.1)
  process.kill()
  pytest.fail(f'no {text!r} after {timeout} s:\n{path.read_text()[-3000:]}')


def test_sigterm_during_generation_says_so_and_exits_143(tmp_path):
  # Issue 16 defect 8: SIGTERM during start-up (data generation included) exited 143 silently.
  log = tmp_path / 'stderr.txt'
  with open(log, 'w') as stderr:
    process = subprocess.Popen(
      [sys.executable, '-m', 'data_pipelines.generate', '--task=cartpole',
       '--episodes=100000', f'--data_dir={tmp_path}/data'],
      cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr)
    wait_for_text(log, 'cartpole (expert)', process)  # tqdm's bar: rollouts have begun.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM  # 143 in a shell, as before.
  last = log.read_text().strip().splitlines()[-1]
  assert last == (f'SIGTERM during generation of cartpole into {tmp_path}/data/gato_episodes/'
                  'cartpole/1.0.0: exiting before the dataset is complete')


def test_every_process_of_a_multi_process_run_ends_with_the_cause(two_layer_run):
  # Two processes (launch/local_multihost.sh, jax.distributed over gloo) refuse the resume:
  # each prints the cause and exits 2 with nothing of its own after it; only the
  # launcher's exit-code lines follow.
  result = subprocess.run(
    [REPO / 'launch/local_multihost.sh', '2', '--config=tests/tiny_train_config.py',
     f'--workdir={two_layer_run}', '--config.model.num_layers=3'],
    cwd=REPO, env=dict(ENV, PYTHON=sys.executable), capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  errors = [i for i, line in enumerate(lines) if line.startswith('error: ')]
  assert len(errors) == 2 and all('model.num_layers' in lines[i] for i in errors), lines[-20:]
  assert all(line.startswith('local_multihost: ') for line in lines[errors[-1] + 1:]), lines[-20:]
  for process in (0, 1):
    assert f'local_multihost: process {process} exited with code 2' in result.stderr
