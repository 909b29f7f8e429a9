"""How every benchmark reports: a table on stdout and a JSON file naming the machine."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from gato_jax import tables


def machine() -> str:
  """The CPU model and core count; figures mean little without them."""
  model = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    model = names[0] if names else model
  except OSError:
    pass
  return f'{model}, {os.cpu_count()} cores'


def emit(
  name: str, title: str, rows: Sequence[Mapping[str, Any]], json_out: str, **meta: Any
) -> dict[str, Any]:
  """Prints `title` and the table, writes {benchmark, machine, meta..., rows} to `json_out`."""
  result = {'benchmark': name, 'machine': machine(), **meta, 'rows': [dict(r) for r in rows]}
  print(f'{title}\nmachine: {result["machine"]}')
  print(tables.format_table(rows))
  os.makedirs(os.path.dirname(json_out) or '.', exist_ok=True)
  with open(json_out, 'w') as f:
    json.dump(result, f, indent=2)
  print(f'wrote {json_out}')
  return result
