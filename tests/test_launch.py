"""The launch recipes: every script parses, prints its usage, and builds the commands it claims.

Nothing here touches the network: `tpu_pod.sh` runs with DRY_RUN=1 (it prints the gcloud
commands), and `slurm_gpu.sh` runs against stand-ins for `srun` and `scontrol`. The
multi-process run of `local_multihost.sh` itself is tests/test_multiprocess.py.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / 'launch').glob('*.sh'))


def run(args, env=None, **kwargs):
  return subprocess.run(
    [str(a) for a in args],
    cwd=REPO,
    env={**os.environ, **(env or {})},
    capture_output=True,
    text=True,
    timeout=60,
    **kwargs,
  )


def test_the_expected_scripts_exist():
  names = {p.name for p in SCRIPTS}
  assert {'local_multihost.sh', 'tpu_pod.sh', 'tpu_worker.sh', 'slurm_gpu.sh'} <= names
  for script in SCRIPTS:
    assert os.access(script, os.X_OK), f'{script.name} is not executable'
    text = script.read_text()
    assert text.startswith('#!/usr/bin/env bash\n'), script.name
    assert 'set -euo pipefail' in text, script.name


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_bash_parses(script):
  result = run(['bash', '-n', script])
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('script', ['tpu_pod.sh', 'tpu_worker.sh', 'slurm_gpu.sh'])
def test_help_prints_usage_and_no_arguments_is_an_error(script):
  path = REPO / 'launch' / script
  helped = run([path, '--help'], env={'SLURM_JOB_ID': ''})
  assert helped.returncode == 0, helped.stderr
  assert f'launch/{script}' in helped.stdout
  assert 'Environment' in helped.stdout
  bare = run([path], env={'SLURM_JOB_ID': ''})
  assert bare.returncode == 2
  assert f'launch/{script}' in bare.stdout + bare.stderr


def test_local_multihost_without_n_prints_usage():
  result = run([REPO / 'launch/local_multihost.sh'])
  assert result.returncode != 0
  assert 'usage: launch/local_multihost.sh N' in result.stderr


def dry_run(*args, **env):
  """tpu_pod.sh's gcloud commands, each as argv, and the --command= payload of each ssh."""
  result = run(
    [REPO / 'launch/tpu_pod.sh', *args],
    env={'DRY_RUN': '1', 'WORKDIR': 'gs://bucket/run', 'TPU_NAME': 'pod', 'ZONE': 'z', **env},
  )
  assert result.returncode == 0, result.stderr
  commands = [shlex.split(line) for line in result.stdout.splitlines() if line.startswith('gcloud')]
  payloads = [
    next((a.split('=', 1)[1] for a in argv if a.startswith('--command=')), None)
    for argv in commands
  ]
  return commands, payloads


def test_tpu_pod_train_checks_frees_the_chips_then_starts_the_worker_script():
  commands, payloads = dry_run('train', '--config.mesh.data=1', '--config.mesh.fsdp=-1')
  assert len(commands) == 3
  for argv in commands:
    assert argv[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'pod']
    assert '--worker=all' in argv and '--zone=z' in argv
  preflight, cleanup, start = (shlex.split(p) for p in payloads)
  assert preflight[-3:] == ['preflight', 'gs://bucket/run', 'configs/gato_1b2.py:v5p-32']
  assert cleanup[-1] == 'cleanup'
  begin = start.index('launch/tpu_worker.sh')
  assert start[begin - 2 : begin] == ['setsid', 'nohup']
  assert start[begin + 1 : begin + 5] == [
    '--config=configs/gato_1b2.py:v5p-32',  # The default slice's preset.
    '--workdir=gs://bucket/run',
    '--config.mesh.data=1',
    '--config.mesh.fsdp=-1',
  ]


@pytest.mark.parametrize(
  'accelerator, config',
  [
    ('v5litepod-16', 'configs/gato_1b2.py:v5e-16'),  # gcloud's name for the v5e-16 preset.
    ('v6e-8', 'configs/gato_1b2.py:v6e-8'),
    ('v4-8', 'configs/gato_1b2.py'),  # No preset for this slice: the plain config.
  ],
)
def test_tpu_pod_defaults_to_the_slice_preset_of_the_accelerator(accelerator, config):
  _, payloads = dry_run('train', ACCELERATOR_TYPE=accelerator)
  assert f'--config={config}' in shlex.split(payloads[-1])


