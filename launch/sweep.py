r"""Hyperparameter sweep of a classification job: run, resume, report.

  python -m launch.sweep --config=configs/sweep_dp_clinc150.py
  python -m launch.sweep --config=configs/sweep_dp_clinc150.py:smoke \
      --workdir=runs/sweep_smoke --config.mode=processes

Expands the sweep config's grid / zip / random search into points, checks
all of them before anything runs, trains every unfinished point (stacked in
one program, or as separate processes `max_parallel` at a time; finished
points are skipped, interrupted ones resume), then writes results.csv,
results.md, pareto.png and report.md into the sweep directory.

`--print_commands` runs nothing: it writes commands.txt (one self-contained,
resumable shell line per point) and slurm_array.sh (`sbatch` it: task i runs
line i). `--report_only` rebuilds the table and report from what is on disk
(e.g. after the array finished). Exit status 1 when a point failed.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/sweep_dp_clinc150.py", "Sweep config file.")
_WORKDIR = flags.DEFINE_string(
    "workdir", "", "Sweep directory ('' = the config's sweep_dir).")
_PRINT = flags.DEFINE_bool(
    "print_commands", False,
    "Write commands.txt and slurm_array.sh instead of running.")
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Only rebuild the results table and report.")


def main(argv):
  del argv
  from trustjax.sweeps import runner
  common.quiet_logs()
  try:
    plan = runner.plan_sweep(_CONFIG.value, _WORKDIR.value or None, cwd=REPO)
    if _PRINT.value:
      cmds, script = runner.write_commands(plan)
      pending = len(plan.pending())
      print(f"{len(plan.points)} points ({pending} unfinished)\n"
            f"commands: {cmds}\nSLURM array: sbatch {script}\n"
            "then: python -m launch.sweep ... --report_only", flush=True)
      return
    results = None
    if not _REPORT_ONLY.value:
      results = runner.run_sweep(plan)
  except (ValueError, FileNotFoundError, KeyError) as e:
    sys.exit(f"error: {e}")
  paths = runner.write_sweep_report(plan, results)
  counts = runner.summarize(results) if results else {}
  print("\nsweep " + (", ".join(f"{n} {s}" for s, n in sorted(
      counts.items())) or "report") + f" ({plan.sweep_dir})", flush=True)
  for name in ("csv", "markdown", "pareto", "report"):
    if name in paths:
      print(f"  {name}: {paths[name]}", flush=True)
  if counts.get("failed"):
    failed = [r.point.point_id for r in results if r.status == "failed"]
    sys.exit(f"error: {len(failed)} point(s) failed (see their error.txt): "
             + ", ".join(failed))


if __name__ == "__main__":
  app.run(main)
