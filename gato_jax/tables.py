"""Aligned plain-text tables: what benchmarks, the token inspector and the evaluator print."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _cell(value: Any) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:.4g}' if abs(value) < 1e5 else f'{value:.3e}'
  return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
  """Rows of dicts to a table; text columns align left, numbers right, None shows as '-'."""
  if not rows:
    return '(no rows)'
  columns = list(columns or rows[0].keys())
  cells = [[_cell(row.get(c, '')) for c in columns] for row in rows]
  widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
  numeric = [all(isinstance(row.get(c), int | float | None) for row in rows) for c in columns]

  def line(values: Sequence[str]) -> str:
    return '  '.join(
      v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
    ).rstrip()

  rule = '  '.join('-' * w for w in widths)
  return '\n'.join([line(columns), rule, *(line(r) for r in cells)])
