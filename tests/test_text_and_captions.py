"""Text and captioning sources, offline: local files, drawn captions, TFDS mock data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import captions
from gato_jax.data import captions as caption_data
from gato_jax.data import text


def test_local_text_keeps_every_non_empty_line(tmp_path):
  path = tmp_path / 'corpus.txt'
  path.write_text('first document\n\n  \nsecond document, with ünïcode\n', encoding='utf-8')
  lines = [x['text'].decode() for x in tfds.as_numpy(text.local_text_dataset([str(path)]))]
  assert lines == ['first document', 'second document, with ünïcode']
  with pytest.raises(FileNotFoundError, match='nope.txt'):
    text.local_text_dataset([str(tmp_path / 'nope.txt')])


def test_tfds_text_by_name_offline():
  with tfds.testing.mock_data(num_examples=3):
    rows = list(tfds.as_numpy(text.tfds_text_dataset('c4/en')))
  assert len(rows) == 3 and all(isinstance(r['text'], bytes) for r in rows)
  with tfds.testing.mock_data(num_examples=1):
    with pytest.raises(ValueError, match="no field 'body'"):
      text.tfds_text_dataset('c4/en', text_key='body')


def test_drawn_captions_describe_the_pixels():
  rng = np.random.default_rng(3)
  for _ in range(20):
    image, caption = captions.draw_example(rng)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    for part in caption.split(' and '):
      _, color, shape, *_ = part.split(' ')
      cell = part.split(' at the ')[1]
      row, col = captions.CELLS[cell]
      centre = image[row * 32 + 16, col * 32 + 16]  # Every shape covers its cell's centre.
      assert tuple(centre) == captions.COLORS[color], (caption, cell)
      assert shape in captions.SHAPES
    empty = set(captions.CELLS) - {p.split(' at the ')[1] for p in caption.split(' and ')}
    for cell in empty:
      row, col = captions.CELLS[cell]
      assert (image[row * 32 : row * 32 + 32, col * 32 : col * 32 + 32] == 30).all()


def test_shapes_dataset_is_reproducible(tmp_path):
  builder = captions.GatoShapesCaptions(examples=20, seed=5, data_dir=str(tmp_path))
  builder.download_and_prepare()
  assert builder.info.splits['train'].num_examples == 20
  assert builder.info.splits['validation'].num_examples == 2
  stored = list(tfds.as_numpy(caption_data.caption_dataset(data_dir=str(tmp_path))))
  redrawn = [captions.draw_example(np.random.default_rng(5)) for _ in range(1)]
  by_caption = {r['caption'].decode(): r['image'] for r in stored}
  assert redrawn[0][1] in by_caption
  np.testing.assert_array_equal(by_caption[redrawn[0][1]], redrawn[0][0])


def test_coco_captions_become_image_caption_pairs():
  with tfds.testing.mock_data(num_examples=2):
    pairs = list(tfds.as_numpy(caption_data.caption_dataset('coco_captions/2014', split='train')))
  assert pairs and all(p['image'].ndim == 3 and isinstance(p['caption'], bytes) for p in pairs)
  with pytest.raises(ValueError, match="got 'mscoco'"):
    caption_data.caption_dataset('mscoco')
