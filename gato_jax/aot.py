"""Compiles the trainer's own step for a TPU slice on this machine, and says whether it fits.

  python -m gato_jax.aot --config=configs/gato_1b2.py:v5e-16
  python -m gato_jax.aot --config=configs/gato_1b2.py --topology=v5p-32 \\
      --config.mesh.data=1 --config.mesh.fsdp=16 --config.grad_accum_steps=2
  python -m gato_jax.aot --config=configs/demo.py --topology=cpu:8 --json_out=/tmp/aot.json
  python -m gato_jax.aot --config=configs/gato_1b2.py:h100-8

The step compiled is the one `python -m gato_jax.train` runs: `train.jit_train_step` on the
abstract state of `train.abstract_train_state`, with the same shardings and donation, for
the global batch, on a slice that gato_jax/topology.py names. Nothing is allocated: libtpu's
compile-only devices stand in for the slice (MaxText's train_compile.py does the same), so a
config can be proven to compile and fit before a pod is rented. The evaluator's KV-cached
decode step is compiled too, on the evaluation chip, at the batch sizes asked for.

Per device it prints arguments, outputs, temporaries and the peak against the chip's HBM,
the model FLOPs per step and the step time and MFU that the chip's peak FLOP/s would allow
(a roofline: no communication, no memory stalls). It exits 1 when a step does not fit,
saying by how much. TPU topologies need libtpu: `pip install -e '.[aot]'`; `h100-N` (N
H100s, 8 per host) needs jax's CUDA plugin, `pip install -e '.[cuda]'`, but no GPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

# Compiling needs no accelerator: this process runs JAX on the CPU (TPU and GPU devices
# come from the topology APIs below), so libtpu and the CUDA plugin are never started as
# backends, which would probe for hardware, and libtpu's per-process lock file is not
# taken from a trainer or another compile.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gato_jax import (  # noqa: E402
  cli,
  data,
  distributed,
  metrics,
  optimizer,
  sharding,
  tokenizer,
  train,
)
from gato_jax.model import ModelOptions, decode, from_config, inputs  # noqa: E402
from gato_jax.topology import GiB, Slice, parse_topology  # noqa: E402

# ----------------------------------------------------------------------------------------
# Compiling and measuring
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
  """One compiled step on one slice; bytes are per device."""

  step: str  # 'train' or 'decode batch=N'.
  topology: str
  device_kind: str
  devices: int
  hosts: int
  settings: dict[str, Any]
  fits: bool
  hbm_bytes: int | None
  peak_bytes: int | None = None
  argument_bytes: int | None = None
  output_bytes: int | None = None
  alias_bytes: int | None = None
  temp_bytes: int | None = None
  # Host memory the step uses (optimizer state or activations offloaded to the host).
  host_bytes: int | None = None
  error: str | None = None
  flops_per_step: float | None = None
  roofline_step_s: float | None = None
  roofline_tokens_per_s: float | None = None
  mfu_bound: float | None = None
  compile_s: float = 0.0

  def over_by(self) -> float | None:
    if self.peak_bytes is None or self.hbm_bytes is None:
      return None
    return self.peak_bytes - self.hbm_bytes


_EXHAUSTED = re.compile(r'RESOURCE_EXHAUSTED|exceeds available HBM|Ran out of memory', re.I)
_NEEDED = re.compile(r'required for HLO temporaries \(([\d.]+)([TGMK])\)')


def _compile(lowered, report: Report) -> Any:
  start = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # XlaRuntimeError; its class moved between jax versions.
    report.compile_s = time.perf_counter() - start
    message = str(e)
    if not _EXHAUSTED.search(message):
      raise
    report.fits = False
    report.error = message.splitlines()[0][:400]
    needed = _NEEDED.search(message)
    if needed:
      scale = {'T': 1024 * GiB, 'G': GiB, 'M': 1024**2, 'K': 1024}[needed.group(2)]
      report.temp_bytes = int(float(needed.group(1)) * scale)
      report.peak_bytes = report.temp_bytes
    return None
  report.compile_s = time.perf_counter() - start
  stats = compiled.memory_analysis()
  if stats is not None:
    report.argument_bytes = stats.argument_size_in_bytes
    report.output_bytes = stats.output_size_in_bytes
    report.alias_bytes = stats.alias_size_in_bytes
    report.temp_bytes = stats.temp_size_in_bytes
    total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
             - stats.alias_size_in_bytes + stats.temp_size_in_bytes)
    host = (stats.host_argument_size_in_bytes + stats.host_output_size_in_bytes
            - stats.host_alias_size_in_bytes + stats.host_temp_size_in_bytes)
    report.host_bytes = host
    # The compiler's peak counts host buffers too; what must fit in HBM is the rest.
    peak = (getattr(stats, 'peak_memory_in_bytes', 0) or 0) - host
    report.peak_bytes = max(peak, total)
  report.fits = report.hbm_bytes is None or (report.peak_bytes or 0) <= report.hbm_bytes
  return compiled


def compile_train(config: ml_collections.ConfigDict, target: Slice) -> Report:
  """Compiles the trainer's step for the whole global batch on `target`."""
  lowered, report = lower_train(config, target)
  _compile(lowered, report)
  return report


