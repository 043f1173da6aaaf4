"""Sweep runner: checks before running, skip/resume, failures, stacking."""

import json
import os
import shlex

import pytest
from ml_collections import config_dict

from trustjax.experiment import classification
from trustjax.experiment import prepare_workdir
from trustjax.sweeps import plan_sweep
from trustjax.sweeps import point_command
from trustjax.sweeps import run_sweep
from trustjax.sweeps import write_commands
from trustjax.sweeps import write_sweep_report
from trustjax.sweeps import runner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _sweep(grid=None, zip_=None, mode="processes", overrides=None, **kw):
  c = config_dict.ConfigDict()
  c.base = "configs/dp_clinc150.py:smoke"
  c.overrides = config_dict.ConfigDict(overrides or {})
  c.grid = config_dict.ConfigDict(grid or {})
  c.zip = config_dict.ConfigDict(zip_ or {})
  c.random = config_dict.ConfigDict(dict(num_points=0, seed=0,
                                         distributions={}))
  c.mode = mode
  c.max_parallel = 2
  c.stack_size = 0
  c.sweep_dir = ""
  for k, v in kw.items():
    c[k] = v
  return c


def _plan(tmp_path, sweep):
  return plan_sweep(sweep, str(tmp_path / "sweep"), cwd=REPO)


@pytest.mark.parametrize("sweep,match", [
    (_sweep({"dp": {"no_such_field": (1.0, 2.0)}}),
     "'dp.no_such_field' is not in the base config"),
    (_sweep({"optimizer": {"learning_rat": (0.1,)}}),
     "did you mean optimizer.learning_rate"),
    (_sweep({"seed": ()}), "'seed' has no values"),
    (_sweep(), "sweep is empty"),
    (_sweep(zip_={"seed": (0, 1), "dp": {"l2_clip": (1.0, 2.0, 3.0)}}),
     "same length"),
    (_sweep({"model": {"d_embed": (16, 32)}}, mode="stacked"),
     "mode=stacked: .*model.d_embed"),
    (_sweep({"dp": {"l2_clip": (1.0, 0.0)}}), "l2_clip"),
    (_sweep({"batch_size": ("big",)}), "'batch_size' cannot take the value"),
    (_sweep({"seed": (0, 1)}, overrides={"dp": {"nosuch": 1}}),
     "overrides field 'dp.nosuch' is not in the base config"),
    (_sweep({"seed": (0, 1)}, mode="parallel"), "mode='parallel'"),
    (_sweep({"seed": (0, 1)}, max_parallel=0), "max_parallel"),
    (_sweep({"seed": (0, 1)}, base="configs/nope.py"), "not found"),
])
def test_bad_sweeps_fail_before_anything_runs(tmp_path, sweep, match):
  with pytest.raises(ValueError, match=match):
    _plan(tmp_path, sweep)
  assert not os.path.exists(tmp_path / "sweep")


def test_values_a_flag_cannot_carry_are_refused_for_processes(tmp_path):
  sweep = _sweep({"seed": (0, 1)}, overrides={"dp": {"delta": None}})
  with pytest.raises(ValueError, match="cannot be passed as a --config"):
    _plan(tmp_path, sweep)
  sweep.mode = "stacked"   # in-process: any value is fine
  assert len(_plan(tmp_path, sweep).points) == 2


def test_point_workdir_with_another_config_is_refused(tmp_path):
  plan = _plan(tmp_path, _sweep({"seed": (0, 1)}))
  other = plan.points[1].config.copy_and_resolve_references()
  other.num_steps = 99
  prepare_workdir(plan.points[1].workdir, other)
  with pytest.raises(ValueError, match="num_steps: 99 -> 12"):
    _plan(tmp_path, _sweep({"seed": (0, 1)}))


