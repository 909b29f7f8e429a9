"""Gato's seqio preprocessors: episodes, documents and captions into training sequences.

Every task ends in the same task features, at most L tokens each: the arrays of the input
contract (gato_jax/model/inputs.py), TOKEN_FEATURES [n] and PATCH_FEATURES [p, ...] with
one row per IMAGE token, in order (compact: the feature converter scatters them to
positions).

Control episodes (paper §2.3, §4): keep episodes whose return reaches `min_return_fraction`
of the way from the random to the expert return; tokenize every timestep with the task's
TaskSpec (the same tokenizer the evaluator runs live); cut windows that start on timestep
boundaries, about one per L tokens of the episode; prepend a prompt to a quarter of them,
taken from the previous episode of the same stream (so another episode of the same task),
half of the prompts from its end and half from a uniform position. Prompt tokens condition
but are not targets: their loss mask is 0.

Randomness comes from seqio's per-example seeds, so the same seed and shard give the same
stream, and the tf.data iterator checkpoint resumes it exactly.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from gato_jax import specs, tokenizer
from gato_jax.data import episodes, options
from gato_jax.model import inputs

PATCH_SHAPE = inputs.SPEC['patches'].trailing
# The task features (no row-level array: the feature converter numbers segments).
TOKEN_FEATURES = tuple(
  a.name for a in inputs.ARRAYS if not a.image_only and not a.row_level)  # One per token.
PATCH_FEATURES = tuple(a.name for a in inputs.ARRAYS if a.image_only)  # One per IMAGE token.
_TOKEN_INPUTS = tuple(k for k in TOKEN_FEATURES if k in inputs.MODEL_INPUTS)  # No loss_mask.

_DROPPED: collections.Counter[str] = collections.Counter()


def dropped_examples() -> dict[str, int]:
  """Examples dropped so far in this process, per task (config data.bad_examples='drop')."""
  return dict(_DROPPED)


def _is_loss_kind(kinds: tf.Tensor) -> tf.Tensor:
  loss_kinds = tf.constant([int(k) for k in tokenizer.LOSS_KINDS], tf.int32)
  return tf.reduce_any(kinds[:, None] == loss_kinds[None, :], axis=1)


def _fold(seed: tf.Tensor, i: Any) -> tf.Tensor:
  return tf.random.experimental.stateless_fold_in(seed, tf.cast(i, tf.int32))


def filter_by_return(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Keeps episodes at least `min_return_fraction` of the way from random to expert return.

  The rule is `episodes.min_kept_return`, which the evaluator's prompts use too.
  """
  fraction = options.current().min_return_fraction

  def bar(expert: np.float32, random: np.float32) -> np.float32:
    return np.float32(episodes.min_kept_return(float(expert), float(random), fraction))

  def keep(ex: dict[str, tf.Tensor]) -> tf.Tensor:
    threshold = tf.numpy_function(
      bar, [ex['expert_return'], ex['random_return']], tf.float32, stateful=False
    )
    return ex['episode_return'] >= tf.ensure_shape(threshold, [])

  return dataset.filter(keep)


def tokenize_episodes(dataset: tf.data.Dataset, task: str, name: str = '') -> tf.data.Dataset:
  """Whole episodes -> flat token streams, through the TaskSpec's tokenizer (numpy).

  The RLDS final step (last observation, padding action) is dropped (`acted_steps`): it is
  not a timestep the agent acted in. An episode the spec rejects raises, naming the dataset
  (`name`, else the task's own) and the episode, or with data.bad_examples='drop' is dropped,
  counted and logged once.
  """
  opts = options.current()
  spec = specs.get_spec(task)
  task_tokenizer = spec.tokenizer(opts.layout, opts.vocabulary)
  names = [f.name for f in spec.observation]

  def tokenize(episode: bytes, action: np.ndarray, *observation: np.ndarray):
    try:
      obs, acts = episodes.acted_steps(dict(zip(names, observation, strict=True)), action)
      steps = task_tokenizer.tokenize_steps(obs, acts)
      return tuple(np.asarray(getattr(steps, k), inputs.SPEC[k].dtype) for k in inputs.MODEL_INPUTS)
    except ValueError as e:
      message = f'dataset {name or task}, episode {episode.decode()}: {e}'
      if opts.bad_examples == 'raise':
        raise ValueError(message) from e
      _DROPPED[task] += 1
      logging.warning('dropped a bad example (%d so far for %s): %s', _DROPPED[task], task, message)
      return tuple(inputs.empty().values())

  def apply(ex: dict[str, Any]) -> dict[str, tf.Tensor]:
    flat = tokenizer.flatten_observation(ex['observation'])
    missing = [n for n in names if n not in flat]
    if missing:
      raise ValueError(
        f'dataset {task}: observation fields {missing} missing (found {sorted(flat)})'
      )
    out = tf.numpy_function(
      tokenize,
      [ex['episode'], ex['action'], *(flat[n] for n in names)],
      [tf.as_dtype(inputs.SPEC[k].dtype) for k in inputs.MODEL_INPUTS],
      stateful=False,
    )
    return {
      k: tf.reshape(v, [-1, *inputs.SPEC[k].trailing])
      for k, v in zip(inputs.MODEL_INPUTS, out, strict=True)
    }

  return dataset.map(apply).filter(lambda ex: tf.size(ex['tokens']) > 0)