def lower_train(config: ml_collections.ConfigDict, target: Slice) -> tuple[Any, Report]:
  """The trainer's step lowered for `target`, and its report with everything but memory."""
  train.validate_config(config, len(target.devices), target.hosts)
  mesh = sharding.make_mesh(config, target.devices)
  rules = config.axis_rules
  tx = optimizer.make_optimizer(config)
  layout = train.abstract_train_state(config, mesh, tx)
  options = ModelOptions.from_config(config)
  shapes = data.batch_shapes(config.batch_size, config.model.max_length)
  step = train.jit_train_step(config, mesh, layout, tx, shapes)
  batch = {
    k: jax.ShapeDtypeStruct(
      s.shape, s.dtype, sharding=distributed.batch_sharding(mesh, rules, len(s.shape)))
    for k, s in shapes.items()
  }
  length = config.model.max_length
  report = Report(
    step='train', topology=target.name, device_kind=target.device_kind,
    devices=len(target.devices), hosts=target.hosts, fits=False, hbm_bytes=target.hbm_bytes,
    settings={
      'mesh': dict(mesh.shape), 'batch_size': config.batch_size, 'max_length': length,
      'grad_accum_steps': config.grad_accum_steps, 'remat': config.model.remat,
      'remat_save': config.model.remat_save, 'remat_offload': config.model.remat_offload,
      'remat_patches': config.model.remat_patches, 'loss_chunks': config.model.loss_chunks,
      'optimizer_host_offload': config.optimizer.host_offload,
      'dtype': config.model.dtype, 'attention': config.model.attention,
      'scan_layers': config.model.scan_layers, 'pack': config.data.get('pack', False),
    },
  )
  with sharding.axis_rules(mesh, rules):
    lowered = step.lower(layout.abstract, batch, jax.ShapeDtypeStruct((), jnp.int32))
  tokens = config.batch_size * length
  vocab_size = tokenizer.layout_from_config(config).vocab_size
  per_token = metrics.flops_per_token(options, length, vocab_size)
  hardware = per_token['total'] + metrics.remat_flops_per_token(options, length, vocab_size)
  report.flops_per_step = per_token['total'] * tokens
  report.roofline_step_s = hardware * tokens / (target.peak_flops * len(target.devices))
  report.roofline_tokens_per_s = tokens / report.roofline_step_s
  report.mfu_bound = per_token['total'] / hardware
  return lowered, report


def decode_timestep(config: ml_collections.ConfigDict) -> tuple[str, int, int]:
  """(task, observation positions, action tokens) of the longest env timestep that fits L."""
  from gato_jax.specs import TASK_SPECS

  fitting = [s for s in TASK_SPECS.values() if s.tokens_per_timestep <= config.model.max_length]
  spec = max(fitting, key=lambda s: s.tokens_per_timestep)
  return spec.name, spec.observation_tokens + 1, spec.action_tokens


