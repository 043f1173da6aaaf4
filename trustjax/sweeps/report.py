"""Reading a sweep's results: table, Pareto frontier, best per epsilon.

A sweep result is a list of rows, one per point (`result_row`): the point's
id and status, the swept fields' values, the final metrics of its
`summary.json` (accuracies, epsilon, delta, ...) and, for a failed point,
its error. From the rows this module writes, into the sweep's directory:

  results.csv, results.md   every point (config, final metrics, epsilon)
  pareto.png                accuracy against epsilon, frontier highlighted
  report.md                 counts, frontier, best point per epsilon bucket,
                            failures

Pareto frontier (privacy-utility trade-off): lower epsilon and higher
accuracy are both better. Point i is dominated when some point j has
eps_j <= eps_i and acc_j >= acc_i with at least one strict inequality; the
frontier is the set of points nobody dominates (equal points do not
dominate each other, so exact duplicates are all on it). Points whose
epsilon or accuracy is NaN (failed, unfinished) are neither on the frontier
nor dominate anything.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

# Summary keys shown first, in this order, when present.
MAIN_METRICS = ("test_in_scope_accuracy", "test_accuracy",
                "val_in_scope_accuracy", "val_accuracy", "train_accuracy",
                "epsilon", "delta", "noise_multiplier", "steps")
DEFAULT_BUCKETS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf)


def pareto_frontier(epsilons: Sequence[float], accuracies: Sequence[float]
                    ) -> np.ndarray:
  """bool[N] mask of the points on the (min epsilon, max accuracy) frontier.

  O(N log N): sort by epsilon; points sharing one epsilon are only
  candidates when they hold that epsilon's best accuracy, and those are on
  the frontier iff that accuracy beats every point of strictly smaller
  epsilon. NaN entries are never on the frontier (see module doc).
  """
  eps = np.asarray(epsilons, dtype=np.float64).reshape(-1)
  acc = np.asarray(accuracies, dtype=np.float64).reshape(-1)
  if eps.shape != acc.shape:
    raise ValueError(f"epsilons and accuracies must have the same length, "
                     f"got {eps.shape[0]} and {acc.shape[0]}")
  valid = ~(np.isnan(eps) | np.isnan(acc))
  on = np.zeros(eps.shape, bool)
  idx = np.flatnonzero(valid)
  if not idx.size:
    return on
  order = idx[np.lexsort((-acc[idx], eps[idx]))]
  best_before = -np.inf   # best accuracy at strictly smaller epsilon
  i = 0
  while i < order.size:
    j = i
    while j < order.size and eps[order[j]] == eps[order[i]]:
      j += 1
    group = order[i:j]
    top = acc[group[0]]   # sorted by accuracy descending within the group
    if top > best_before:
      on[group[acc[group] == top]] = True
    best_before = max(best_before, top)
    i = j
  return on


def bucket_labels(edges: Sequence[float]) -> list[str]:
  """`["eps <= 0.5", "0.5 < eps <= 1", ..., "eps > 16"]` for sorted edges."""
  labels, lo = [], None
  for hi in edges:
    if math.isinf(hi):
      labels.append(f"eps > {lo:g}" if lo is not None else "any eps")
    elif lo is None:
      labels.append(f"eps <= {hi:g}")
    else:
      labels.append(f"{lo:g} < eps <= {hi:g}")
    lo = hi
  return labels


def best_per_bucket(rows: Sequence[Mapping[str, Any]], metric: str,
                    edges: Sequence[float] = DEFAULT_BUCKETS
                    ) -> list[tuple[str, Mapping[str, Any] | None]]:
  """For each epsilon bucket (lo, hi], the row with the highest `metric`.

  Buckets are (-inf, e_0], (e_0, e_1], ...; a last edge of inf catches
  every larger epsilon (and non-private runs, epsilon = inf); without it,
  larger epsilons fall in no bucket. Rows whose metric or epsilon is
  missing/NaN are ignored; ties keep the first row. Returns
  `[(label, row or None), ...]`, one entry per bucket, in edge order.
  """
  edges = [float(e) for e in edges]
  if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
    raise ValueError(f"epsilon bucket edges {edges} must be a non-empty, "
                     "strictly increasing list")
  best: list[Mapping[str, Any] | None] = [None] * len(edges)
  for row in rows:
    eps, val = _num(row.get("epsilon")), _num(row.get(metric))
    if math.isnan(eps) or math.isnan(val):
      continue
    k = int(np.searchsorted(edges, eps, side="left"))
    if k == len(edges):
      continue
    if best[k] is None or val > _num(best[k].get(metric)):
      best[k] = row
  return list(zip(bucket_labels(edges), best))


def _num(x: Any) -> float:
  if isinstance(x, bool) or x is None:
    return math.nan
  try:
    return float(x)
  except (TypeError, ValueError):
    return math.nan


def result_row(point_id: str, overrides: Mapping[str, Any], status: str, *,
               summary: Mapping[str, Any] | None = None,
               error: str = "", workdir: str = "") -> dict[str, Any]:
  """One row of the results table.

  Keys: point_id, status, the swept fields (dotted names), every scalar of
  `summary` (numbers and short strings: final metrics, epsilon, delta,
  ...), error (the last line of the error: the exception or the
  launcher's "error: ..." message; empty if none) and workdir.
  """
  row = {"point_id": point_id, "status": status}
  row.update(overrides)
  for k, v in (summary or {}).items():
    if isinstance(v, (int, float, str)) and k not in row:
      row[k] = v
  row["error"] = error.strip().splitlines()[-1] if error.strip() else ""
  row["workdir"] = workdir
  return row


def _columns(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]
             ) -> list[str]:
  present = set().union(*(r.keys() for r in rows)) if rows else set()
  cols = ["point_id", "status", *fields]
  cols += [m for m in MAIN_METRICS if m in present]
  cols += sorted(present - set(cols) - {"error", "workdir"})
  return cols + ["error", "workdir"]


def _fmt(v: Any) -> str:
  if v is None:
    return ""
  if isinstance(v, float):
    return f"{v:.4g}"
  return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]],
                   columns: Sequence[str]) -> str:
  """A GitHub-markdown table of `rows` restricted to `columns`."""
  from trustjax import markdown
  return markdown.dict_table(rows, columns, _fmt) if columns else ""


def write_results(sweep_dir: str, rows: Sequence[Mapping[str, Any]],
                  fields: Sequence[str]) -> tuple[str, str]:
  """Writes results.csv (every column) and results.md (the main ones).

  Returns the two paths.
  """
  os.makedirs(sweep_dir, exist_ok=True)
  cols = _columns(rows, fields)
  csv_path = os.path.join(sweep_dir, "results.csv")
  with open(csv_path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      w.writerow({c: r.get(c, "") for c in cols})
  md_cols = [c for c in cols if c in ("point_id", "status", *fields,
                                       *MAIN_METRICS, "error")]
  md_path = os.path.join(sweep_dir, "results.md")
  with open(md_path, "w") as f:
    f.write(f"# Sweep results ({len(rows)} points)\n\n"
            + markdown_table(rows, md_cols) + "\n")
  return csv_path, md_path


def plot_pareto(path: str, rows: Sequence[Mapping[str, Any]],
                metric: str) -> str | None:
  """PNG of `metric` against epsilon: all points, frontier as a step line.

  Only finite epsilons can be drawn (non-private runs have epsilon = inf);
  returns None, writing nothing, when no point has both values finite.
  """
  eps = np.array([_num(r.get("epsilon")) for r in rows])
  acc = np.array([_num(r.get(metric)) for r in rows])
  ok = np.isfinite(eps) & np.isfinite(acc)
  if not ok.any():
    return None
  front = pareto_frontier(eps[ok], acc[ok])
  e, a = eps[ok], acc[ok]
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 4), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  if (~front).any():
    ax.scatter(e[~front], a[~front], s=14, alpha=0.6, label="sweep point")
  order = np.argsort(e[front])
  ax.step(e[front][order], a[front][order], where="post", color="C3",
          marker="o", ms=5, label="Pareto frontier")
  if e.min() > 0 and e.max() / e.min() > 20:
    ax.set_xscale("log")
  ax.set_xlabel("epsilon")
  ax.set_ylabel(metric)
  ax.set_title("privacy-utility trade-off")
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png")
  return path


def write_report(sweep_dir: str, rows: Sequence[Mapping[str, Any]],
                 fields: Sequence[str], *, metric: str = "",
                 edges: Sequence[float] = DEFAULT_BUCKETS) -> dict[str, str]:
  """Writes results.csv/.md, pareto.png and report.md into `sweep_dir`.

  Args:
    rows: `result_row`s of every point.
    fields: the swept fields (table columns after id and status).
    metric: accuracy column to trade against epsilon; '' picks
      test_in_scope_accuracy, else test_accuracy, whichever rows have.
    edges: epsilon bucket edges for the best-per-bucket table.

  Returns:
    {"csv", "markdown", "report", "pareto"} -> path ("pareto" absent when
    no point has a finite epsilon and metric).
  """
  if not metric:
    have = set().union(*(r.keys() for r in rows)) if rows else set()
    metric = ("test_in_scope_accuracy" if "test_in_scope_accuracy" in have
              else "test_accuracy")
  csv_path, md_path = write_results(sweep_dir, rows, fields)
  out = {"csv": csv_path, "markdown": md_path}
  png = plot_pareto(os.path.join(sweep_dir, "pareto.png"), rows, metric)
  if png:
    out["pareto"] = png
  counts = {}
  for r in rows:
    counts[r["status"]] = counts.get(r["status"], 0) + 1
  front = pareto_frontier([_num(r.get("epsilon")) for r in rows],
                          [_num(r.get(metric)) for r in rows])
  front_rows = sorted((r for r, f in zip(rows, front) if f),
                      key=lambda r: _num(r.get("epsilon")))
  cols = ["point_id", *fields, metric, "epsilon"]
  lines = [f"# Sweep report: {os.path.basename(os.path.abspath(sweep_dir))}",
           "",
           f"{len(rows)} points: " + ", ".join(
               f"{n} {s}" for s, n in sorted(counts.items())) + ".",
           f"Accuracy metric: `{metric}` (higher is better); epsilon from "
           "each run's accountant (lower is better).",
           "Full table: [results.csv](results.csv), "
           "[results.md](results.md).", ""]
  if png:
    lines += ["![Pareto frontier](pareto.png)", ""]
  lines += [f"## Pareto frontier ({len(front_rows)} points)", "",
            "No other point has both lower-or-equal epsilon and "
            "higher-or-equal accuracy (one strictly).", "",
            markdown_table(front_rows, cols) if front_rows
            else "_no finished point_", "",
            "## Best configuration per epsilon bucket", ""]
  best = best_per_bucket(rows, metric, edges)
  lines.append(markdown_table(
      [{"bucket": label, **(r or {"point_id": "-"})} for label, r in best],
      ["bucket", *cols]))
  failed = [r for r in rows if r["status"] == "failed"]
  if failed:
    lines += ["", f"## Failed points ({len(failed)})", "",
              "Each failed point's full error is in "
              "`points/<point_id>/error.txt`.", "",
              markdown_table(failed, ["point_id", *fields, "error"])]
  report = os.path.join(sweep_dir, "report.md")
  with open(report, "w") as f:
    f.write("\n".join(lines) + "\n")
  out["report"] = report
  return out
