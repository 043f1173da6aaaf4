"""Plan and run a sweep of classification jobs; skip, resume, print commands.

A sweep is one base job config (a config file, a variant and overrides)
and a search space (`trustjax.sweeps.grid`). `plan_sweep` turns a sweep
config into one `PlannedPoint` per point, each with its full job config and
its workdir `sweep_dir/points/<point_id>/`, and checks everything that can
be checked before anything runs:

  * every swept field exists in the base config and takes the value's type;
  * every point config passes the job's own validation;
  * a point workdir already on disk holds exactly the point's config (a
    changed base would otherwise silently mix two sweeps);
  * mode "stacked": all points to run can share one program
    (`classification.check_stackable`);
  * mode "processes" and printed commands: every value can be written as an
    absl `--config.field=value` flag.

State of a point on disk (what makes a sweep restartable):
  finished     summary.json present: skipped, its files are not touched;
  interrupted  config.json without summary.json: rerun, and the job resumes
               from its own last checkpoint;
  failed       error.txt (the last attempt's error): rerun; the error file
               is removed when the point starts and rewritten if it fails
               again;
  new          no workdir yet.

Modes (`run_sweep`):
  "processes"  each point is `python -m launch.train_dp` (or launch.train)
               in its own process, `max_parallel` at a time; stdout/stderr
               go to points/<id>/log.txt.
  "stacked"    the points are trained side by side in one jitted program
               (`classification.run_stacked`), in chunks of `stack_size`
               (0: all at once); interrupted points are stacked with the
               points checkpointed at the same step.
  "auto"       points grouped by `classification.stack_key`; groups of two
               or more are stacked, the rest run as processes.
A failing point (or stacked chunk) never stops the others: its error goes
to points/<id>/error.txt and to the results table.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import json
import os
import shlex
import subprocess
import sys
import traceback
from typing import Any, Callable, Mapping, Sequence

from trustjax.sweeps import grid as grid_lib
from trustjax.sweeps import report as report_lib

MODES = ("stacked", "processes", "auto")
SUMMARY = "summary.json"
ERROR = "error.txt"
LOG = "log.txt"


@dataclasses.dataclass
class PlannedPoint:
  """One point: its id, swept values, full job config, workdir and state."""
  point_id: str
  overrides: dict[str, Any]
  config: Any            # ml_collections.ConfigDict of the job
  workdir: str
  state: str             # "finished" | "interrupted" | "failed" | "new"


@dataclasses.dataclass
class SweepPlan:
  """Everything needed to run, resume or print a sweep."""
  sweep_dir: str
  base_path: str         # absolute path of the base job's config file
  base_variant: str      # '' for the file's default
  base_overrides: dict[str, Any]
  fields: list[str]      # the swept fields (dotted), table columns
  points: list[PlannedPoint]
  mode: str
  max_parallel: int
  stack_size: int
  module: str            # "launch.train_dp" or "launch.train"
  cwd: str               # where `python -m <module>` runs (repo root)
  metric: str = ""
  epsilon_buckets: tuple = report_lib.DEFAULT_BUCKETS

  def pending(self) -> list[PlannedPoint]:
    return [p for p in self.points if p.state != "finished"]


@dataclasses.dataclass
class PointResult:
  """What happened to a point in `run_sweep`."""
  point: PlannedPoint
  status: str            # "skipped" | "finished" | "failed" | "pending"
  summary: dict | None = None
  error: str = ""


def parse_base(spec: str, cwd: str) -> tuple[str, str]:
  """`"configs/dp_clinc150.py:smoke"` -> (absolute path, variant)."""
  if not spec:
    raise ValueError("sweep config field base is empty: give the job "
                     "config as 'path/to/config.py[:variant]'")
  path, _, variant = spec.partition(":")
  path = path if os.path.isabs(path) else os.path.join(cwd, path)
  if not os.path.isfile(path):
    raise ValueError(f"base={spec!r}: config file {path} not found")
  return os.path.abspath(path), variant


def _flat_config(config: Any) -> dict[str, Any]:
  return grid_lib.flatten_space(config.to_dict() if hasattr(config,
                                                            "to_dict")
                                else config)


def _set_field(config: Any, field: str, value: Any, valid: Sequence[str],
               what: str) -> None:
  if field not in valid:
    close = difflib.get_close_matches(field, valid, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"{what} field {field!r} is not in the base config"
                     f"{hint} (fields are dotted paths such as "
                     "'optimizer.learning_rate')")
  node = config
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    raise ValueError(f"{what} field {field!r} cannot take the value "
                     f"{value!r}: {e}") from e


def flag_value(field: str, value: Any) -> str:
  """`value` as absl's config_flags parses it back for `--config.field`.

  Raises ValueError for values a flag cannot carry (None, nested lists).
  """
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, str):
    return value
  if isinstance(value, (list, tuple)) and all(
      isinstance(v, (bool, int, float, str)) for v in value):
    return repr(tuple(value))
  raise ValueError(
      f"sweep value {field}={value!r} cannot be passed as a "
      f"--config.{field} flag (absl flags cannot set None or nested "
      "values); put it in a variant of the base config file, or use "
      "mode=stacked")


def _point_state(workdir: str, config: Any) -> str:
  from trustjax.experiment import config_diff
  cfg_file = os.path.join(workdir, "config.json")
  if os.path.exists(cfg_file):
    with open(cfg_file) as f:
      old = json.load(f)
    diff = config_diff(old, config)
    if diff:
      raise ValueError(
          f"point workdir {workdir} holds a run with a different config "
          f"({'; '.join(diff[:5])}): the base config or overrides changed "
          "since that point ran. Use a new sweep workdir, or delete that "
          "point's directory to rerun it")
    if os.path.exists(os.path.join(workdir, SUMMARY)):
      return "finished"
  if os.path.exists(os.path.join(workdir, ERROR)):
    return "failed"
  return "interrupted" if os.path.exists(cfg_file) else "new"


def plan_sweep(sweep_config: Any, sweep_dir: str | None = None, *,
               cwd: str | None = None) -> SweepPlan:
  """Expands and checks a sweep config (see module doc); runs nothing.

  Args:
    sweep_config: ConfigDict (or mapping) with `base` ("path.py[:variant]"),
      `overrides` (nested field -> value, applied to every point), `grid`,
      `zip`, `random` (see `grid.expand_space`), `mode`, `max_parallel`,
      `stack_size`, `sweep_dir`, and optionally `metric`,
      `epsilon_buckets`.
    sweep_dir: overrides `sweep_config.sweep_dir`.
    cwd: directory relative base paths are read from and jobs run in
      (the repository root; default: the current directory).

  Raises:
    ValueError: any of the problems listed in the module doc, naming the
      field or point.
  """
  from trustjax.experiment import classification
  from trustjax.experiment import load_config
  sc = sweep_config
  cwd = os.path.abspath(cwd or os.getcwd())
  sweep_dir = os.path.abspath(sweep_dir or sc.get("sweep_dir", ""))
  if not sweep_dir or sweep_dir == os.path.abspath(os.sep):
    raise ValueError("sweep_dir is empty: pass --workdir or set sweep_dir")
  mode = sc.get("mode", "processes")
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is invalid; valid: {', '.join(MODES)}")
  max_parallel = int(sc.get("max_parallel", 1))
  if max_parallel < 1:
    raise ValueError(f"max_parallel={max_parallel} is invalid: must be >= 1")
  stack_size = int(sc.get("stack_size", 0) or 0)
  if stack_size < 0:
    raise ValueError(f"stack_size={stack_size} is invalid: must be >= 0 "
                     "(0: stack all points of a group at once)")
  base_path, variant = parse_base(sc.get("base", ""), cwd)
  base_over = grid_lib.flatten_space(sc.get("overrides"))
  base = load_config(base_path, variant or None)
  valid = list(_flat_config(base))
  for f, v in base_over.items():
    _set_field(base, f, v, valid, "overrides")
  points = grid_lib.expand_space(sc.get("grid"), sc.get("zip"),
                                 sc.get("random"))
  fields = list(points[0].overrides)
  planned = []
  for sp in points:
    cfg = base.copy_and_resolve_references()
    for f, v in sp.overrides.items():
      _set_field(cfg, f, v, valid, "sweep")
    try:
      classification.validate_config(cfg)
    except ValueError as e:
      raise ValueError(f"sweep point {sp.point_id}: {e}") from e
    wd = os.path.join(sweep_dir, "points", sp.point_id)
    planned.append(PlannedPoint(sp.point_id, dict(sp.overrides), cfg, wd,
                                _point_state(wd, cfg)))
  module = "launch.train_dp" if base.dp.enabled else "launch.train"
  plan = SweepPlan(sweep_dir=sweep_dir, base_path=base_path,
                   base_variant=variant, base_overrides=base_over,
                   fields=fields, points=planned, mode=mode,
                   max_parallel=max_parallel, stack_size=stack_size,
                   module=module, cwd=cwd, metric=sc.get("metric", "") or "",
                   epsilon_buckets=tuple(sc.get(
                       "epsilon_buckets", report_lib.DEFAULT_BUCKETS)))
  pending = plan.pending()
  if mode == "stacked" and len(pending) > 1:
    try:
      classification.check_stackable([p.config for p in pending])
    except ValueError as e:
      raise ValueError(f"mode=stacked: {e} (or set mode=auto to stack only "
                       "the points that share shapes)") from e
  if mode != "stacked":
    for p in pending:
      point_command(plan, p)   # raises if a value cannot be a flag
  return plan


def point_command(plan: SweepPlan, point: PlannedPoint) -> list[str]:
  """The self-contained argv that runs (or resumes) `point` from plan.cwd.

  `python -m launch.train_dp --config=<abs base>[:variant]
  --config.<field>=<value> ... --workdir=<abs point workdir>`: rerunning it
  resumes an interrupted point from its checkpoint.
  """
  spec = plan.base_path + (f":{plan.base_variant}" if plan.base_variant
                           else "")
  argv = [sys.executable, "-m", plan.module, f"--config={spec}"]
  for f, v in {**plan.base_overrides, **point.overrides}.items():
    argv.append(f"--config.{f}={flag_value(f, v)}")
  argv.append(f"--workdir={point.workdir}")
  return argv


def shell_command(plan: SweepPlan, point: PlannedPoint) -> str:
  """One shell line: cd to the repo, skip if finished, else run/resume."""
  summary = os.path.join(point.workdir, SUMMARY)
  return (f"cd {shlex.quote(plan.cwd)} && {{ test -f {shlex.quote(summary)}"
          f" || {shlex.join(point_command(plan, point))}; }}")


def write_commands(plan: SweepPlan) -> tuple[str, str]:
  """Writes commands.txt (one line per point) and a SLURM array script.

  commands.txt line i (1-based) runs point i, or does nothing when that
  point already finished; `sbatch slurm_array.sh` runs line
  $SLURM_ARRAY_TASK_ID of it, `max_parallel` tasks at a time. Rerunning
  the array after a preemption resumes interrupted points from their
  checkpoints. Returns (commands path, script path).
  """
  os.makedirs(os.path.join(plan.sweep_dir, "logs"), exist_ok=True)
  cmd_path = os.path.join(plan.sweep_dir, "commands.txt")
  with open(cmd_path, "w") as f:
    for p in plan.points:
      f.write(shell_command(plan, p) + "\n")
  data_dir = os.environ.get("TRUSTJAX_DATA_DIR", "")
  q = shlex.quote
  script = [
      "#!/bin/bash",
      f"#SBATCH --job-name=sweep-{os.path.basename(plan.sweep_dir)}",
      f"#SBATCH --array=1-{len(plan.points)}%{plan.max_parallel}",
      f"#SBATCH --output={os.path.join(plan.sweep_dir, 'logs')}/%A_%a.out",
      "# One sweep point per array task: line $SLURM_ARRAY_TASK_ID of",
      "# commands.txt (finished points exit at once; interrupted ones",
      "# resume). Afterwards collect the table and report with",
      "#   python -m launch.sweep --config=... --report_only",
      "set -euo pipefail",
      (f"export TRUSTJAX_DATA_DIR=${{TRUSTJAX_DATA_DIR:-{q(data_dir)}}}"
       if data_dir else "# export TRUSTJAX_DATA_DIR=/path/to/data"),
      f'line=$(sed -n "${{SLURM_ARRAY_TASK_ID}}p" {q(cmd_path)})',
      'if [ -z "$line" ]; then',
      '  echo "no line $SLURM_ARRAY_TASK_ID in commands.txt" >&2; exit 1',
      "fi",
      'eval "$line"',
  ]
  sh_path = os.path.join(plan.sweep_dir, "slurm_array.sh")
  with open(sh_path, "w") as f:
    f.write("\n".join(script) + "\n")
  os.chmod(sh_path, 0o755)
  return cmd_path, sh_path


def _read_summary(workdir: str) -> dict | None:
  path = os.path.join(workdir, SUMMARY)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _record_failure(point: PlannedPoint, error: str) -> PointResult:
  os.makedirs(point.workdir, exist_ok=True)
  with open(os.path.join(point.workdir, ERROR), "w") as f:
    f.write(error.rstrip() + "\n")
  return PointResult(point, "failed", error=error)


def _start(point: PlannedPoint) -> None:
  err = os.path.join(point.workdir, ERROR)
  if os.path.exists(err):
    os.remove(err)


def _check_finished(point: PlannedPoint) -> PointResult:
  """A run that exited cleanly must have left its summary and our config."""
  from trustjax.experiment import config_diff
  summary = _read_summary(point.workdir)
  if summary is None:
    return _record_failure(point, f"the job exited without writing "
                           f"{SUMMARY} in {point.workdir}")
  with open(os.path.join(point.workdir, "config.json")) as f:
    diff = config_diff(json.load(f), point.config)
  if diff:
    return _record_failure(point, "the job ran a config other than the "
                           f"planned one: {'; '.join(diff)}")
  return PointResult(point, "finished", summary=summary)


def _run_process(plan: SweepPlan, point: PlannedPoint,
                 log: Callable[[str], None]) -> PointResult:
  _start(point)
  os.makedirs(point.workdir, exist_ok=True)
  argv = point_command(plan, point)
  log_path = os.path.join(point.workdir, LOG)
  with open(log_path, "a") as f:
    f.write(f"$ {shlex.join(argv)}\n")
    f.flush()
    rc = subprocess.run(argv, cwd=plan.cwd, stdout=f, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, check=False).returncode
  if rc != 0:
    with open(log_path) as f:
      tail = f.read().splitlines()[-40:]
    lines = [l for l in tail if l.strip()]
    error = "\n".join(lines) or f"exit status {rc}"
    log(f"[sweep] {point.point_id}: FAILED (exit {rc}): "
        f"{lines[-1] if lines else ''}")
    return _record_failure(point, f"exit status {rc}; last lines of "
                           f"{log_path}:\n{error}")
  result = _check_finished(point)
  log(f"[sweep] {point.point_id}: {result.status}")
  return result


def _run_stacked_chunk(points: list[PlannedPoint], stacked_fn,
                       log: Callable[[str], None]) -> list[PointResult]:
  for p in points:
    _start(p)
  ids = ", ".join(p.point_id for p in points)
  log(f"[sweep] training {len(points)} points stacked: {ids}")
  try:
    stacked_fn([p.config for p in points], [p.workdir for p in points])
  except Exception as e:  # noqa: BLE001  one chunk must not stop the sweep
    error = "".join(traceback.format_exception(e)).rstrip()
    msg = f"{type(e).__name__}: {e}"
    log(f"[sweep] stacked chunk FAILED ({msg.splitlines()[0]}): {ids}")
    return [_record_failure(p, f"stacked run of [{ids}] failed: {msg}\n\n"
                            + error) for p in points]
  out = [_check_finished(p) for p in points]
  log(f"[sweep] stacked chunk done: {ids}")
  return out


def run_sweep(plan: SweepPlan, *, stacked_fn: Callable | None = None,
              log: Callable[[str], None] = print) -> list[PointResult]:
  """Runs every unfinished point of `plan`; returns one result per point.

  Finished points are reported "skipped" and not touched. Results are in
  plan order. `stacked_fn(configs, workdirs)` trains a stacked chunk
  (default `classification.run_stacked`).
  """
  if stacked_fn is None:
    from trustjax.experiment.classification import run_stacked
    stacked_fn = run_stacked
  results: dict[str, PointResult] = {}
  for p in plan.points:
    if p.state == "finished":
      results[p.point_id] = PointResult(p, "skipped",
                                        summary=_read_summary(p.workdir))
  pending = plan.pending()
  log(f"[sweep] {len(plan.points)} points: {len(results)} already finished "
      f"(skipped), {len(pending)} to run ({plan.mode}) in {plan.sweep_dir}")
  chunks, singles = _split(plan, pending)
  for chunk in chunks:
    for r in _run_stacked_chunk(chunk, stacked_fn, log):
      results[r.point.point_id] = r
  if singles:
    with concurrent.futures.ThreadPoolExecutor(plan.max_parallel) as pool:
      for r in pool.map(lambda p: _run_process(plan, p, log), singles):
        results[r.point.point_id] = r
  return [results[p.point_id] for p in plan.points]


def _checkpoint_step(workdir: str) -> int:
  """Step of the newest complete checkpoint in `workdir` (0: none)."""
  ckdir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckdir):
    return 0
  steps = [int(d) for d in os.listdir(ckdir) if d.isdigit()]
  return max(steps, default=0)


def _split(plan: SweepPlan, pending: list[PlannedPoint]
           ) -> tuple[list[list[PlannedPoint]], list[PlannedPoint]]:
  """Stacked chunks and single-process points of the pending points."""
  if plan.mode == "processes" or not pending:
    return [], list(pending)
  # A stacked program resumes all its models from one step: interrupted
  # points are grouped by the step of their last checkpoint.
  if plan.mode == "stacked":
    key = lambda p: _checkpoint_step(p.workdir)  # noqa: E731
  else:
    from trustjax.experiment.classification import stack_key
    key = lambda p: (stack_key(p.config),  # noqa: E731
                     _checkpoint_step(p.workdir))
  by_key: dict[Any, list[PlannedPoint]] = {}
  for p in pending:
    by_key.setdefault(key(p), []).append(p)
  groups = list(by_key.values())
  chunks, singles = [], []
  for g in groups:
    if plan.mode == "auto" and len(g) == 1:
      singles.extend(g)
      continue
    size = plan.stack_size or len(g)
    chunks.extend(g[i:i + size] for i in range(0, len(g), size))
  return chunks, singles


def collect(plan: SweepPlan,
            results: Sequence[PointResult] | None = None) -> list[dict]:
  """Result rows (`report.result_row`) of every point.

  Without `results` (e.g. after a SLURM array), the state on disk decides:
  finished (summary.json), failed (error.txt), else pending.
  """
  if results is None:
    results = []
    for p in plan.points:
      summary = _read_summary(p.workdir)
      if summary is not None:
        results.append(PointResult(p, "finished", summary=summary))
      elif os.path.exists(os.path.join(p.workdir, ERROR)):
        with open(os.path.join(p.workdir, ERROR)) as f:
          results.append(PointResult(p, "failed", error=f.read()))
      else:
        results.append(PointResult(p, "pending"))
  return [report_lib.result_row(r.point.point_id, r.point.overrides,
                                r.status, summary=r.summary, error=r.error,
                                workdir=r.point.workdir) for r in results]


def write_sweep_report(plan: SweepPlan,
                       results: Sequence[PointResult] | None = None
                       ) -> dict[str, str]:
  """results.csv/.md, pareto.png and report.md in plan.sweep_dir."""
  rows = collect(plan, results)
  return report_lib.write_report(plan.sweep_dir, rows, plan.fields,
                                 metric=plan.metric,
                                 edges=plan.epsilon_buckets)


def summarize(results: Sequence[PointResult]) -> Mapping[str, int]:
  """{status: count} of a sweep's results."""
  counts: dict[str, int] = {}
  for r in results:
    counts[r.status] = counts.get(r.status, 0) + 1
  return counts