def compile_decode(config: ml_collections.ConfigDict, target: Slice, batch_size: int) -> Report:
  """Compiles the evaluator's cached decode step (one timestep in, its action out).

  The evaluator runs on one chip with the whole model on it, so this is compiled for the
  first device of `target` with every array there.
  """
  from gato_jax.model import sampling

  device = target.devices[0]
  place = jax.sharding.SingleDeviceSharding(device)
  abstract = nnx.eval_shape(lambda: from_config(config, nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  task, positions, action_tokens = decode_timestep(config)
  layout = tokenizer.layout_from_config(config)
  cache = jax.eval_shape(lambda: decode.init_cache(abstract, batch_size))
  observation = {k: v for k, v in data.batch_shapes(batch_size, positions).items()
                 if k in inputs.MODEL_INPUTS}
  key = jax.eval_shape(lambda: jax.random.key(0))

  def on_device(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=place), tree)

  def step(state, observation, cache, key):
    return sampling.cached_step(
      nnx.merge(graphdef, state), observation, cache, key, action_tokens=action_tokens,
      action_kind=int(tokenizer.TokenKind.ACTION_DISCRETE), start=0,
      stop=layout.vocab_size, temperature=1.0)

  report = Report(
    step=f'decode batch={batch_size}', topology=target.name, device_kind=target.device_kind,
    devices=1, hosts=1, fits=False, hbm_bytes=target.hbm_bytes,
    settings={'batch_size': batch_size, 'task': task, 'observation_positions': positions,
              'action_tokens': action_tokens, 'cache_length': config.model.max_length,
              'dtype': config.model.dtype, 'param_dtype': config.model.param_dtype},
  )
  lowered = jax.jit(step, donate_argnums=2).lower(
    on_device(state), on_device(observation), on_device(cache), on_device(key))
  _compile(lowered, report)
  return report


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------


def _gib(value: int | None) -> str:
  return '-' if value is None else f'{value / GiB:.2f}'


def remat_setting(settings: dict[str, Any]) -> str:
  """'full', or 'names(save=context; offload=mlp_hidden)': what a report's step keeps."""
  if settings['remat'] != 'names':
    return settings['remat']
  lists = [f'{k}={settings[f"remat_{k}"]}' for k in ('save', 'offload') if settings[f'remat_{k}']]
  return f'names({"; ".join(lists)})'


def format_report(report: Report) -> str:
  """The block of lines the tool prints for one compiled step."""
  s = report.settings
  if report.step == 'train':
    mesh = ' '.join(f'{k}={v}' for k, v in s['mesh'].items())
    what = (f'train step on {report.topology}: {report.devices} x {report.device_kind}, '
            f'{report.hosts} hosts; mesh {mesh}; batch {s["batch_size"]} x L '
            f'{s["max_length"]}, grad_accum {s["grad_accum_steps"]}, remat {remat_setting(s)}, '
            f'attention {s["attention"]}')
  else:
    what = (f'{report.step} on one {report.device_kind} ({report.topology}): '
            f'{s["task"]}, {s["observation_positions"]} observation positions, '
            f'{s["action_tokens"]} action tokens, cache {s["cache_length"]}')
  lines = [what]
  hbm = _gib(report.hbm_bytes)
  rows = [('arguments', report.argument_bytes), ('outputs', report.output_bytes),
          ('aliased (donated)', report.alias_bytes), ('temporaries', report.temp_bytes)]
  if report.host_bytes:
    rows.append(('host memory', report.host_bytes))
  lines += [f'  {name:<20}{_gib(v):>9} GiB' for name, v in rows]
  if report.peak_bytes is not None and report.hbm_bytes:
    share = f' ({100 * report.peak_bytes / report.hbm_bytes:.0f}%)'
  else:
    share = ''
  verdict = 'fits' if report.fits else 'DOES NOT FIT'
  label = 'peak' if report.argument_bytes is not None else 'peak (temporaries)'
  lines.append(f'  {label:<20}{_gib(report.peak_bytes):>9} GiB of {hbm} GiB HBM{share}: '
               f'{verdict}')
  if not report.fits:
    over = report.over_by()
    if over is not None:
      lines.append(f'  over by {over / GiB:.2f} GiB per device')
    if report.error:
      lines.append(f'  compiler: {report.error}')
  if report.flops_per_step:
    lines.append(f'  model FLOPs/step    {report.flops_per_step:.3e}')
    lines.append(f'  roofline            {report.roofline_step_s:.3f} s/step, '
                 f'{report.roofline_tokens_per_s:,.0f} tokens/s, MFU at most '
                 f'{100 * report.mfu_bound:.0f}% (remat recompute)')
  lines.append(f'  compiled in {report.compile_s:.0f} s')
  return '\n'.join(lines)


def run(config: ml_collections.ConfigDict, topology: str, eval_topology: str,
        decode_batches: Sequence[int]) -> Iterator[Report]:
  """Every step the tool compiles, in order: train on `topology`, decode on `eval_topology`.

  A generator, so that each report can be shown before the next compile starts.
  """
  yield compile_train(config, parse_topology(topology))
  if decode_batches:
    target = parse_topology(eval_topology)
    for b in decode_batches:
      yield compile_decode(config, target, b)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Only when run as a program, so that modules importing this one keep their flags."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config (configs/*.py[:slice]).')
  flags.DEFINE_string('topology', '', 'Slice to compile for: v5e-16, v4-32, v5p-128, v6e-8, '
                      "h100-8 or cpu:N; default the config's `topology` key (slice presets).")
  flags.DEFINE_string('eval_topology', 'v5e-1', "The evaluator's chip (launch/tpu_pod.sh's "
                      'EVAL_ACCELERATOR_TYPE); cpu:N for CPU.')
  flags.DEFINE_list('decode_batch_sizes', ['1', '16'], 'Decode steps to compile; empty = none.')
  flags.DEFINE_string('json_out', '', 'Also write the reports here as JSON.')
  flags.mark_flags_as_required(['config'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = FLAGS.config
  topology = FLAGS.topology or config.get('topology', '')
  if not topology:
    raise app.UsageError(
      '--topology is required (or a slice preset: --config=configs/gato_1b2.py:v5e-16)')
  reports = []
  # A config or topology error (ValueError naming its key) ends the run through cli.run:
  # `error: <cause>` as the last line, exit 2, no traceback.
  for report in run(config, topology, FLAGS.eval_topology,
                    [int(b) for b in FLAGS.decode_batch_sizes]):
    print(format_report(report), flush=True)
    reports.append(report)
  if FLAGS.json_out:
    with open(FLAGS.json_out, 'w') as f:
      json.dump([dataclasses.asdict(r) for r in reports], f, indent=1)
  failed = [r.step for r in reports if not r.fits]
  if failed:
    print(f'does not fit: {", ".join(failed)}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
