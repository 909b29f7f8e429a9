"""Compiled memory on TPU slices: every slice preset, and the memory knobs one by one.

  python -m benchmarks.aot                          # gato_1b2, every preset, decode on v5e-1
  python -m benchmarks.aot --config=configs/gato_364m.py --presets=v5e-16,v4-32
  python -m benchmarks.aot --sweep=knobs            # docs/performance.md's knob table

Each row is one run of `python -m gato_jax.aot --config=<config>:<preset> --json_out=F` in
its own process (the trainer's own step, libtpu's compile-only devices, nothing
allocated), read back from that JSON: the table is what the tool prints and what
docs/scaling.md and docs/performance.md quote. A compile of gato_1b2 takes one to five
minutes on 2 cores and 3-4 GiB of host memory; a process per compile gives that memory
back. A preset whose compiler is not installed (libtpu for TPUs, jax's CUDA plugin for
`h100-8`) is listed as skipped with the tool's install line.

`--sweep=knobs` compiles the v5e-16 preset at the issue's three (remat, accumulation)
settings, starting with every knob off and turning them on one after another.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

from absl import flags

from benchmarks import report
from configs import slices
from gato_jax import cli
from gato_jax.aot import remat_setting
from gato_jax.topology import GiB

_CONFIG = flags.DEFINE_string('config', 'configs/gato_1b2.py', 'Paper config file.')
_PRESETS = flags.DEFINE_list('presets', list(slices.PRESETS), 'Slice presets to compile.')
_DECODE = flags.DEFINE_list('decode_batch_sizes', ['1', '16'], 'Decode batches; empty = none.')
_SWEEP = flags.DEFINE_enum('sweep', 'presets', ['presets', 'knobs'],
                           "'presets': every preset; 'knobs': the knob ladder on v5e-16.")
_JSON = flags.DEFINE_string('json_out', '', 'Default benchmarks/results/aot_<config>.json '
                            '(aot_knobs_<config>.json for --sweep=knobs).')

# The knob ladder: each rung adds one knob to the one before (config overrides).
KNOB_LADDER = (
  ('none: xla attention, whole logits, ResNet kept',
   {'model.attention': 'xla', 'model.loss_chunks': 1, 'model.remat_patches': False}),
  ('+ model.loss_chunks=8', {'model.loss_chunks': 8}),
  ('+ model.remat_patches', {'model.remat_patches': True}),
  ("+ model.attention='splash'", {'model.attention': 'splash'}),
  ('+ optimizer.host_offload', {'optimizer.host_offload': True}),
)
# (model.remat, grad_accum_steps): the settings MaxText was compiled at in the issue.
KNOB_SETTINGS = (('minimal', 4), ('full', 1), ('full', 4))
KNOB_PRESET = 'v5e-16'


def compile_with_tool(config: str, extra: list[str]) -> list[dict] | str:
  """gato_jax.aot's reports for `config` and flags, or the reason there are none."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'aot.json')
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'ALLOW_MULTIPLE_LIBTPU_LOAD': '1'}
    result = subprocess.run(
      [sys.executable, '-m', 'gato_jax.aot', f'--config={config}', f'--json_out={out}',
       *extra], env=env, capture_output=True, text=True)
    print(result.stdout, end='', flush=True)
    if os.path.exists(out):  # Written on exit 0 and on "does not fit" (exit 1).
      with open(out) as f:
        return json.load(f)
    lines = (result.stderr.strip() or 'no output').splitlines()
    return lines[-1]


def _row(r: dict, **extra) -> dict:
  s = r['settings']
  peak = None if r['peak_bytes'] is None else round(r['peak_bytes'] / GiB, 2)
  hbm = None if r['hbm_bytes'] is None else round(r['hbm_bytes'] / GiB, 2)
  if r['step'] == 'train':
    mesh = 'x'.join(f'{k[0]}{v}' for k, v in s['mesh'].items() if v > 1) or 'd1'
    setting = (f'{mesh} accum {s["grad_accum_steps"]} remat {remat_setting(s)} '
               f'attention {s["attention"]}')
  else:
    setting = f'{s["task"]}, cache {s["cache_length"]}'
  return {
    'slice': r['topology'],
    'step': r['step'],
    **extra,
    'setting': setting,
    'peak GiB': peak,
    'HBM GiB': hbm,
    'used %': None if peak is None else round(100 * peak / hbm),
    'fits': r['fits'],
    'roofline s/step': None if r['roofline_step_s'] is None else round(r['roofline_step_s'], 3),
    'MFU bound %': None if r['mfu_bound'] is None else round(100 * r['mfu_bound']),
    'compile s': round(r['compile_s']),
  }


def sweep_presets() -> tuple[list[dict], list[dict]]:
  rows, reports = [], []
  for i, preset in enumerate(_PRESETS.value):
    decode = _DECODE.value if i == 0 else []
    extra = [f'--decode_batch_sizes={",".join(decode)}', f'--eval_topology={slices.EVAL_TOPOLOGY}']
    got = compile_with_tool(f'{_CONFIG.value}:{preset}', extra)
    if isinstance(got, str):
      print(f'{preset}: skipped: {got}', flush=True)
      rows.append({'slice': preset, 'step': 'train', 'setting': f'skipped: {got}'})
      continue
    reports += got
    rows += [_row(r) for r in got]
  return rows, reports


def sweep_knobs() -> tuple[list[dict], list[dict]]:
  rows, reports = [], []
  for remat, accum in KNOB_SETTINGS:
    overrides: dict = {'model.remat': remat, 'grad_accum_steps': accum}
    for label, knob in KNOB_LADDER:
      overrides.update(knob)
      flags_ = [f'--config.{k}={v}' for k, v in overrides.items()]
      got = compile_with_tool(f'{_CONFIG.value}:{KNOB_PRESET}',
                              ['--decode_batch_sizes=', *flags_])
      if isinstance(got, str):
        rows.append({'slice': KNOB_PRESET, 'step': 'train', 'knobs': label,
                     'setting': f'failed: {got}'})
        continue
      reports += got
      rows += [_row(r, knobs=label) for r in got]
  return rows, reports


def main(argv: list[str]) -> None:
  del argv
  name = pathlib.Path(_CONFIG.value).stem
  if _SWEEP.value == 'presets':
    rows, reports = sweep_presets()
    title = f'{name}: compiled for its slice presets with compile-only devices (peak per chip)'
    default_out = f'benchmarks/results/aot_{name}.json'
  else:
    rows, reports = sweep_knobs()
    title = f'{name} on {KNOB_PRESET}: memory knobs turned on one after another'
    default_out = f'benchmarks/results/aot_knobs_{name}.json'
  report.emit('aot', title, rows, _JSON.value or default_out, config=_CONFIG.value,
              sweep=_SWEEP.value, reports=reports)


if __name__ == '__main__':
  cli.run(main)
