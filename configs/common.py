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


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """Device mesh sizes; gato_jax/sharding.py builds the mesh and checks they fit."""
  return ml_collections.ConfigDict(
    {
      'data': data,  # Pure data parallelism: batch split, parameters replicated. -1 = the rest.
      'fsdp': fsdp,  # Batch split and parameters sharded over `embed` (ZeRO-3 style).
      'tensor': tensor,  # Megatron-style split of heads, MLP hidden units and vocabulary.
    }
  )


def logical_axis_rules() -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """The one table from the model's logical axis names to mesh axes (gato_jax/sharding.py).

  Earlier dimensions of an array claim a mesh axis first: activations [batch, length, embed]
  put `fsdp` on batch, while parameters [embed, mlp] put it on embed.
  """
  return (
    ('batch', ('data', 'fsdp')),  # Examples of a batch.
    ('length', None),  # Sequence positions.
    ('embed', 'fsdp'),  # d_model: parameters' FSDP axis.
    ('mlp', 'tensor'),  # Feed-forward hidden units.
    ('heads', 'tensor'),  # Attention heads.
    ('kv', None),  # Per-head key/value features.
    ('vocab', 'tensor'),  # Token table rows and logits.
    ('layers', None),  # The stacked layer axis that scan runs over.
    ('norm', None),  # LayerNorm scale and bias.
    ('channels', None),  # Patch ResNet channels.
    ('buckets', None),  # Patch row/column position buckets.
    ('local_positions', None),  # Local observation position table rows.
  )
