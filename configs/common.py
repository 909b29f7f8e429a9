"""Pieces every experiment config shares, so that each default is written once."""

import ml_collections

# seqio's default 32,000-piece T5 SentencePiece model: the same size as Gato's text vocabulary.
T5_VOCABULARY = 'gs://t5-data/vocabs/cc_all.32000/sentencepiece.model'


def tokenizer_config(
  text_vocab_size: int = 32000, vocabulary: str = T5_VOCABULARY
) -> ml_collections.ConfigDict:
  """The token layout; every other offset is derived from text_vocab_size (tokenizer.py)."""
  return ml_collections.ConfigDict(
    {
      # Ids [0, text_vocab_size) are text; discrete, continuous and separator ids follow.
      'text_vocab_size': text_vocab_size,
      # 'byte' (seqio.ByteVocabulary, offline) or the path of a SentencePiece model.
      'vocabulary': vocabulary,
    }
  )