def test_tpu_pod_refuses_a_local_workdir():
  result = run([REPO / 'launch/tpu_pod.sh', 'train'], env={'DRY_RUN': '1', 'WORKDIR': '/tmp/run'})
  assert result.returncode == 2
  assert 'gs://' in result.stderr


def test_tpu_pod_queued_resource_and_evaluator_commands():
  env = {'DRY_RUN': '1', 'QUEUED': '1', 'SPOT': '1', 'TPU_NAME': 'pod', 'ZONE': 'z'}
  create = shlex.split(run([REPO / 'launch/tpu_pod.sh', 'create'], env=env).stdout)
  assert create[:5] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'create']
  assert {'--node-id=pod', '--accelerator-type=v5p-32', '--spot'} <= set(create)
  env['WORKDIR'] = 'gs://bucket/run'
  evaluate = shlex.split(run([REPO / 'launch/tpu_pod.sh', 'evaluate', '--step=-1'], env=env).stdout)
  assert 'pod-eval' in evaluate
  remote = next(a for a in evaluate if a.startswith('--command='))
  expected = (
    'gato_jax.evaluator --config=configs/gato_1b2.py:v5p-32 --workdir=gs://bucket/run --step=-1'
  )
  assert expected in remote


def test_the_eval_vm_has_its_own_zone():
  """v5e is not offered in every zone that has v5p: EVAL_ZONE, by default ZONE."""
  env = {'EVAL_ZONE': 'ez'}
  (create,), _ = dry_run('eval-create', **env)
  assert '--zone=ez' in create and 'pod-eval' in create
  (evaluate,), _ = dry_run('evaluate', **env)
  assert '--zone=ez' in evaluate
  delete_pod, delete_eval = dry_run('delete', **env)[0]
  assert 'pod' in delete_pod and '--zone=z' in delete_pod
  assert 'pod-eval' in delete_eval and '--zone=ez' in delete_eval
  (default,), _ = dry_run('eval-create')
  assert '--zone=z' in default


def test_smoke_trains_on_synthetic_data_stops_and_resumes_in_its_own_directory():
  commands, payloads = dry_run('smoke', '--config.mesh.fsdp=-1', SMOKE_STEPS='5')
  preflight, cleanup, start, stop, resume = (shlex.split(p) for p in payloads)
  workdir = next(a for a in start if a.startswith('--workdir='))
  assert re.fullmatch(r'--workdir=gs://bucket/run/smoke-\d{8}-\d{6}', workdir)
  assert preflight[-2] == workdir.split('=', 1)[1]
  assert cleanup[-1] == 'cleanup' and stop[-1] == 'stop'
  for argv in (start, resume):
    assert workdir in argv
    assert {'--config.data.source=synthetic', '--config.checkpoint_every_steps=5'} <= set(argv)
    assert '--config.mesh.fsdp=-1' in argv
  assert '--config.total_steps=1000000' in start
  # In a dry run the save is taken to be the step after the first checkpoint.
  assert '--config.total_steps=11' in resume


def _echo_python(tmp_path):
  fake = tmp_path / 'python'
  fake.write_text('#!/usr/bin/env bash\necho "LIBTPU_INIT_ARGS=$LIBTPU_INIT_ARGS"\necho "$@"\n')
  fake.chmod(0o755)
  return fake


def test_tpu_worker_passes_flags_to_the_trainer(tmp_path):
  result = run(
    [REPO / 'launch/tpu_worker.sh', '--config=c.py', '--workdir=gs://b/r'],
    env={
      'PYTHON': _echo_python(tmp_path),
      'SKIP_METADATA': '1',
      'LIBTPU_INIT_ARGS': '',
      'ACCELERATOR_TYPE': 'v5litepod-16',
      'HOME': str(tmp_path),
    },
  )
  assert result.returncode == 0, result.stderr
  flags_line, argv_line = result.stdout.splitlines()
  assert '--xla_tpu_enable_async_collective_fusion=true' in flags_line
  assert argv_line == '-m gato_jax.train --config=c.py --workdir=gs://b/r'


