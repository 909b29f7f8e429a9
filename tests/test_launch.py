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
import subprocess
import sys

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


def test_tpu_pod_train_starts_the_worker_script_on_every_worker():
  result = run(
    [REPO / 'launch/tpu_pod.sh', 'train', '--config.mesh.data=1', '--config.mesh.fsdp=-1'],
    env={'DRY_RUN': '1', 'WORKDIR': 'gs://bucket/run', 'TPU_NAME': 'pod', 'ZONE': 'z'},
  )
  assert result.returncode == 0, result.stderr
  argv = shlex.split(result.stdout)
  assert argv[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'pod']
  assert '--worker=all' in argv and '--zone=z' in argv
  remote = shlex.split(next(a for a in argv if a.startswith('--command=')).split('=', 1)[1])
  start = remote.index('launch/tpu_worker.sh')
  assert remote[start + 1 : start + 5] == [
    '--config=configs/gato_1b2.py',
    '--workdir=gs://bucket/run',
    '--config.mesh.data=1',
    '--config.mesh.fsdp=-1',
  ]


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
  expected = 'gato_jax.evaluator --config=configs/gato_1b2.py --workdir=gs://bucket/run --step=-1'
  assert expected in remote


def test_tpu_worker_passes_flags_to_the_trainer(tmp_path):
  fake = tmp_path / 'python'
  fake.write_text('#!/usr/bin/env bash\necho "LIBTPU_INIT_ARGS=$LIBTPU_INIT_ARGS"\necho "$@"\n')
  fake.chmod(0o755)
  result = run(
    [REPO / 'launch/tpu_worker.sh', '--config=c.py', '--workdir=gs://b/r'],
    env={'PYTHON': fake, 'SKIP_METADATA': '1', 'LIBTPU_INIT_ARGS': ''},
  )
  assert result.returncode == 0, result.stderr
  flags_line, argv_line = result.stdout.splitlines()
  assert '--xla_tpu_enable_async_collective_fusion=true' in flags_line
  assert argv_line == '-m gato_jax.train --config=c.py --workdir=gs://b/r'


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


def test_libtpu_flags_are_documented_where_they_are_pinned():
  text = (REPO / 'launch/tpu_worker.sh').read_text()
  for flag in _pinned('tpu_worker.sh', 'DEFAULT_LIBTPU_INIT_ARGS'):
    assert f'#   {flag}' in text, f'{flag} has no comment line'
