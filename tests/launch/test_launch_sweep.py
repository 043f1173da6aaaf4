"""End-to-end tests of `python -m launch.sweep` (sweep_dp_clinc150.py)."""

import csv
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SMOKE = "--config=configs/sweep_dp_clinc150.py:smoke"


def _launch(*args):
  return subprocess.run([sys.executable, "-m", "launch.sweep", *args],
                        cwd=REPO, capture_output=True, text=True,
                        timeout=600)


def _rows(sweep_dir):
  with open(os.path.join(sweep_dir, "results.csv")) as f:
    return list(csv.DictReader(f))


def test_slurm_array_line_then_sweep_skips_it_and_reports(tmp_path):
  sweep = str(tmp_path / "sweep")
  r = _launch(SMOKE, f"--workdir={sweep}", "--print_commands")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "slurm_array.sh" in r.stdout
  lines = open(os.path.join(sweep, "commands.txt")).read().splitlines()
  assert len(lines) == 2
  assert not os.path.exists(os.path.join(sweep, "points"))  # ran nothing
  # What the scheduler does for array task 1.
  env = dict(os.environ, SLURM_ARRAY_TASK_ID="1")
  task = subprocess.run(["bash", os.path.join(sweep, "slurm_array.sh")],
                        env=env, capture_output=True, text=True, timeout=600)
  assert task.returncode == 0, task.stderr[-3000:]
  assert "at epsilon" in task.stdout
  points = sorted(os.listdir(os.path.join(sweep, "points")))
  assert len(points) == 1 and points[0].startswith("target_epsilon=2-")
  first = os.path.join(sweep, "points", points[0])
  metrics = os.path.join(first, "metrics.jsonl")
  mtime = os.stat(metrics).st_mtime_ns
  # The table from disk: one point done, one pending.
  r = _launch(SMOKE, f"--workdir={sweep}", "--report_only")
  assert r.returncode == 0, r.stderr[-3000:]
  assert [x["status"] for x in _rows(sweep)] == ["finished", "pending"]
  # The same task again (a requeue) finds the point finished: no-op.
  task = subprocess.run(["bash", os.path.join(sweep, "slurm_array.sh")],
                        env=env, capture_output=True, text=True, timeout=60)
  assert task.returncode == 0 and task.stdout == ""
  # The sweep runs the rest (stacked, in-process) and skips the first.
  r = _launch(SMOKE, f"--workdir={sweep}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "1 already finished (skipped), 1 to run (stacked)" in r.stdout
  assert "sweep 1 finished, 1 skipped" in r.stdout
  assert os.stat(metrics).st_mtime_ns == mtime
  rows = _rows(sweep)
  assert [x["status"] for x in rows] == ["skipped", "finished"]
  for row, target in zip(rows, (2.0, 8.0)):
    assert float(row["dp.target_epsilon"]) == target
    assert 0 < float(row["epsilon"]) <= target + 1e-9
    assert 0 <= float(row["test_in_scope_accuracy"]) <= 1
    with open(os.path.join(row["workdir"], "summary.json")) as f:
      assert json.load(f)["epsilon"] == float(row["epsilon"])
  for name in ("results.md", "pareto.png", "report.md"):
    assert os.path.exists(os.path.join(sweep, name)), name
  report = open(os.path.join(sweep, "report.md")).read()
  assert "## Pareto frontier" in report and "1 skipped" in report


def test_bad_sweep_is_a_clear_error_and_runs_nothing(tmp_path):
  cfg = tmp_path / "bad_sweep.py"
  cfg.write_text(
      "import importlib.util\n"
      f"spec = importlib.util.spec_from_file_location('s', "
      f"{os.path.join(REPO, 'configs', 'sweep_dp_clinc150.py')!r})\n"
      "m = importlib.util.module_from_spec(spec)\n"
      "spec.loader.exec_module(m)\n"
      "def get_config(arg=None):\n"
      "  c = m.get_config('smoke')\n"
      "  c.grid.dp.l2_clipp = (1.0, 2.0)\n"
      "  return c\n")
  sweep = str(tmp_path / "sweep")
  r = _launch(f"--config={cfg}", f"--workdir={sweep}")
  assert r.returncode != 0
  assert "dp.l2_clipp" in r.stderr and "did you mean dp.l2_clip" in r.stderr
  assert "Traceback" not in r.stderr
  assert not os.path.exists(sweep)
  r = _launch(SMOKE, f"--workdir={sweep}", "--config.grid.dp.target_epsilon=()")
  assert r.returncode != 0 and "no values" in r.stderr
  assert not os.path.exists(sweep)
