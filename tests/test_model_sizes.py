"""The paper's three sizes land within 10% of their published parameter counts."""

import pathlib
import subprocess
import sys

import pytest

from configs import gato_1b2, gato_79m, gato_364m
from gato_jax.model.summary import param_counts


@pytest.mark.parametrize(
  'module, paper',
  [
    (gato_79m, 79e6),
    (gato_364m, 364e6),
    (gato_1b2, 1.18e9),
  ],
)
def test_sizes_match_the_paper_within_ten_percent(module, paper):
  total = sum(param_counts(module.get_config()).values())
  assert abs(total - paper) / paper < 0.10, f'{total:,} vs {paper:,.0f}'


def test_the_three_configs_use_the_paper_dimensions():
  dims = {
    (m.num_layers, m.d_model, m.num_heads, m.mlp_dim, m.head_dim, m.max_length)
    for m in (c.get_config().model for c in (gato_79m, gato_364m, gato_1b2))
  }
  assert dims == {
    (8, 768, 24, 3072, 32, 1024),
    (12, 1536, 12, 6144, 128, 1024),
    (24, 2048, 16, 8192, 128, 1024),
  }


def test_summary_prints_by_module_and_ends_with_the_total():
  root = pathlib.Path(__file__).parents[1]
  out = (
    subprocess.run(
      [sys.executable, '-m', 'gato_jax.model.summary', '--config=configs/demo.py'],
      check=True,
      capture_output=True,
      text=True,
      cwd=root,
    )
    .stdout.strip()
    .splitlines()
  )
  assert out[-1].startswith('total_params ')
  total = int(out[-1].split()[1])
  rows = {line.split()[0]: int(line.split()[1].replace(',', '')) for line in out[2:-2]}
  top = sum(n for name, n in rows.items() if name.count('/') == 1)
  assert top == total
  assert 5e5 < total < 2e6  # The demo model is about 1M parameters.
