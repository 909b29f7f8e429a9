"""Benchmarks run and report sane figures (speed itself is never asserted)."""

import json

from benchmarks import pipeline, report
from benchmarks import tokenize as tokenize_benchmark
from configs import demo


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


def test_pipeline_public_rows_read_mock_datasets_written_in_place(tmp_path):
  config = demo.get_config()
  config.data.data_dir = str(tmp_path)
  rows = pipeline.public_rows(config, batch_size=2, batches=2, episodes=2, steps=4, warmup=1)
  assert [r['stream'] for r in rows] == ['mock oxe_fractal', 'mock rlu_atari_pong']
  assert all(r['tokens/s'] > 0 and 0 <= r['pad share'] < 1 for r in rows)
  # Atari timesteps are 30 patches of a 96x80 frame, the separator and the action.
  assert rows[1]['image share'] == round(30 / 32, 3)
  assert 0 < rows[0]['image share'] < 1
  # Written once, by TFDS, under the catalog's dataset names, where the rows read them.
  written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob('*.tfrecord*'))
  assert written == [
    'mock_rlds/oxe_fractal_2x4/fractal20220817_data/0.1.0/'
    'fractal20220817_data-train.tfrecord-00000-of-00001',
    'mock_rlds/rlu_atari_pong_2x4/rlu_atari/Pong_run_1/1.3.0/'
    'rlu_atari-train.tfrecord-00000-of-00001',
  ]
