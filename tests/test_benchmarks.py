"""Benchmarks run and report sane figures (speed itself is never asserted)."""

import json

from benchmarks import report
from benchmarks import tokenize as tokenize_benchmark


def test_tokenize_benchmark_rows_and_json(tmp_path):
  rows = tokenize_benchmark.measure(steps=20, repeats=1)
  assert [r['path'] for r in rows] == [
    'tokenize_steps (pipeline)',
    'tokenize_timestep (live)',
    'continuous_to_tokens only',
    'patchify only',
  ]
  assert all(r['tokens/s'] > 0 for r in rows)
  # Each timestep is 64 tokens: 20 patches, 39 floats, the separator and 4 action tokens.
  per_step = rows[0]['tokens/s'] / rows[0]['timesteps/s']
  assert abs(per_step - 64) < 1e-6
  out = tmp_path / 'tokenize.json'
  report.emit('tokenize', 'title', rows, str(out), steps=20)
  saved = json.loads(out.read_text())
  assert saved['benchmark'] == 'tokenize' and saved['steps'] == 20 and len(saved['rows']) == 4
