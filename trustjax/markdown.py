"""GitHub-markdown tables, the one implementation every report uses (sweep
reports, the audit report, generation-disparity and fairness tables).

Imports nothing from trustjax, so any pillar may use it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[Any]],
          fmt: Callable[[Any], str] = str) -> str:
  """A markdown table: one header line, a rule, one line per row.

  Each cell is `fmt(value)` with `|` escaped and newlines flattened, so a
  value can never break the table. Raises ValueError if a row's length
  differs from the header's.
  """
  def cell(v):
    return fmt(v).replace("|", "\\|").replace("\n", " ")
  lines = ["| " + " | ".join(str(h) for h in header) + " |",
           "|" + "---|" * len(header)]
  for i, r in enumerate(rows):
    if len(r) != len(header):
      raise ValueError(f"row {i} has {len(r)} cells, the header "
                       f"{len(header)}: {list(r)!r}")
    lines.append("| " + " | ".join(cell(v) for v in r) + " |")
  return "\n".join(lines)


def dict_table(rows: Sequence[Mapping[str, Any]],
               columns: Sequence[str] | None = None,
               fmt: Callable[[Any], str] = str, missing: Any = None) -> str:
  """`table` of dict rows restricted to `columns` (default: the first row's
  keys); a key a row lacks is shown as `fmt(missing)`. Empty rows and no
  columns give ""."""
  if columns is None:
    columns = list(rows[0]) if rows else []
  if not columns:
    return ""
  return table(columns, [[r.get(c, missing) for c in columns] for r in rows],
               fmt)