def _empty_segment() -> dict[str, tf.Tensor]:
  return inputs.zeros((0,), inputs.MODEL_INPUTS, xp=tf)


def window_episodes(dataset: tf.data.Dataset, task: str) -> tf.data.Dataset:
  """Tokenized episodes -> length <= L windows on timestep boundaries, some with prompts."""
  opts = options.current()
  spec = specs.get_spec(task)
  per_step, per_patch = spec.tokens_per_timestep, spec.image_patches_per_timestep
  length = opts.sequence_length
  prompt_steps = opts.prompt_tokens // per_step  # 0: this task's timesteps are too long.

  def add_seed(dataset: tf.data.Dataset) -> tf.data.Dataset:
    @seqio.map_over_dataset(num_seeds=1)
    def attach(ex: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
      return {**ex, 'seed': seed}

    return attach(dataset)

  def segment(ep: dict[str, tf.Tensor], first_step: tf.Tensor, steps: tf.Tensor):
    lo, hi = first_step * per_step, (first_step + steps) * per_step
    plo, phi = first_step * per_patch, (first_step + steps) * per_patch
    out = {k: ep[k][lo:hi] for k in _TOKEN_INPUTS}
    out.update({k: ep[k][plo:phi] for k in PATCH_FEATURES})
    return out

  def prompts_of(ep: dict[str, tf.Tensor]) -> dict[str, dict[str, tf.Tensor]]:
    num_steps = tf.size(ep['tokens']) // per_step
    steps = tf.minimum(prompt_steps, num_steps)
    u = tf.random.stateless_uniform([], seed=_fold(ep['seed'], -1))
    uniform_start = tf.cast(u * tf.cast(num_steps - steps + 1, tf.float32), tf.int32)
    uniform_start = tf.minimum(uniform_start, num_steps - steps)
    return {
      'end': segment(ep, num_steps - steps, steps),
      'uniform': segment(ep, uniform_start, steps),
    }

  def pair_with_previous(state, ep):
    # The previous episode of this (shuffled) stream supplies the prompts: another episode
    # of the same task. The stream's first episode has none to offer.
    return prompts_of(ep), {**ep, 'prompt_end': state['end'], 'prompt_uniform': state['uniform']}

  def windows(ep: dict[str, tf.Tensor]) -> tf.data.Dataset:
    n = tf.size(ep['tokens'])
    image_before = tf.concat(
      [[0], tf.cumsum(tf.cast(ep['kinds'] == int(tokenizer.TokenKind.IMAGE), tf.int32))], 0
    )
    count = tf.maximum(1, (n + length - 1) // length)

    def window(i: tf.Tensor) -> dict[str, tf.Tensor]:
      u = tf.random.stateless_uniform([3], seed=_fold(ep['seed'], i))
      has_prompt = tf.size(ep['prompt_end']['tokens']) > 0
      use = (u[0] < opts.prompt_probability) & has_prompt
      at_end = u[1] < opts.prompt_end_probability
      # Both candidates span the same number of timesteps, so they have the same shapes.
      prompt = {
        k: tf.where(at_end, ep['prompt_end'][k], ep['prompt_uniform'][k]) for k in ep['prompt_end']
      }
      p_tokens = tf.where(use, tf.size(prompt['tokens']), 0)
      p_patches = tf.where(use, tf.shape(prompt['patches'])[0], 0)
      room = length - p_tokens
      num_steps = n // per_step
      max_start = tf.maximum(num_steps - (room + per_step - 1) // per_step, 0)
      start = tf.cast(u[2] * tf.cast(max_start + 1, tf.float32), tf.int32)
      lo = tf.minimum(start, max_start) * per_step
      hi = tf.minimum(lo + room, n)
      out = {k: tf.concat([prompt[k][:p_tokens], ep[k][lo:hi]], 0) for k in _TOKEN_INPUTS}
      out['loss_mask'] = tf.concat(
        [tf.zeros([p_tokens], tf.int32), tf.cast(_is_loss_kind(ep['kinds'][lo:hi]), tf.int32)], 0
      )
      for k in PATCH_FEATURES:
        body = ep[k][image_before[lo] : image_before[hi]]
        out[k] = tf.concat([prompt[k][:p_patches], body], 0)
      return out

    return tf.data.Dataset.range(tf.cast(count, tf.int64)).map(window)

  dataset = add_seed(dataset)
  initial = {'end': _empty_segment(), 'uniform': _empty_segment()}
  return dataset.scan(initial, pair_with_previous).flat_map(windows)


def text_windows(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Documents -> one random crop of at most L tokens each (paper §4), all of it a target."""
  opts = options.current()
  vocab, length = opts.vocabulary, opts.sequence_length
  eos = [] if vocab.eos_id is None else [vocab.eos_id]

  @seqio.map_over_dataset(num_seeds=1)
  def crop(ex: dict[str, tf.Tensor], seed: tf.Tensor) -> dict[str, tf.Tensor]:
    ids = tf.concat([tf.cast(vocab.encode_tf(ex['text']), tf.int32), tf.constant(eos, tf.int32)], 0)
    n = tf.size(ids)
    starts = tf.maximum(n - length, 0) + 1
    start = tf.random.stateless_uniform([], seed=seed, maxval=starts, dtype=tf.int32)
    ids = ids[start : start + length]
    size = tf.size(ids)
    return {
      'tokens': ids,
      'kinds': tf.fill([size], int(tokenizer.TokenKind.TEXT)),
      'local_positions': tf.zeros([size], tf.int32),
      'loss_mask': tf.ones([size], tf.int32),
      **{k: v for k, v in _empty_segment().items() if k in PATCH_FEATURES},
    }

  return crop(dataset)


def caption_sequences(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """(image, caption) pairs -> sequences of `caption_pairs` pairs (paper §4: five), cut to L.

  Each pair is the image's patches (IMAGE tokens, local positions as an observation image
  gets) followed by the caption's text tokens and EOS, which are the targets.
  """
  opts = options.current()
  size, length, vocab = opts.caption_image_size, opts.sequence_length, opts.vocabulary
  placeholder = opts.layout.image_placeholder
  intervals = tokenizer.patch_position_intervals(size, size)
  num_patches = len(intervals)
  first = tokenizer.FIRST_OBSERVATION_POSITION

  def resize(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    image = ex['image']
    if image.shape[-1] == 1:
      image = tf.image.grayscale_to_rgb(image)
    image = tf.image.resize(image, [size, size], antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return {'image': tf.ensure_shape(image, [size, size, 3]), 'caption': ex['caption']}

  def assemble(images: np.ndarray, captions: np.ndarray):
    patches = tokenizer.patchify(images)  # [pairs, P, 16, 16, 3]
    tokens, kinds, positions, loss = [], [], [], []
    for caption in captions:
      ids = list(vocab.encode(caption.decode()))[: opts.caption_max_tokens]
      if vocab.eos_id is not None:
        ids.append(vocab.eos_id)
      tokens += [placeholder] * num_patches + ids
      kinds += [tokenizer.TokenKind.IMAGE] * num_patches + [tokenizer.TokenKind.TEXT] * len(ids)
      positions += list(range(first, first + num_patches)) + [0] * len(ids)
      loss += [0] * num_patches + [1] * len(ids)
    kinds_array = np.asarray(kinds, np.int32)[:length]
    kept = int((kinds_array == tokenizer.TokenKind.IMAGE).sum())
    flat_patches = patches.reshape(-1, *PATCH_SHAPE)[:kept]
    flat_positions = np.tile(intervals, (len(captions), 1))[:kept].astype(np.int32)
    return (
      np.asarray(tokens, np.int32)[:length],
      kinds_array,
      np.asarray(positions, np.int32)[:length],
      np.asarray(loss, np.int32)[:length],
      flat_patches,
      flat_positions,
    )

  def to_features(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    keys = (*TOKEN_FEATURES, *PATCH_FEATURES)
    out = tf.numpy_function(
      assemble,
      [batch['image'], batch['caption']],
      [tf.as_dtype(inputs.SPEC[k].dtype) for k in keys],
      stateful=False,
    )
    return {
      k: tf.ensure_shape(v, [None, *inputs.SPEC[k].trailing])
      for k, v in zip(keys, out, strict=True)
    }

  dataset = dataset.map(resize).batch(opts.caption_pairs, drop_remainder=True)
  return dataset.map(to_features)
