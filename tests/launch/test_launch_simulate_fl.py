"""The federated simulation job: smoke runs, exact resume, bad config."""

import os

import pytest

from trustjax.experiment import federated_job
from trustjax.experiment import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _config(variant="smoke", **overrides):
  cfg = load_config(os.path.join(REPO, "configs", "fl_clinc150.py"), variant)
  if variant == "dp":
    from trustjax.experiment.classification import apply_smoke
    apply_smoke(cfg)
    cfg.fl.num_clients, cfg.fl.heldout_clients = 40, 8
    cfg.fl.cohort_size, cfg.fl.rounds, cfg.fl.eval_every = 8, 4, 2
  for k, v in overrides.items():
    node = cfg
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return cfg


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read().splitlines()


@pytest.mark.parametrize("algorithm", ["fedavg", "scaffold"])
def test_resume_is_exact(tmp_path, algorithm):
  cfg = _config(**{"fl.algorithm": algorithm})
  full = federated_job.run(cfg, str(tmp_path / "full"))
  assert federated_job.run(cfg, str(tmp_path / "part"), stop_after=2) == {
      "stopped_at": 2}
  part = federated_job.run(cfg, str(tmp_path / "part"))
  assert _lines(tmp_path / "full") == _lines(tmp_path / "part")
  assert full["test_accuracy"] == part["test_accuracy"]
  assert full["heldout_clients_evaluated"] > 0
  assert os.path.exists(tmp_path / "full" / "partition.png")


def test_dp_fedavg_reports_epsilon(tmp_path):
  import json
  federated_job.run(_config("dp"), str(tmp_path / "dp"))
  rows = [json.loads(l) for l in _lines(tmp_path / "dp")]
  eps = [r["epsilon"] for r in rows]
  assert eps == sorted(eps) and eps[-1] > 0


@pytest.mark.parametrize("key,value", [("fl.cohort_size", 1000),
                                       ("fl.algorithm", "fedsgd"),
                                       ("fl.heldout_clients", 40)])
def test_bad_config(tmp_path, key, value):
  with pytest.raises(ValueError, match=key.split(".")[1]):
    federated_job.run(_config(**{key: value}), str(tmp_path / "w"))


@pytest.mark.parametrize("policy", ["fifo", "reservoir"])
def test_continual_setting_resumes_exactly(tmp_path, policy):
  cfg = _config(**{"fl.continual_rounds": 3, "fl.cap": 5,
                   "fl.policy": policy, "fl.selection": "activity"})
  full = federated_job.run(cfg, str(tmp_path / "full"))
  federated_job.run(cfg, str(tmp_path / "part"), stop_after=2)
  part = federated_job.run(cfg, str(tmp_path / "part"))
  assert _lines(tmp_path / "full") == _lines(tmp_path / "part")
  assert full["test_accuracy"] == part["test_accuracy"]
  import json
  held = [json.loads(l)["held_examples"] for l in _lines(tmp_path / "full")]
  assert max(held) <= 5 * 32  # cap x training clients
