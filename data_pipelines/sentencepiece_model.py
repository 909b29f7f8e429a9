r"""Train a SentencePiece model offline, laid out the way seqio's T5 vocabulary is.

Production configs use seqio's 32,000-piece T5 model; this trains a small stand-in from
local text for the offline demo and the tests (pad=0, eos=1, unk=2, no bos, as in T5).

  python -m data_pipelines.sentencepiece_model --input=corpus.txt --output=/tmp/demo_spm \
      --vocab_size=512
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import sentencepiece as spm
from absl import app, flags

from gato_jax import cli


def train_sentencepiece(texts: Iterable[str], output_prefix: str, vocab_size: int) -> str:
  """Trains on `texts` and returns the path of the written `.model` file.

  `hard_vocab_limit=False` lets a small corpus produce fewer pieces than asked instead of
  failing; the resulting size is what seqio reports as `vocab_size`.
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=model,
    vocab_size=vocab_size,
    model_type='unigram',
    pad_id=0,
    eos_id=1,
    unk_id=2,
    bos_id=-1,
    hard_vocab_limit=False,
    minloglevel=2,
  )
  path = f'{output_prefix}.model'
  with open(path, 'wb') as f:
    f.write(model.getvalue())
  return path


_INPUT = flags.DEFINE_string('input', None, 'A UTF-8 text file, one sentence or document per line.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output prefix; writes PREFIX.model.')
_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', 512, 'Pieces to aim for.')


def main(argv: Sequence[str]) -> None:
  del argv
  with open(_INPUT.value, encoding='utf-8') as f:
    lines = [line.rstrip('\n') for line in f if line.strip()]
  if not lines:
    raise app.UsageError(f'--input={_INPUT.value} has no text')
  print(train_sentencepiece(lines, _OUTPUT.value, _VOCAB_SIZE.value))


if __name__ == '__main__':
  flags.mark_flags_as_required(['input', 'output'])
  cli.run(main)
