"""The CLINC150 FL job with `fl.row_sparse` gives the dense job's run."""

import json
import os

import numpy as np
import pytest

from trustjax.experiment import federated_job
from trustjax.experiment import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_row_sparse_job_equals_dense(tmp_path):
  out = {}
  for sparse in (False, True):
    cfg = load_config(os.path.join(REPO, "configs", "fl_clinc150.py"),
                      "smoke")
    cfg.fl.row_sparse = sparse
    wd = str(tmp_path / str(sparse))
    out[sparse] = (federated_job.run(cfg, wd), _rows(wd))
  (dense, rows_d), (sparse, rows_s) = out[False], out[True]
  assert [r["step"] for r in rows_d] == [r["step"] for r in rows_s]
  np.testing.assert_allclose([r["client_loss"] for r in rows_s],
                             [r["client_loss"] for r in rows_d], rtol=1e-4)
  assert abs(sparse["test_accuracy"] - dense["test_accuracy"]) <= 0.005


def test_row_sparse_refused_for_the_tied_char_model(tmp_path):
  cfg = load_config(os.path.join(REPO, "configs", "fl_shakespeare.py"),
                    "smoke")
  cfg.fl.row_sparse = True
  with pytest.raises(ValueError, match="row_sparse"):
    federated_job.run(cfg, str(tmp_path / "w"))
