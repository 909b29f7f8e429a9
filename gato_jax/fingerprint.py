"""A run's fingerprint: the config keys that make a checkpoint the run it is.

A checkpoint's `meta` item records the whole config. What the model computes (`model.*`
but `model.EXECUTION_KEYS`), its tokens (`tokenizer.*`) and its data (`data.mixture` and
what the config registers: `data.modules`, `.specs`, `.public_sources`, `.mixtures`) may
not change on resume or when the evaluator scores it, unless a user lists the key in
`--allow_config_change` on purpose: every such change is logged with both values. One rule
for the trainer and the evaluator, so that a run never continues as another model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import ml_collections
from absl import logging

from gato_jax import checkpointing
from gato_jax.model import EXECUTION_KEYS


def check_resumable(
  config: ml_collections.ConfigDict, workdir: str, allowed: frozenset[str] = frozenset()
) -> None:
  """Refuses to continue a run as another model, vocabulary or mixture than its checkpoints'.

  Settings of how the step runs (model.EXECUTION_KEYS: remat, kernels, dtype, ...) may
  change on resume, as the mesh may; what the model computes, its tokens and its data may
  not (`config_differences`), unless a key is in `allowed` (--allow_config_change): each
  allowed change, of any key, is logged with both values. A checkpoint newer than
  config.total_steps is an error too: that run cannot end at total_steps. The trainer runs
  it before anything is built, so that the refusal is the run's one error.
  """
  step = checkpointing.newest_verified_step(workdir, ('meta',))
  if step is None:
    return
  if step > config.total_steps:
    raise ValueError(
      f'{workdir} holds checkpoint {step}, past config key total_steps={config.total_steps}: '
      f'set --config.total_steps above {step} to continue this run, or use a new --workdir'
    )
  saved = checkpointing.saved_config(workdir, step)
  if saved is None:
    return
  differ = [d for d in config_differences(saved, config) if not is_allowed(d.key, allowed)]
  if differ:
    settings = '; '.join(map(str, differ))
    raise ValueError(
      f'{workdir} holds a run of another model, vocabulary or mixture (checkpoint {step}): '
      f'{settings}. Use a new --workdir, the run\'s own settings to resume it, or '
      f'--allow_config_change={",".join(d.key for d in differ)} to change them on purpose'
    )
  log_allowed_changes(saved, config, allowed, f'resuming checkpoint {step}')
  if config.total_steps == step:
    logging.warning('checkpoint %d is already at config key total_steps=%d: nothing to train',
                    step, config.total_steps)


# Sections every key of which a checkpoint's run is held to: what the parameters compute
# (model.*, but EXECUTION_KEYS: how the step runs) and which id is which token (tokenizer.*).
SECTIONS = ('model', 'tokenizer')
# Keys added after checkpoints existed, with the value every run before them had: a
# checkpoint that does not record one was trained with it, so it is compared as such
# (configs/models.py's demo size has 'unit' pixels; a demo checkpoint from before does not).
IMPLIED_BEFORE_RECORDED = {'model.pixel_normalization': 'paper'}
# Config keys outside SECTIONS that a checkpoint's run is held to.
# A mixture's name says what it reads only with the registrations a config adds to it.
RUN_KEYS = ('data.mixture', 'data.modules', 'data.specs', 'data.public_sources', 'data.mixtures')


class Difference(NamedTuple):
  """One fingerprint key in which a config describes another run than a checkpoint's."""

  key: str  # 'model.position_encoding', 'tokenizer.text_vocab_size', 'data.mixture'.
  checkpoint: Any
  config: Any

  def __str__(self) -> str:
    return f'{self.key}: checkpoint {self.checkpoint!r}, config {self.config!r}'


def _recorded(saved: Any, key: str) -> tuple[bool, Any]:
  """(found, value) of a key in a checkpoint's config, IMPLIED_BEFORE_RECORDED included."""
  found, value = _get(saved, key)
  if not found and key in IMPLIED_BEFORE_RECORDED:
    return True, IMPLIED_BEFORE_RECORDED[key]
  return found, value


