"""The model's input contract: the one table of a batch's arrays, and helpers derived from it.

A batch is a dict of arrays over B sequences of L positions, each shaped [B, L, *trailing]:

  tokens            int32 [B, L]   ids in TokenLayout's vocabulary (the image placeholder id
                                   at IMAGE positions)
  kinds             int32 [B, L]   tokenizer.TokenKind values; PAD = 0 marks padding, which
                                   comes after a sequence's real tokens
  local_positions   int32 [B, L]   0 = none, 1 = separator/action, 2.. observation tokens
  patches           uint8 [B, L, 16, 16, 3]  pixels at IMAGE positions, zeros elsewhere;
                                   normalized on device by tokenizer.normalize_patches
  patch_positions   int32 [B, L, 4]  (row_lo, row_hi, col_lo, col_hi) buckets in [0, 128)
                                   at IMAGE positions, zeros elsewhere
  loss_mask         int32 [B, L]   the trainer's only: 1 where the token is a training
                                   target (text and logged actions outside prompts)
  segment_ids       int32 [B, L]   training rows only: 1, 2, ... numbers the sequences
                                   packed into a row (data.pack), 0 at PAD; an unpacked
                                   row is segment 1 on its real tokens

Every array pads with 0, so a padded position is a PAD one. The data pipeline's task
features keep the IMAGE-only arrays compact (one row per IMAGE token, in order) and the
feature converter scatters them to their positions; the tables below say which those are.

Segment ids belong to a row, not to a sequence: the feature converter numbers the
sequences it lays into a row, and nothing that builds one sequence (the tokenizer, the
policy, the KV-cache path) makes them. Given `segment_ids`, the model keeps attention
inside each segment and restarts positions at each; without them a row is one sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from gato_jax import tokenizer


@dataclasses.dataclass(frozen=True)
class Array:
  name: str
  dtype: type  # A numpy scalar type; jax.numpy and TensorFlow accept it too.
  trailing: tuple[int, ...]  # Shape of one position, after [B, L].
  # True: every sequence carries it, however it was built, and the model reads it. False:
  # in training batches only (the loss reads it; the model reads segment_ids when given).
  model_input: bool
  image_only: bool = False  # Zeros except at IMAGE positions; compact in task features.
  row_level: bool = False  # Made when sequences are laid into rows; no task emits it.


ARRAYS = (
  Array('tokens', np.int32, (), model_input=True),
  Array('kinds', np.int32, (), model_input=True),
  Array('local_positions', np.int32, (), model_input=True),
  Array('patches', np.uint8, (tokenizer.PATCH_SIZE, tokenizer.PATCH_SIZE, 3), True, True),
  Array('patch_positions', np.int32, (4,), model_input=True, image_only=True),
  Array('loss_mask', np.int32, (), model_input=False),
  Array('segment_ids', np.int32, (), model_input=False, row_level=True),
)
SPEC = {a.name: a for a in ARRAYS}
PAD_VALUE = 0  # Of every array: kind 0 is TokenKind.PAD.

BATCH = tuple(a.name for a in ARRAYS)  # What the trainer consumes.
MODEL_INPUTS = tuple(a.name for a in ARRAYS if a.model_input)  # What the model reads.
TASK_FEATURES = tuple(a.name for a in ARRAYS if not a.row_level)  # What a seqio task emits.

Inputs = dict[str, np.ndarray]  # Model inputs of one sequence, [n, *trailing] each.


def zeros(lead: Sequence[int], names: Sequence[str] = MODEL_INPUTS, xp: Any = np) -> dict:
  """Arrays [*lead, *trailing] of pad values; `xp` is numpy, jax.numpy or tensorflow."""
  return {n: xp.zeros((*lead, *SPEC[n].trailing), SPEC[n].dtype) for n in names}


def empty(names: Sequence[str] = MODEL_INPUTS) -> Inputs:
  """A sequence of no positions."""
  return zeros((0,), names)


def concat(parts: Sequence[Inputs], names: Sequence[str] = MODEL_INPUTS) -> Inputs:
  return {k: np.concatenate([p[k] for p in parts]) for k in names}


def pad(inputs: Inputs, length: int, left: bool) -> Inputs:
  """PAD positions (kind 0, all zeros) on one side up to `length`."""
  out = {}
  for k, v in inputs.items():
    widths = [(length - len(v), 0) if left else (0, length - len(v))] + [(0, 0)] * (v.ndim - 1)
    out[k] = np.pad(v, widths, constant_values=PAD_VALUE)
  return out


def stack(rows: Sequence[Inputs], names: Sequence[str] = MODEL_INPUTS) -> Inputs:
  """Sequences of one length as a batch [B, n, *trailing]."""
  return {k: np.stack([r[k] for r in rows]) for k in names}


def shapes(lead: Sequence[int], names: Sequence[str] = BATCH) -> dict[str, Any]:
  """jax.ShapeDtypeStructs [*lead, *trailing]: a batch to lower or compile against."""
  import jax

  return {n: jax.ShapeDtypeStruct((*lead, *SPEC[n].trailing), SPEC[n].dtype) for n in names}


def feature_specs(names: Sequence[str] = TASK_FEATURES) -> dict[str, tuple[Any, int]]:
  """(tf.DType, rank) of each array of one sequence: the seqio task features by default,
  the feature converter's model features with `BATCH`."""
  import tensorflow as tf  # The data pipeline's dependency; the model never needs it.

  return {n: (tf.as_dtype(SPEC[n].dtype), 1 + len(SPEC[n].trailing)) for n in names}