@pytest.mark.parametrize(
  'accelerator, pinned',
  [
    ('v5litepod-16', 'V5E_LIBTPU_INIT_ARGS'),
    ('v5p-32', 'V5P_LIBTPU_INIT_ARGS'),
    ('v4-32', None),
    ('v6e-16', None),
    ('', None),
  ],
)
def test_tpu_worker_picks_libtpu_flags_by_generation(tmp_path, accelerator, pinned):
  """A generation without a recipe gets no flags (and is told so), not v5e's."""
  env = {
    'PYTHON': _echo_python(tmp_path),
    'SKIP_METADATA': '1',
    'LIBTPU_INIT_ARGS': '',
    'TPU_ACCELERATOR_TYPE': '',
    'ACCELERATOR_TYPE': accelerator,
    'HOME': str(tmp_path),
  }
  result = run([REPO / 'launch/tpu_worker.sh', '--config=c.py'], env=env)
  assert result.returncode == 0, result.stderr
  flags = result.stdout.splitlines()[0].split('=', 1)[1].split()
  if pinned:
    assert flags == _libtpu_set(pinned)
    assert f'the set pinned for {accelerator}' in result.stderr
  else:
    assert flags == []
    assert 'none pinned' in result.stderr
  mine = run(
    [REPO / 'launch/tpu_worker.sh', '--config=c.py'], env={**env, 'LIBTPU_INIT_ARGS': '--x=1'}
  )
  assert mine.stdout.splitlines()[0] == 'LIBTPU_INIT_ARGS=--x=1'


