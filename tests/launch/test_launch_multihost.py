"""The DP training and FL launch scripts on 2 processes x 4 CPU devices.

Each test starts a two-process JAX job on this machine (`jax.distributed`,
gloo collectives) through `trustjax.experiment.multihost.spawn_local`, with
one workdir both processes see, and compares the workdir with the same job
run in this process on 8 devices. The DP test also kills the job (as a
pre-emption would: this file run as a script stops after 5 steps, with a
checkpoint) and resumes it with the launch script.
"""

import json
import os
import sys

import jax
import numpy as np
import pytest

from trustjax.experiment import multihost

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STOP_AFTER = 5


def _dp_config():
  sys.path.insert(0, REPO)
  from configs import dp_clinc150
  c = dp_clinc150.get_config("smoke")
  c.data.name = "synthetic"
  c.dp.num_devices = 8
  return c


def _fl_config():
  sys.path.insert(0, REPO)
  from configs import fl_clinc150
  c = fl_clinc150.get_config("smoke")
  c.data.name = "synthetic"
  c.fl.algorithm = "dp_fedavg"
  c.fl.num_devices = 8
  return c


def _spawn(argv, timeout_s=240):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep +
             os.environ.get("PYTHONPATH", ""))
  results = multihost.spawn_local([sys.executable] + argv, 2,
                                  devices_per_process=4, env=env,
                                  timeout_s=timeout_s)
  assert all(r.returncode == 0 for r in results), multihost.format_results(
      results)
  return results


def _rows(workdir):
  from trustjax.experiment import read_metrics
  return read_metrics(workdir)


def _assert_rows_close(got, want):
  assert [r["step"] for r in got] == [r["step"] for r in want]
  for g, w in zip(got, want):
    assert set(g) == set(w), (g, w)
    for k, v in w.items():
      if isinstance(v, float):
        # Cross-process psums add in another order than one process does.
        assert g[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (g["step"], k)
      else:
        assert g[k] == v, (g["step"], k)


def test_train_dp_two_processes_killed_and_resumed(tmp_path):
  from trustjax.experiment import classification
  config = _dp_config()
  ref = classification.run(config, str(tmp_path / "one_process"))
  wd = str(tmp_path / "two_processes")
  # The job is killed after STOP_AFTER steps (its last checkpoint) ...
  _spawn([os.path.abspath(__file__), wd])
  assert 0 < _rows(wd)[-1]["step"] <= STOP_AFTER
  assert not os.path.exists(os.path.join(wd, "summary.json"))
  # ... and resumed by the launch script, which then finishes it.
  results = _spawn(["-m", "launch.train_dp",
                    f"--config={REPO}/configs/dp_clinc150.py:smoke",
                    "--config.data.name=synthetic",
                    "--config.dp.num_devices=8", f"--workdir={wd}"])
  assert f"resuming from step {STOP_AFTER}" in results[0].output
  assert "DP training finished" in results[0].output
  assert "DP training finished" not in results[1].output   # process 0 only
  with open(os.path.join(wd, "summary.json")) as f:
    summary = json.load(f)
  assert summary["epsilon"] == ref["epsilon"]   # the same accounting
  assert summary["steps"] == ref["steps"] == config.num_steps
  assert summary["test_accuracy"] == pytest.approx(ref["test_accuracy"],
                                                   abs=1e-9)
  _assert_rows_close(_rows(wd), _rows(str(tmp_path / "one_process")))


def test_simulate_fl_two_processes(tmp_path):
  from trustjax.experiment import federated_job
  ref = federated_job.run(_fl_config(), str(tmp_path / "one_process"))
  wd = str(tmp_path / "two_processes")
  results = _spawn(["-m", "launch.simulate_fl",
                    f"--config={REPO}/configs/fl_clinc150.py:smoke",
                    "--config.data.name=synthetic",
                    "--config.fl.algorithm=dp_fedavg",
                    "--config.fl.num_devices=8", f"--workdir={wd}"])
  assert "federated simulation finished" in results[0].output
  with open(os.path.join(wd, "summary.json")) as f:
    summary = json.load(f)
  for k, v in ref.items():
    if k == "seconds_this_run":
      continue
    if isinstance(v, float):
      assert summary[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    else:
      assert summary[k] == v, k
  _assert_rows_close(_rows(wd), _rows(str(tmp_path / "one_process")))
  assert os.path.exists(os.path.join(wd, "partition.json"))


def test_multihost_job_needs_every_device(monkeypatch):
  from trustjax.experiment import classification
  from trustjax.experiment import federated_job
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  config = _dp_config()
  config.dp.num_devices = 4
  with pytest.raises(ValueError, match=r"config.dp.num_devices=8"):
    classification.run(config, "/nonexistent/never_written")
  one_device = [_dp_config(), _dp_config()]
  for c in one_device:
    c.dp.num_devices = 1
  with pytest.raises(ValueError, match=r"several processes"):
    classification.run_stacked(one_device, ["/nonexistent/a",
                                            "/nonexistent/b"])
  config = _fl_config()
  config.fl.num_devices = 1
  with pytest.raises(ValueError, match=r"config.fl.num_devices=8"):
    federated_job.run(config, "/nonexistent/never_written")


def _killed_job(workdir: str) -> None:
  multihost.initialize()
  from trustjax.experiment import classification
  out = classification.run(_dp_config(), workdir, stop_after=STOP_AFTER)
  assert out == {"stopped_at": STOP_AFTER}, out


if __name__ == "__main__":
  _killed_job(sys.argv[1])
