"""The public RLDS sources the reader command can read (they need the network).

  python -m data_pipelines.public_rlds read --config=configs/public_rlds.py --source=oxe_fractal
  python -m data_pipelines.public_rlds read --config=configs/public_rlds.py \
      --source=rlu_atari_pong --config.sources.rlu_atari_pong.data_dir=/data/tfds

The registered sources are readable without this config too (`read --source=NAME` with any
run config); it exists to override a source's fields for one read, as in the second line.

`config.sources` is gato_jax/data/public_catalog.py's SOURCES, one entry per source: RL
Unplugged Atari (run 1 of every game, 'rlu_atari_<game>'), DM Control Suite
('rlu_control_suite_<config>'), DeepMind Lab ('rlu_dmlab_<level>') and the ten largest Open
X-Embodiment datasets ('oxe_<robot>'). Each names its TFDS `dataset`, the `spec` its episodes
become, where each spec field lies in a step (`observation`, `action`), its `data_dir` (None:
TFDS's default; --data_dir overrides it) and its mixture `domain`. The catalog's docstring says
how to add one; override a field for one run with e.g.
--config.sources.oxe_fractal.data_dir=/data/tfds.
"""

import copy

import ml_collections

from gato_jax.data import public_catalog


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # A copy: ConfigDict keeps the catalog's lists, and an override must not edit the catalog.
  config.sources = ml_collections.ConfigDict(copy.deepcopy(public_catalog.SOURCES))
  return config
