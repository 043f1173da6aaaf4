"""Sweep results: Pareto frontier, best per epsilon bucket, tables, report."""

import csv
import math
import os

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from trustjax.sweeps import best_per_bucket
from trustjax.sweeps import pareto_frontier
from trustjax.sweeps import result_row
from trustjax.sweeps import write_report


def _dominated_brute_force(eps, acc):
  """Reference: point i is dominated iff some j is at least as good in both
  objectives (lower epsilon, higher accuracy) and strictly better in one."""
  n = len(eps)
  valid = [not (math.isnan(eps[i]) or math.isnan(acc[i])) for i in range(n)]
  dominated = []
  for i in range(n):
    d = False
    for j in range(n):
      if i == j or not valid[i] or not valid[j]:
        continue
      if eps[j] <= eps[i] and acc[j] >= acc[i] and (eps[j] < eps[i] or
                                                    acc[j] > acc[i]):
        d = True
    dominated.append(d)
  return valid, dominated


# Small integer grids make ties (equal epsilon, equal accuracy, duplicates)
# frequent; NaN marks failed points; inf epsilon a non-private run.
_value = st.one_of(st.integers(0, 5).map(float), st.just(math.nan),
                   st.floats(0, 10, allow_nan=False))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.one_of(_value, st.just(math.inf)), _value),
                max_size=25))
def test_pareto_frontier_matches_brute_force(points):
  eps = [p[0] for p in points]
  acc = [p[1] for p in points]
  front = pareto_frontier(eps, acc)
  valid, dominated = _dominated_brute_force(eps, acc)
  for i in range(len(points)):
    if not valid[i]:
      assert not front[i]
    else:
      # No frontier point is dominated; every other valid point is.
      assert front[i] == (not dominated[i]), (i, points)


def test_pareto_frontier_example_and_shape_errors():
  eps = [1.0, 2.0, 2.0, 4.0, 0.5, 4.0, math.nan]
  acc = [0.5, 0.7, 0.6, 0.7, 0.2, 0.9, 0.99]
  assert pareto_frontier(eps, acc).tolist() == [True, True, False, False,
                                                 True, True, False]
  with pytest.raises(ValueError, match="same length"):
    pareto_frontier([1.0], [0.1, 0.2])
  assert pareto_frontier([], []).tolist() == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.floats(0.01, 20), st.just(math.inf),
                                    st.just(math.nan)),
                          st.one_of(st.floats(0, 1), st.just(math.nan))),
                max_size=20))
def test_best_per_bucket_matches_a_loop(points):
  edges = [0.5, 1.0, 4.0, math.inf]
  rows = [{"point_id": str(i), "epsilon": e, "acc": a}
          for i, (e, a) in enumerate(points)]
  best = best_per_bucket(rows, "acc", edges)
  assert [label for label, _ in best] == ["eps <= 0.5", "0.5 < eps <= 1",
                                          "1 < eps <= 4", "eps > 4"]
  lows = [-math.inf, 0.5, 1.0, 4.0]
  for (label, row), lo, hi in zip(best, lows, edges):
    inside = [r for r in rows if not math.isnan(r["epsilon"]) and
              not math.isnan(r["acc"]) and lo < r["epsilon"] <= hi]
    if not inside:
      assert row is None, label
    else:
      top = max(r["acc"] for r in inside)
      first = next(r for r in inside if r["acc"] == top)
      assert row is first, label


def test_best_per_bucket_rejects_bad_edges():
  with pytest.raises(ValueError, match="strictly increasing"):
    best_per_bucket([], "acc", [1.0, 1.0])
  with pytest.raises(ValueError, match="strictly increasing"):
    best_per_bucket([], "acc", [])


def test_write_report_tables_plot_and_failures(tmp_path):
  rows = [
      result_row("a", {"dp.target_epsilon": 1.0}, "finished",
                 summary={"test_in_scope_accuracy": 0.6, "epsilon": 0.98,
                          "delta": 1e-5, "data": "clinc150",
                          "nested": {"x": 1}}, workdir="/w/a"),
      result_row("b", {"dp.target_epsilon": 8.0}, "skipped",
                 summary={"test_in_scope_accuracy": 0.8, "epsilon": 7.9,
                          "delta": 1e-5}),
      result_row("c", {"dp.target_epsilon": 4.0}, "finished",
                 summary={"test_in_scope_accuracy": 0.5, "epsilon": 3.9,
                          "delta": 1e-5}),
      result_row("d|x", {"dp.target_epsilon": 2.0}, "failed",
                 error="Traceback...\nValueError: epsilon unreachable"),
  ]
  paths = write_report(str(tmp_path), rows, ["dp.target_epsilon"],
                       edges=[1.0, 4.0, math.inf])
  assert set(paths) == {"csv", "markdown", "pareto", "report"}
  with open(paths["pareto"], "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(paths["csv"]) as f:
    table = list(csv.DictReader(f))
  assert [r["point_id"] for r in table] == ["a", "b", "c", "d|x"]
  assert table[0]["dp.target_epsilon"] == "1.0"
  assert float(table[1]["epsilon"]) == 7.9
  assert "nested" not in table[0]            # only scalars are columns
  assert table[3]["status"] == "failed"
  assert table[3]["error"] == "ValueError: epsilon unreachable"
  assert table[3]["epsilon"] == ""
  report = open(paths["report"]).read()
  md = open(paths["markdown"]).read()
  assert "d\\|x" in md and "epsilon unreachable" in md
  assert "4 points: 1 failed, 2 finished, 1 skipped." in report
  assert "## Pareto frontier (2 points)" in report   # a and b; c dominated
  front = report.split("## Pareto frontier")[1].split("## Best")[0]
  assert "| a |" in front and "| b |" in front and "| c |" not in front
  best = report.split("## Best configuration per epsilon bucket")[1]
  assert "| eps <= 1 | a |" in best
  assert "| 1 < eps <= 4 | c |" in best
  assert "| eps > 4 | b |" in best
  assert "## Failed points (1)" in report


def test_report_without_finished_points_has_no_plot(tmp_path):
  rows = [result_row("a", {"seed": 0}, "failed", error="boom"),
          result_row("b", {"seed": 1}, "finished",
                     summary={"test_accuracy": 0.9, "epsilon": math.inf})]
  paths = write_report(str(tmp_path), rows, ["seed"])
  assert "pareto" not in paths and not os.path.exists(tmp_path / "pareto.png")
  report = open(paths["report"]).read()
  assert "`test_accuracy`" in report          # the metric the rows have
  # The non-private run (epsilon = inf) is the frontier and the last bucket.
  assert "| eps > 16 | b |" in report
