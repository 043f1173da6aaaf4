"""trustjax.markdown: the one table writer of every report."""

import pytest

from trustjax import markdown


def test_table_cells_header_rule_and_escaping():
  t = markdown.table(["a", "b"], [[1, "x|y"], [2.5, "two\nlines"]])
  assert t.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |",
                            "| 2.5 | two lines |"]


def test_table_refuses_ragged_rows():
  with pytest.raises(ValueError, match="row 1 has 1 cells, the header 2"):
    markdown.table(["a", "b"], [[1, 2], [3]])


def test_dict_table_columns_missing_and_format():
  rows = [{"n": 1, "acc": 0.123456}, {"n": 2}]
  t = markdown.dict_table(rows, fmt=lambda v: "-" if v is None else
                          f"{v:.2f}" if isinstance(v, float) else str(v))
  assert t.splitlines()[2:] == ["| 1 | 0.12 |", "| 2 | - |"]
  assert markdown.dict_table([]) == ""