def test_commands_are_self_contained_and_match_the_plan(tmp_path):
  sweep = _sweep({"optimizer": {"learning_rate": (0.01, 0.1)}},
                 zip_={"seed": (3, 4), "dp": {"l2_clip": (0.5, 2.0)}},
                 overrides={"batch_size": 40}, max_parallel=3)
  plan = _plan(tmp_path, sweep)
  cmds, script = write_commands(plan)
  lines = open(cmds).read().splitlines()
  assert len(lines) == len(plan.points) == 4
  text = open(script).read()
  assert "#SBATCH --array=1-4%3" in text
  assert 'sed -n "${SLURM_ARRAY_TASK_ID}p"' in text
  for line, point in zip(lines, plan.points):
    assert line.startswith(f"cd {shlex.quote(REPO)} && {{ test -f ")
    argv = point_command(plan, point)
    assert shlex.join(argv) in line
    assert argv[1:3] == ["-m", "launch.train_dp"]
    assert f"--workdir={point.workdir}" in argv
    # The flags carry every override (that the launcher parses them back to
    # the planned config is checked after each run: `_check_finished`).
    for field, value in {**plan.base_overrides, **point.overrides}.items():
      assert f"--config.{field}={value!r}" in argv
  assert {p.point_id.split("-")[0] for p in plan.points} == {
      "l2_clip=0.5,learning_rate=0.01,seed=3",
      "l2_clip=2,learning_rate=0.01,seed=4",
      "l2_clip=0.5,learning_rate=0.1,seed=3",
      "l2_clip=2,learning_rate=0.1,seed=4"}


def _mtimes(workdir):
  out = {}
  for root, _, files in os.walk(workdir):
    for f in files:
      p = os.path.join(root, f)
      out[p] = os.stat(p).st_mtime_ns
  return out


def test_interrupted_sweep_resumes_skips_finished_and_isolates_failure(
    tmp_path):
  # Full-batch (q = 1) with delta 1e-6: epsilon 1e-3 is unreachable in 12
  # steps, so that point fails at run time (not at planning).
  sweep = _sweep({"dp": {"target_epsilon": (8.0, 4.0, 1e-3)}},
                 overrides={"batch_size": 600, "dp": {"delta": 1e-6}})
  plan = _plan(tmp_path, sweep)
  done, interrupted, failing = plan.points
  assert [p.state for p in plan.points] == ["new"] * 3
  # An earlier sweep finished one point and was killed during another.
  classification.run(done.config, done.workdir)
  classification.run(interrupted.config, interrupted.workdir, stop_after=7)
  before = _mtimes(done.workdir)
  plan = _plan(tmp_path, sweep)
  assert [p.state for p in plan.points] == ["finished", "interrupted", "new"]
  logs = []
  results = run_sweep(plan, log=logs.append)
  assert [r.status for r in results] == ["skipped", "finished", "failed"]
  assert "1 already finished (skipped), 2 to run" in logs[0]
  assert _mtimes(done.workdir) == before        # not touched at all
  log = open(os.path.join(interrupted.workdir, "log.txt")).read()
  assert "resuming from step 7" in log
  with open(os.path.join(interrupted.workdir, "metrics.jsonl")) as f:
    steps = [json.loads(l)["step"] for l in f]
  assert steps == [4, 8, 12, 12]                # no step logged twice
  assert results[1].summary["epsilon"] <= 4.0 + 1e-9
  err = open(os.path.join(failing.workdir, "error.txt")).read()
  assert "unreachable" in err and results[2].error == err.rstrip()
  paths = write_sweep_report(plan, results)
  with open(paths["csv"]) as f:
    text = f.read()
  assert "unreachable" in text.splitlines()[3]
  assert "skipped" in text.splitlines()[1]
  # A new plan sees the failure; the finished points stay finished.
  assert [p.state for p in _plan(tmp_path, sweep).points] == [
      "finished", "finished", "failed"]
  # Without results (e.g. after a SLURM array) the disk state decides.
  rows = runner.collect(_plan(tmp_path, sweep))
  assert [r["status"] for r in rows] == ["finished", "finished", "failed"]
  assert "unreachable" in rows[2]["error"]


