r"""The offline image-caption set: drawn shapes with captions, written as a TFDS dataset.

Gato trains on (image, text) pairs; with no network, the project draws its own: 1 to 3
coloured shapes on a plain background, each caption saying what is where, e.g.
"a red circle at the top left and a blue square at the bottom right". Small, but a real
captioning task: the caption is only predictable from the pixels.

  python -m data_pipelines.captions --examples=2000 --data_dir=data

gato_jax/data/captions.py reads it back (and COCO by TFDS name).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from gato_jax import cli
from gato_jax.data import captions

IMAGE_SIZE = 64  # A multiple of the 16-pixel patch: 16 patches per image.
COLORS = {
  'red': (220, 40, 40),
  'green': (40, 180, 60),
  'blue': (40, 80, 220),
  'yellow': (230, 210, 40),
  'purple': (150, 60, 190),
  'white': (240, 240, 240),
}
SHAPES = ('square', 'circle', 'triangle')
CELLS = {  # Name -> (row, column) of a 2x2 grid cell.
  'top left': (0, 0),
  'top right': (0, 1),
  'bottom left': (1, 0),
  'bottom right': (1, 1),
}


def _draw(image: np.ndarray, shape: str, color: tuple[int, int, int], cell: tuple[int, int]):
  half = IMAGE_SIZE // 2
  top, left = cell[0] * half, cell[1] * half
  y, x = np.mgrid[0:half, 0:half]
  c, r = (half - 1) / 2, half * 0.38
  if shape == 'square':
    mask = (np.abs(y - c) <= r) & (np.abs(x - c) <= r)
  elif shape == 'circle':
    mask = (y - c) ** 2 + (x - c) ** 2 <= r**2
  else:  # Triangle, apex up.
    mask = (y >= c - r) & (y <= c + r) & (np.abs(x - c) <= (y - (c - r)) / 2)
  image[top : top + half, left : left + half][mask] = color


def draw_example(rng: np.random.Generator) -> tuple[np.ndarray, str]:
  """One uint8 [64, 64, 3] image and its caption."""
  image = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 30, np.uint8)
  cells = rng.choice(list(CELLS), size=rng.integers(1, 4), replace=False)
  parts = []
  for cell in sorted(cells, key=list(CELLS).index):
    color = rng.choice(list(COLORS))
    shape = rng.choice(SHAPES)
    _draw(image, shape, COLORS[color], CELLS[cell])
    parts.append(f'a {color} {shape} at the {cell}')
  return image, ' and '.join(parts)


class GatoShapesCaptions(tfds.core.GeneratorBasedBuilder):
  """Drawn shapes with captions; `examples` and `seed` set the size and content."""

  VERSION = tfds.core.Version(captions.SHAPES_VERSION)
  RELEASE_NOTES = {'1.0.0': 'Shapes on a 2x2 grid, 64x64 images.'}

  def __init__(self, *, examples: int = 1000, seed: int = 0, **kwargs: Any):
    self._examples, self._seed = examples, seed
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description='Coloured shapes on a 2x2 grid; captions name colour, shape and place.',
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format='png'),
          'caption': tfds.features.Text(),
        }
      ),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager  # Drawn here; nothing to download.
    n_val = max(1, self._examples // 10)
    return {
      'train': self._generate_examples(self._examples, self._seed),
      'validation': self._generate_examples(n_val, self._seed + 1_000_003),
    }

  def _generate_examples(self, n: int, seed: int) -> Iterator[tuple[str, dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    for i in range(n):
      image, caption = draw_example(rng)
      yield str(i), {'image': image, 'caption': caption}


def main(argv: Sequence[str]) -> None:
  del argv
  builder = GatoShapesCaptions(
    examples=flags.FLAGS.examples, seed=flags.FLAGS.seed, data_dir=flags.FLAGS.data_dir
  )
  builder.download_and_prepare()
  print(f'wrote {builder.data_dir}')


if __name__ == '__main__':
  flags.DEFINE_integer('examples', 2000, 'Training examples (validation gets a tenth).')
  flags.DEFINE_integer('seed', 0, 'Seed of the drawing; the same seed gives the same set.')
  flags.DEFINE_string('data_dir', 'data', 'TFDS data directory.')
  cli.run(main)
