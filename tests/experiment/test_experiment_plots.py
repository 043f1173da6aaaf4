"""Plots: non-empty PNG files, no pyplot import."""
import sys

import pytest

from trustjax.experiment import line_plot
from trustjax.experiment import scatter_plot


def _is_png(path):
  with open(path, "rb") as f:
    head = f.read(8)
  return head == b"\x89PNG\r\n\x1a\n"


def test_line_and_scatter_write_png(tmp_path):
  had_pyplot = "matplotlib.pyplot" in sys.modules  # another test's import
  p = line_plot(str(tmp_path / "sub" / "loss.png"), [1, 10, 100],
                {"train": [1.0, 0.5, 0.2], "val": [1.1, 0.7, float("nan")]},
                xlabel="step", ylabel="loss", title="t", logx=True, logy=True)
  assert _is_png(p) and (tmp_path / "sub" / "loss.png").stat().st_size > 1000
  q = scatter_plot(str(tmp_path / "roc.png"), {"a": [0.1, 0.5], "b": [0.2]},
                   {"a": [0.2, 0.6], "b": [0.3]}, xlabel="fpr", ylabel="tpr",
                   diagonal=True)
  assert _is_png(q)
  assert had_pyplot or "matplotlib.pyplot" not in sys.modules


def test_length_mismatch_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="'a' has 2 y values but 3 x"):
    line_plot(str(tmp_path / "x.png"), [1, 2, 3], {"a": [1, 2]}, xlabel="x",
              ylabel="y")