def test_stacked_mode_trains_pending_points_in_one_program(tmp_path):
  sweep = _sweep({"seed": (0, 1, 2)}, mode="stacked")
  plan = _plan(tmp_path, sweep)
  first = plan.points[0]
  # A point an earlier sweep finished (what "finished" means on disk).
  prepare_workdir(first.workdir, first.config)
  with open(os.path.join(first.workdir, "summary.json"), "w") as f:
    json.dump({"test_accuracy": 0.5, "epsilon": 1.0}, f)
  before = _mtimes(first.workdir)
  calls = []

  def stacked_fn(configs, workdirs):
    calls.append(list(workdirs))
    return classification.run_stacked(configs, workdirs)

  results = run_sweep(_plan(tmp_path, sweep), stacked_fn=stacked_fn,
                      log=lambda s: None)
  assert [r.status for r in results] == ["skipped", "finished", "finished"]
  assert calls == [[p.workdir for p in plan.points[1:]]]
  assert _mtimes(first.workdir) == before
  for r, p in zip(results[1:], plan.points[1:]):
    with open(os.path.join(p.workdir, "summary.json")) as f:
      assert json.load(f) == r.summary
    assert 0.0 < r.summary["epsilon"] <= 8.0 + 1e-9


def test_a_failing_stacked_chunk_does_not_stop_the_others(tmp_path):
  sweep = _sweep({"seed": (0, 1, 2, 3)}, mode="stacked", stack_size=2)
  plan = _plan(tmp_path, sweep)
  chunks = []

  def stacked_fn(configs, workdirs):
    chunks.append(len(configs))
    if len(chunks) == 1:
      raise RuntimeError("device lost")
    for c, w in zip(configs, workdirs):   # stand-in for a real run
      prepare_workdir(w, c)
      with open(os.path.join(w, "summary.json"), "w") as f:
        json.dump({"test_accuracy": 0.5, "epsilon": 1.0}, f)

  results = run_sweep(plan, stacked_fn=stacked_fn, log=lambda s: None)
  assert chunks == [2, 2]
  assert [r.status for r in results] == ["failed", "failed", "finished",
                                         "finished"]
  for p in plan.points[:2]:
    err = open(os.path.join(p.workdir, "error.txt")).read()
    assert "RuntimeError: device lost" in err
  # Retried on the next run: the error file goes when the point restarts.
  results = run_sweep(_plan(tmp_path, sweep), stacked_fn=stacked_fn,
                      log=lambda s: None)
  assert [r.status for r in results] == ["finished", "finished", "skipped",
                                         "skipped"]
  assert not os.path.exists(os.path.join(plan.points[0].workdir,
                                         "error.txt"))


def test_auto_mode_stacks_groups_that_share_shapes(tmp_path):
  sweep = _sweep({"seed": (0, 1), "model": {"d_embed": (16, 24)}},
                 zip_={}, mode="auto")
  plan = _plan(tmp_path, sweep)
  plan.points.append(runner.PlannedPoint(
      "lonely", {}, plan.points[0].config.copy_and_resolve_references(),
      str(tmp_path / "lonely"), "new"))
  plan.points[-1].config.model.d_hidden = 8
  chunks, singles = runner._split(plan, plan.pending())
  # Two d_embed groups of two seeds each; the odd one out runs alone.
  assert sorted(len(c) for c in chunks) == [2, 2]
  for c in chunks:
    assert len({p.config.model.d_embed for p in c}) == 1
  assert [p.point_id for p in singles] == ["lonely"]


def test_non_private_base_runs_launch_train(tmp_path):
  plan = _plan(tmp_path, _sweep({"seed": (0, 1)},
                                base="configs/clinc150.py:smoke"))
  argv = point_command(plan, plan.points[0])
  assert argv[1:4] == ["-m", "launch.train",
                       f"--config={REPO}/configs/clinc150.py:smoke"]


def test_stacked_chunks_group_points_by_resume_step(tmp_path):
  sweep = _sweep({"seed": (0, 1, 2, 3, 4)}, mode="stacked", stack_size=2)
  plan = _plan(tmp_path, sweep)
  # Points 1 and 3 were interrupted after a checkpoint at step 5.
  for p in (plan.points[1], plan.points[3]):
    prepare_workdir(p.workdir, p.config)
    os.makedirs(os.path.join(p.workdir, "checkpoints", "5"))
  plan = _plan(tmp_path, sweep)
  chunks, singles = runner._split(plan, plan.pending())
  ids = [[plan.points.index(p) for p in c] for c in chunks]
  assert sorted(ids) == [[0, 2], [1, 3], [4]] and singles == []
