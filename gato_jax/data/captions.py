"""Image-caption data: COCO by TFDS name, and the offline drawn-shapes set, read back.

Both give a tf.data.Dataset of {'image': uint8 [H, W, 3], 'caption': string}, what the seqio
caption tasks consume. data_pipelines/captions.py draws and writes the shapes set.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

SHAPES_DATASET = 'gato_shapes_captions'
SHAPES_VERSION = '1.0.0'


def shapes_dir(data_dir: str) -> str:
  """Where the drawn-shapes captions live under `data_dir`."""
  return f'{data_dir}/{SHAPES_DATASET}/{SHAPES_VERSION}'


def caption_dataset(
  name: str = SHAPES_DATASET, split: str = 'train', data_dir: str | None = None
) -> tf.data.Dataset:
  """{'image': uint8 [H, W, 3], 'caption': string} from the offline set or COCO by name.

  `coco_captions` has several captions per image; each (image, caption) pair becomes one
  example, as Gato samples pairs.
  """
  if name == SHAPES_DATASET:
    path = shapes_dir(data_dir or tfds.core.constants.DATA_DIR)
    if not tf.io.gfile.exists(f'{path}/dataset_info.json'):
      raise FileNotFoundError(
        f'no drawn-shapes captions at {path}; draw them with '
        f'python -m data_pipelines.captions --data_dir={data_dir}'
      )
    return tfds.builder_from_directory(path).as_dataset(split=split)
  if name.startswith('coco_captions'):
    ds = tfds.load(name, split=split, data_dir=data_dir)

    def pairs(example: dict[str, Any]) -> tf.data.Dataset:
      texts = example['captions']['text']
      images = tf.repeat(example['image'][None], tf.shape(texts)[0], axis=0)
      return tf.data.Dataset.from_tensor_slices({'image': images, 'caption': texts})

    return ds.flat_map(pairs)
  raise ValueError(
    f"caption dataset must be '{SHAPES_DATASET}' or 'coco_captions[/config]', got {name!r}"
  )
