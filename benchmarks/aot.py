"""Every slice preset compiled for its TPU slice: per-chip peak memory, fit, roofline.

  python -m benchmarks.aot                                  # gato_1b2, every preset
  python -m benchmarks.aot --config=configs/gato_364m.py --presets=v5e-16,v4-32

Each row is `python -m gato_jax.aot --config=<config>:<preset>` (the trainer's own step,
libtpu's compile-only devices, nothing allocated), so the table is what docs/scaling.md
quotes. The evaluator's decode step is compiled once on the eval chip. A preset whose
compiler is not installed (libtpu for TPUs, jax's CUDA plugin for `h100-8`) is listed as
skipped, with the install line. Compiling gato_1b2
takes one to five minutes per preset on 2 cores and 3-4 GiB of host memory; libtpu is
needed (`pip install -e '.[aot]'`).
"""

from __future__ import annotations

import dataclasses
import pathlib

from absl import app, flags

from benchmarks import report
from configs import slices
from gato_jax import aot
from gato_jax.aot import GiB

_CONFIG = flags.DEFINE_string('config', 'configs/gato_1b2.py', 'Paper config file.')
_PRESETS = flags.DEFINE_list('presets', list(slices.PRESETS), 'Slice presets to compile.')
_DECODE = flags.DEFINE_list('decode_batch_sizes', ['1', '16'], 'Decode batches; empty = none.')
_JSON = flags.DEFINE_string('json_out', '', 'Default benchmarks/results/aot_<config>.json.')


def _load(path: str, preset: str):
  """The config file's get_config(preset), as `--config=path:preset` would load it."""
  import importlib.util

  spec = importlib.util.spec_from_file_location('experiment_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def _row(r: aot.Report) -> dict:
  s = r.settings
  peak = None if r.peak_bytes is None else round(r.peak_bytes / GiB, 2)
  hbm = None if r.hbm_bytes is None else round(r.hbm_bytes / GiB, 2)
  if r.step == 'train':
    mesh = 'x'.join(f'{k[0]}{v}' for k, v in s['mesh'].items() if v > 1) or 'd1'
    setting = f'{mesh} accum {s["grad_accum_steps"]} remat {s["remat"]}'
  else:
    setting = f'{s["task"]}, cache {s["cache_length"]}'
  return {
    'slice': r.topology,
    'step': r.step,
    'setting': setting,
    'peak GiB': peak,
    'HBM GiB': hbm,
    'used %': None if peak is None else round(100 * peak / hbm),
    'fits': r.fits,
    'roofline s/step': None if r.roofline_step_s is None else round(r.roofline_step_s, 3),
    'MFU bound %': None if r.mfu_bound is None else round(100 * r.mfu_bound),
    'compile s': round(r.compile_s),
  }


def main(argv: list[str]) -> None:
  del argv
  reports, skipped = [], []
  for preset in _PRESETS.value:
    config = _load(_CONFIG.value, preset)
    try:
      target = aot.parse_topology(preset)
    except SystemExit as e:  # libtpu or the CUDA plugin is missing: say so, go on.
      print(f'{preset}: skipped: {e}', flush=True)
      skipped.append({'slice': preset, 'step': 'train', 'setting': f'skipped: {e}'})
      continue
    r = aot.compile_train(config, target)
    print(aot.format_report(r), flush=True)
    reports.append(r)
  if _DECODE.value:
    config = _load(_CONFIG.value, _PRESETS.value[0])
    target = aot.parse_topology(slices.EVAL_TOPOLOGY)
    for b in _DECODE.value:
      r = aot.compile_decode(config, target, int(b))
      print(aot.format_report(r), flush=True)
      reports.append(r)
  name = pathlib.Path(_CONFIG.value).stem
  report.emit(
    'aot',
    f'{name}: compiled for TPU slices with libtpu compile-only devices (peak per chip)',
    [_row(r) for r in reports] + skipped,
    _JSON.value or f'benchmarks/results/aot_{name}.json',
    config=_CONFIG.value,
    reports=[dataclasses.asdict(r) for r in reports],
  )


if __name__ == '__main__':
  app.run(main)
