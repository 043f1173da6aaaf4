"""MetricWriter / read_metrics: format, non-finite values, exact resume."""
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from trustjax.experiment import MetricWriter
from trustjax.experiment import read_metrics


def _run(workdir, steps, resume_step=None):
  w = MetricWriter(workdir, resume_step=resume_step)
  for s in steps:
    w.write(s, {"loss": 1.0 / s, "acc": np.float32(s / 10),
                "n": np.int32(s)})
  w.close()


def test_rows_and_types(tmp_path):
  wd = str(tmp_path)
  with MetricWriter(wd) as w:
    w.write(1, {"loss": jnp.float32(0.25), "n": jnp.int32(3),
                "bf": jnp.bfloat16(1.5), "ok": np.bool_(True), "note": "x"})
    w.write(2, {"loss": float("nan"), "eps": float("inf"), "lo": -math.inf})
  lines = open(os.path.join(wd, "metrics.jsonl")).read().splitlines()
  assert lines[0] == ('{"step": 1, "loss": 0.25, "n": 3, "bf": 1.5, '
                      '"ok": true, "note": "x"}')
  assert lines[1] == ('{"step": 2, "loss": null, "eps": "Infinity", '
                      '"lo": "-Infinity"}')
  rows = read_metrics(wd)
  assert rows[0]["n"] == 3 and isinstance(rows[0]["n"], int)
  assert math.isnan(rows[1]["loss"]) and rows[1]["eps"] == math.inf
  assert rows[1]["lo"] == -math.inf
  assert os.listdir(os.path.join(wd, "tensorboard"))  # event file written
  with MetricWriter(wd, resume_step=2, tensorboard=False) as w:
    with pytest.raises(ValueError, match="scalar"):
      w.write(3, {"v": np.zeros(3)})
    with pytest.raises(ValueError, match="step"):
      w.write(3, {"step": 3})


def test_resume_truncation_gives_identical_file(tmp_path):
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  _run(full, range(1, 11))
  # Killed after logging step 7; last checkpoint was at step 5.
  _run(part, range(1, 8))
  with open(os.path.join(part, "metrics.jsonl"), "a") as f:
    f.write('{"step": 8, "lo')  # torn line from the kill
  _run(part, range(6, 11), resume_step=5)
  a = open(os.path.join(full, "metrics.jsonl"), "rb").read()
  b = open(os.path.join(part, "metrics.jsonl"), "rb").read()
  assert a == b
  assert [r["step"] for r in read_metrics(part)] == list(range(1, 11))


def test_fresh_start_replaces_old_file(tmp_path):
  wd = str(tmp_path)
  _run(wd, range(1, 5))
  _run(wd, range(1, 3))
  assert [r["step"] for r in read_metrics(wd)] == [1, 2]
  assert read_metrics(str(tmp_path / "absent")) == []


def test_inactive_writer_touches_nothing(tmp_path):
  # Processes other than 0 of a multi-host job get an inactive writer.
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
  w = MetricWriter(str(tmp_path), active=False)
  w.write(1, {"loss": 1.0})
  w.flush()
  w.close()
  assert read_metrics(str(tmp_path)) == [{"step": 1, "loss": 2.0}]
  assert not (tmp_path / "tensorboard").exists()
  assert MetricWriter(str(tmp_path / "main"), tensorboard=False).active