def _get(tree: Any, key: str) -> tuple[bool, Any]:
  """(found, value) of a dotted key in a nested dict or ConfigDict."""
  node = tree
  for part in key.split('.'):
    if not hasattr(node, 'keys') or part not in node:
      return False, None
    node = node[part]
  return True, node


def _json(value: Any) -> Any:
  """A config value as a checkpoint's meta records it (tuples become lists)."""
  if hasattr(value, 'to_json_best_effort'):
    return json.loads(value.to_json_best_effort())
  return json.loads(json.dumps(value, default=str))


def config_differences(saved: Any, config: ml_collections.ConfigDict) -> list[Difference]:
  """The fingerprint of a run: where `config` differs from the config `saved` recorded.

  Every key of SECTIONS (but model.EXECUTION_KEYS), and RUN_KEYS, compared as JSON, as
  they were recorded (tuples become lists). Keys a checkpoint does not record (older ones)
  are not compared, and are named in a log line, except IMPLIED_BEFORE_RECORDED's, which
  are compared with the value such a checkpoint was trained with.
  """
  current = _json(config)
  section_keys = [f'{section}.{k}' for section in SECTIONS
                  for k in sorted(current.get(section) or {})
                  if not (section == 'model' and k in EXECUTION_KEYS)]
  run_keys = [k for k in RUN_KEYS if _get(current, k)[0]]
  differ = []
  for key in section_keys + run_keys:
    was_recorded, old = _recorded(saved, key)
    if was_recorded and old != (value := _get(current, key)[1]):
      differ.append(Difference(key, old, value))
  unrecorded = [k for k in run_keys + section_keys if not _recorded(saved, k)[0]]
  if unrecorded:
    logging.warning('the checkpoint does not record %s (written before they were compared); '
                    'they are not checked', ', '.join(unrecorded))
  return differ


def parse_allowed(text: str | Sequence[str], config: ml_collections.ConfigDict) -> frozenset[str]:
  """The keys of --allow_config_change (comma-separated); a key `config` lacks is an error.

  A section ('tokenizer') allows every key under it.
  """
  keys = [k.strip() for k in text.split(',')] if isinstance(text, str) else list(text)
  keys = [k for k in keys if k]
  current = _json(config)
  for key in keys:
    if not _get(current, key)[0]:
      raise ValueError(f'--allow_config_change names {key!r}, which is not a config key')
  return frozenset(keys)


def is_allowed(key: str, allowed: frozenset[str]) -> bool:
  return any(key == a or key.startswith(a + '.') for a in allowed)


def allowed_changes(
  saved: Any, config: ml_collections.ConfigDict, allowed: frozenset[str]
) -> list[Difference]:
  """Each leaf under an allowed key whose value differs from the checkpoint's."""
  current = _json(config)
  out = []

  def walk(key: str, old: Any, new: Any) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
      for k in sorted(set(old) | set(new)):
        walk(f'{key}.{k}', old.get(k), new.get(k))
    elif old != new:
      out.append(Difference(key, old, new))

  for key in sorted(allowed):
    walk(key, _get(saved, key)[1], _get(current, key)[1])
  return out


def log_allowed_changes(
  saved: Any, config: ml_collections.ConfigDict, allowed: frozenset[str], where: str
) -> list[Difference]:
  """Logs every change --allow_config_change let through: key, checkpoint's value, new value."""
  changes = allowed_changes(saved, config, allowed)
  for d in changes:
    logging.warning('%s: %s changes from %r to %r (--allow_config_change)',
                    where, d.key, d.checkpoint, d.config)
  return changes


def model_differences(
  config: ml_collections.ConfigDict, workdir: str, step: int
) -> list[Difference]:
  """Where `config` describes another model, vocabulary or mixture than checkpoint `step`.

  The rule is config_differences; the trainer's resume and the evaluator use it.

  Empty when they agree, or when the checkpoint has no `meta` item (logged).
  """
  saved = checkpointing.saved_config(workdir, step)
  return [] if saved is None else config_differences(saved, config)
