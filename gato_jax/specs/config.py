"""TaskSpecs written as config: plain dicts a user keeps in an ml_collections file.

A public dataset's embodiment should not need Python: `data_pipelines.public_rlds describe`
prints a spec in this form, the user edits it and puts it under config key `data.specs`,
and the trainer registers it (`specs.register`) before the mixture is read. The form is
the fields' own constructor arguments plus a `type`:

  {'observation': [{'type': 'image', 'name': 'image', 'height': 128, 'width': 160},
                   {'type': 'text', 'name': 'instruction', 'max_tokens': 32},
                   {'type': 'continuous', 'name': 'state', 'shape': [8]}],
   'action': {'type': 'continuous', 'name': 'action', 'shape': [7], 'mu_law': False,
              'low': -1.0, 'high': 1.0}}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gato_jax.specs.task_spec import TaskSpec
from gato_jax.tokenizer import ContinuousField, DiscreteField, Field, ImageField, TextField

FIELD_TYPES: dict[str, type] = {
  'text': TextField,
  'image': ImageField,
  'discrete': DiscreteField,
  'continuous': ContinuousField,
}
_TYPE_NAMES = {cls: name for name, cls in FIELD_TYPES.items()}


def field_from_dict(entry: Mapping[str, Any], where: str) -> Field:
  """One field; errors name `where` (e.g. "data.specs.my_robot.observation[1]") and the key."""
  entry = dict(entry)
  kind = entry.pop('type', None)
  if kind not in FIELD_TYPES:
    raise ValueError(f'{where}.type must be one of {sorted(FIELD_TYPES)}, got {kind!r}')
  cls = FIELD_TYPES[kind]
  allowed = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(entry) - allowed)
  if unknown:
    raise ValueError(
      f'{where}: unknown key(s) {unknown} for a {kind} field (keys: {sorted(allowed)})'
    )
  if 'shape' in entry:
    entry['shape'] = tuple(entry['shape'])
  try:
    return cls(**entry)
  except (TypeError, ValueError) as e:  # A missing argument, or one the field refuses.
    raise ValueError(f'{where}: {e}') from None


def from_dict(name: str, entry: Mapping[str, Any], where: str | None = None) -> TaskSpec:
  """The TaskSpec `name` described by `entry` (the module docstring's form)."""
  where = where or f'spec {name}'
  unknown = sorted(set(entry) - {'observation', 'action'})
  if unknown or 'observation' not in entry or 'action' not in entry:
    raise ValueError(
      f'{where} needs exactly the keys observation and action'
      + (f'; unknown: {unknown}' if unknown else '')
    )
  observation = tuple(
    field_from_dict(f, f'{where}.observation[{i}]') for i, f in enumerate(entry['observation'])
  )
  action = field_from_dict(entry['action'], f'{where}.action')
  if not isinstance(action, DiscreteField | ContinuousField):
    raise ValueError(f'{where}.action must be a discrete or continuous field, got {type(action)}')
  try:
    return TaskSpec(name, observation=observation, action=action)
  except ValueError as e:
    raise ValueError(f'{where}: {e}') from None


def field_to_dict(field: Field) -> dict[str, Any]:
  """The inverse of `field_from_dict`, leaving out arguments at their defaults."""
  out: dict[str, Any] = {'type': _TYPE_NAMES[type(field)]}
  for f in dataclasses.fields(field):
    value = getattr(field, f.name)
    if f.default is not dataclasses.MISSING and value == f.default:
      continue
    out[f.name] = list(value) if isinstance(value, tuple) else value
  return out


def to_dict(spec: TaskSpec) -> dict[str, Any]:
  """A spec as config: `from_dict(spec.name, to_dict(spec)) == spec`."""
  return {
    'observation': [field_to_dict(f) for f in spec.observation],
    'action': field_to_dict(spec.action),
  }
