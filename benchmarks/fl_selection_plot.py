r"""Accuracy against rounds and a table for `benchmarks/fl_selection.sh`.

  python benchmarks/fl_selection_plot.py [--runs=runs/fl_selection] \
      [--out=benchmarks/results]

Reads every `<setting>_<selection>_s<seed>/` workdir (metrics.jsonl and
summary.json) and writes:
  fl_selection.png: validation in-scope accuracy against rounds, one panel
    per setting (static, continual), per selection the mean over seeds and
    a band from the lowest to the highest seed;
  fl_selection.md: per setting and selection, mean +- sample std over seeds
    of the final test in-scope accuracy and of the held-out clients'
    accuracy (mean, p10, p50, p90), and the paired activity - uniform
    difference of test in-scope accuracy (per seed, then mean +- std).
    Runs that did not finish (no summary.json, e.g. diverged: the job stops
    on a non-finite client loss) are left out and listed under the table.
Prints one JSON line with the same numbers.
"""

import argparse
import collections
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trustjax.experiment import read_metrics  # noqa: E402

SETTINGS = ("static", "continual")
SELECTIONS = ("uniform", "activity")
CURVE = "val_in_scope_accuracy"
FINAL = ("test_in_scope_accuracy", "heldout_acc_mean", "heldout_acc_p10",
         "heldout_acc_p50", "heldout_acc_p90")


def load(runs: str) -> tuple[dict, list[str]]:
  """({(setting, selection): {seed: (rounds[], curve[], summary)}},
  [one line per unfinished run])."""
  out = collections.defaultdict(dict)
  failed = []
  for name in sorted(os.listdir(runs)):
    m = re.fullmatch(r"(static|continual)_(uniform|activity)_s(\d+)", name)
    path = os.path.join(runs, name)
    if not m or not os.path.isdir(path):
      continue
    if not os.path.exists(os.path.join(path, "summary.json")):
      why = "unfinished (no summary.json)"
      if os.path.exists(path + ".log"):
        with open(path + ".log", errors="replace") as f:
          errors = [l.strip() for l in f if "Error" in l]
        why = errors[-1] if errors else why
      failed.append(f"{m[1]} / {m[2]} / seed {m[3]}: {why}")
      continue
    with open(os.path.join(path, "summary.json")) as f:
      summary = json.load(f)
    rows = [r for r in read_metrics(path) if CURVE in r]
    out[(m[1], m[2])][int(m[3])] = (np.array([r["step"] for r in rows]),
                                    np.array([r[CURVE] for r in rows]),
                                    summary)
  return out, failed


def mean_std(x) -> tuple[float, float]:
  x = np.asarray(x, float)
  return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def plot(runs: dict, path: str) -> None:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(10, 4), dpi=110)
  FigureCanvasAgg(fig)
  for i, setting in enumerate(SETTINGS):
    ax = fig.add_subplot(1, 2, i + 1)
    for sel, color in zip(SELECTIONS, ("tab:blue", "tab:red")):
      seeds = runs.get((setting, sel), {})
      if not seeds:
        continue
      steps = min((s for s, _, _ in seeds.values()), key=len)
      ys = np.stack([y[:len(steps)] for _, y, _ in seeds.values()])
      ax.plot(steps, ys.mean(0), color=color,
              label=f"{sel} (mean of {len(ys)} seeds)")
      ax.fill_between(steps, ys.min(0), ys.max(0), color=color, alpha=0.2,
                      lw=0)
    ax.set_title(f"{setting}: band = min..max over seeds")
    ax.set_xlabel("round")
    ax.set_ylabel("validation in-scope accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
  fig.suptitle("CLINC150, 1000 heavy-tailed clients: activity-based vs "
               "uniform selection")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png")


def table(runs: dict, failed: list[str]) -> tuple[str, dict]:
  lines = ["| setting | selection | seeds | test in-scope acc. | held-out "
           "client acc. mean | p10 | p50 | p90 |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  result = {}
  for setting in SETTINGS:
    for sel in SELECTIONS:
      seeds = runs.get((setting, sel), {})
      if not seeds:
        continue
      stats = {k: mean_std([s[k] for _, _, s in seeds.values()])
               for k in FINAL}
      result[f"{setting}_{sel}"] = {"seeds": sorted(seeds), **{
          k: [round(v, 4) for v in stats[k]] for k in FINAL}}
      cells = [f"{m:.3f} ± {s:.3f}" for m, s in stats.values()]
      lines.append(f"| {setting} | {sel} | {len(seeds)} | " +
                   " | ".join(cells) + " |")
  lines += ["", "| setting | activity - uniform, test in-scope acc. per seed "
            "| mean ± std |", "| --- | --- | --- |"]
  for setting in SETTINGS:
    a = runs.get((setting, "activity"), {})
    u = runs.get((setting, "uniform"), {})
    common = sorted(set(a) & set(u))
    if not common:
      continue
    d = [a[s][2]["test_in_scope_accuracy"] - u[s][2]["test_in_scope_accuracy"]
         for s in common]
    m, sd = mean_std(d)
    result[f"{setting}_diff"] = {"seeds": common,
                                 "per_seed": [round(x, 4) for x in d],
                                 "mean": round(m, 4), "std": round(sd, 4)}
    per = ", ".join(f"s{s}: {x:+.3f}" for s, x in zip(common, d))
    lines.append(f"| {setting} | {per} | {m:+.3f} ± {sd:.3f} |")
  if failed:
    lines += ["", "Not finished, left out of the table and the plot:"]
    lines += [f"- {f}" for f in failed]
    result["failed"] = failed
  return "\n".join(lines) + "\n", result


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--runs", default="runs/fl_selection")
  ap.add_argument("--out", default="benchmarks/results")
  args = ap.parse_args()
  runs, failed = load(args.runs)
  if not runs:
    sys.exit(f"no finished runs (summary.json) under {args.runs}; run "
             "benchmarks/fl_selection.sh first")
  plot(runs, os.path.join(args.out, "fl_selection.png"))
  text, result = table(runs, failed)
  with open(os.path.join(args.out, "fl_selection.md"), "w") as f:
    f.write(text)
  print(text)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