def test_slurm_script_gives_each_task_its_process_id(tmp_path):
  """srun runs the task command twice (as SLURM would on 2 nodes x 1 task), scontrol names
  the nodes; each task must reach the trainer with the first node as coordinator."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'scontrol').write_text('#!/usr/bin/env bash\nprintf "node-a\\nnode-b\\n"\n')
  (bin_dir / 'srun').write_text(
    '#!/usr/bin/env bash\n'
    'while [[ "$1" == --* ]]; do shift; done\n'
    'for i in 0 1; do SLURM_PROCID=$i "$@"; done\n'
  )
  fake = tmp_path / 'python'
  fake.write_text('#!/usr/bin/env bash\necho "$@"\n')
  for f in (bin_dir / 'scontrol', bin_dir / 'srun', fake):
    f.chmod(0o755)
  result = run(
    [REPO / 'launch/slurm_gpu.sh', '--config=c.py', '--workdir=/shared/run', '--config.x=a b'],
    env={
      'PATH': f'{bin_dir}:{os.environ["PATH"]}',
      'PYTHON': str(fake),
      'SLURM_JOB_ID': '1234',
      'SLURM_JOB_NODELIST': 'node-[a-b]',
      'SLURM_JOB_NUM_NODES': '2',
      'PROCS_PER_NODE': '1',
      'XLA_FLAGS': '',
    },
  )
  assert result.returncode == 0, result.stderr
  lines = [line for line in result.stdout.splitlines() if line.startswith('-m ')]
  common = '-m gato_jax.train --config=c.py --workdir=/shared/run --config.x=a b'
  assert lines == [
    f'{common} --coordinator_address=node-a:21234 --num_processes=2 --process_id=0',
    f'{common} --coordinator_address=node-a:21234 --num_processes=2 --process_id=1',
  ]


def _pinned(script: str, name: str) -> list[str]:
  text = (REPO / 'launch' / script).read_text()
  block = re.search(rf'{name}="(.*?)"\n', text, re.S).group(1)
  return block.replace('\\\n', ' ').split()


def test_slurm_xla_flags_exist_in_the_pinned_jaxlib():
  """XLA aborts on an unknown XLA_FLAGS entry; the CPU jaxlib parses the GPU flags too."""
  flags = _pinned('slurm_gpu.sh', 'DEFAULT_XLA_FLAGS')
  assert len(flags) >= 5
  result = run(
    [sys.executable, '-c', 'import jax; print(jax.numpy.ones(2).sum())'],
    env={'XLA_FLAGS': ' '.join(flags), 'JAX_PLATFORMS': 'cpu'},
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == '2.0'


def _libtpu_set(name: str) -> list[str]:
  """A pinned libtpu set of tpu_worker.sh, with `$OTHER_SET` expanded."""
  flags = []
  for word in _pinned('tpu_worker.sh', name):
    flags += _libtpu_set(word[1:]) if word.startswith('$') else [word]
  return flags


@pytest.mark.parametrize('name', ['V5E_LIBTPU_INIT_ARGS', 'V5P_LIBTPU_INIT_ARGS'])
def test_libtpu_flags_are_documented_where_they_are_pinned(name):
  text = (REPO / 'launch/tpu_worker.sh').read_text()
  flags = _libtpu_set(name)
  assert len(flags) >= 7 and len(set(flags)) == len(flags)
  for flag in flags:
    assert f'#   {flag}' in text, f'{flag} has no comment line'


# ----------------------------------------------------------------------------------------
# The remote commands themselves, run here: each worker's home is a temporary directory
# whose gato-jax/ is this checkout, the trainer a stub.
# ----------------------------------------------------------------------------------------

STUB_TRAINER = """#!/usr/bin/env bash
# Stands in for python -m gato_jax.train: records its pid and a SIGTERM, then exits 0.
trap 'echo "SIGTERM $$" > "$STUB_DIR/got_term"; exit 0' TERM
echo "$$ $*" > "$STUB_DIR/started"
while true; do sleep 0.1; done
"""


def _worker_home(tmp_path):
  home = tmp_path / 'home'
  home.mkdir()
  (home / 'gato-jax').symlink_to(REPO)
  return home


def on_worker(payload: str, env: dict[str, str]):
  """A --command= payload as ssh runs it: bash in the (worker's) home directory."""
  return run(['bash', '-c', 'cd "$HOME" && bash -c "$0"', payload], env=env)


def _alive(pid: int) -> bool:
  try:
    return b'gato_jax.train' in pathlib.Path(f'/proc/{pid}/cmdline').read_bytes()
  except OSError:
    return False


@pytest.fixture
def trainer(tmp_path):
  """Starts the stub trainer with the exact remote command `tpu_pod.sh train` builds."""
  home = _worker_home(tmp_path)
  stub = tmp_path / 'python'
  stub.write_text(STUB_TRAINER)
  stub.chmod(0o755)
  env = {
    'HOME': str(home),
    'PYTHON': str(stub),
    'STUB_DIR': str(tmp_path),
    'SKIP_METADATA': '1',
    'ACCELERATOR_TYPE': 'v5p-32',
  }
  start = dry_run('train', '--config.total_steps=5')[1][-1]
  launched = on_worker(start, env)
  assert launched.returncode == 0, launched.stderr
  started = tmp_path / 'started'
  for _ in range(200):
    if started.exists() and started.read_text().endswith('\n'):
      break
    time.sleep(0.05)
  pid, argv = started.read_text().split(' ', 1)
  try:
    yield int(pid), argv, env
  finally:
    if _alive(int(pid)):
      os.kill(int(pid), signal.SIGKILL)


def test_stop_reaches_the_trainer_that_train_started(trainer, tmp_path):
  pid, argv, env = trainer
  assert argv.split()[:2] == ['-m', 'gato_jax.train']
  assert (tmp_path / 'home/train.pid').read_text().strip() == str(pid)  # Its own pid.
  assert _alive(pid)
  stop = dry_run('stop', STOP_TIMEOUT='20')[1][0]
  stopped = on_worker(stop, env)
  assert stopped.returncode == 0, stopped.stdout + stopped.stderr
  assert (tmp_path / 'got_term').read_text() == f'SIGTERM {pid}\n'
  assert f'trainer {pid} exited' in stopped.stdout
  assert not _alive(pid)
  again = on_worker(stop, env)  # Nothing left to stop: still a success.
  assert again.returncode == 0 and 'no trainer running' in again.stdout


def _fake_sudo(tmp_path):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  sudo = bin_dir / 'sudo'
  sudo.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/sudo.log\n')
  sudo.chmod(0o755)
  return {'PATH': f'{bin_dir}:{os.environ["PATH"]}'}


def test_cleanup_refuses_a_live_trainer_then_frees_the_chips(trainer, tmp_path):
  """Through a stand-in for sudo: nothing on this machine is killed or removed."""
  pid, _, env = trainer
  env = {**env, **_fake_sudo(tmp_path)}
  refused = run([REPO / 'launch/tpu_worker.sh', 'cleanup'], env=env)
  assert refused.returncode == 1
  assert f'trainer {pid} is running' in refused.stderr
  assert not (tmp_path / 'sudo.log').exists()
  forced = run([REPO / 'launch/tpu_worker.sh', 'cleanup'], env={**env, 'FORCE': '1'})
  assert forced.returncode == 0, forced.stderr
  log = (tmp_path / 'sudo.log').read_text().splitlines()
  assert log[0] == 'pkill -KILL -f gato_jax[.]train'
  assert log[-1] == 'rm -f /tmp/libtpu_lockfile'


def _fake_pod(tmp_path, fail_worker='', other_checkout=False):
  """gcloud runs an ssh --worker=all command once per worker (0 and 1), as each would;
  curl answers the metadata server's worker keys; python stands in for the probe write."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  homes = [_worker_home(tmp_path)]
  if other_checkout:  # Worker 1 got an older, partial copy.
    second = tmp_path / 'home1/gato-jax'
    shutil.copytree(REPO / 'launch', second / 'launch')
    shutil.copytree(
      REPO / 'configs', second / 'configs', ignore=shutil.ignore_patterns('__pycache__')
    )
    homes.append(second.parent)
  else:
    homes.append(homes[0])
  (bin_dir / 'gcloud').write_text(
    '#!/usr/bin/env bash\n'
    'for a in "$@"; do case $a in --command=*) cmd=${a#--command=};; esac; done\n'
    'status=0\n'
    f'(cd {homes[0]} && HOME={homes[0]} FAKE_WORKER=0 bash -c "$cmd") || status=1\n'
    f'(cd {homes[1]} && HOME={homes[1]} FAKE_WORKER=1 bash -c "$cmd") || status=1\n'
    'exit $status\n'
  )
  (bin_dir / 'curl').write_text(
    '#!/usr/bin/env bash\n'
    'case "${@: -1}" in\n'
    '  */agent-worker-number) echo -n "$FAKE_WORKER" ;;\n'
    '  */worker-network-endpoints) echo -n "w0:0:10.0.0.1,w1:1:10.0.0.2" ;;\n'
    '  *) exit 22 ;;\n'
    'esac\n'
  )
  (tmp_path / 'python').write_text(
    f'#!/usr/bin/env bash\ncat > /dev/null\n[[ "$FAKE_WORKER" != "{fail_worker}" ]]\n'
  )
  for f in (bin_dir / 'gcloud', bin_dir / 'curl', tmp_path / 'python'):
    f.chmod(0o755)
  return {
    'PATH': f'{bin_dir}:{os.environ["PATH"]}',
    'PYTHON': str(tmp_path / 'python'),
    'SKIP_METADATA': '',
    'WORKDIR': 'gs://bucket/run',
    'TPU_NAME': 'pod',
  }


def test_preflight_passes_when_every_worker_writes_and_runs_this_checkout(tmp_path):
  result = run([REPO / 'launch/tpu_pod.sh', 'preflight'], env=_fake_pod(tmp_path))
  assert result.returncode == 0, result.stdout + result.stderr
  fingerprint = run([REPO / 'launch/tpu_worker.sh', 'fingerprint']).stdout.strip()
  for worker in (0, 1):
    assert f'preflight: worker {worker} of 2 ok checkout {fingerprint}' in result.stdout
  assert 'preflight: PASS: 2 workers' in result.stdout


def test_preflight_fails_on_a_worker_that_cannot_write(tmp_path):
  result = run([REPO / 'launch/tpu_pod.sh', 'preflight'], env=_fake_pod(tmp_path, fail_worker='1'))
  assert result.returncode == 1
  assert 'preflight: worker 1 FAIL: cannot write and read back gs://bucket/run/.preflight/' in (
    result.stdout
  )
  assert '1 of 2 workers passed' in result.stderr


def test_preflight_fails_when_workers_run_different_checkouts(tmp_path):
  result = run(
    [REPO / 'launch/tpu_pod.sh', 'preflight'], env=_fake_pod(tmp_path, other_checkout=True)
  )
  assert result.returncode == 1
  assert 'the workers run different checkouts' in result.stderr
