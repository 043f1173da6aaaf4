"""The audit job (launch/audit.py, trustjax.experiment.audit_job) end to end."""

import math
import os
import subprocess
import sys
import time

import pytest

from conftest import data_dir_or_skip
from trustjax.experiment import audit_job as job
from trustjax.experiment import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "audit_clinc150.py")


def _config(variant="smoke", **overrides):
  return load_config(CONFIG, variant, overrides)


def test_smoke_job_writes_report_and_resumes(tmp_path):
  data_dir_or_skip("clinc150", "data_full.json")
  workdir = str(tmp_path / "audit")
  report = job.run(_config(), workdir, log=lambda m: None)
  for name in ("report.md", "report.json", "exposure.png", "extraction.png",
               "non_private/roc.png", "non_private/scores.npz",
               "dp_eps4/roc.png", "dp_eps4/result.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  secs = {s["defence"]: s for s in report["defences"]}
  assert set(secs) == {"non_private", "dp_eps4"}
  dp = secs["dp_eps4"]
  assert 0 < float(dp["accountant_epsilon"]) <= 4.0 + 1e-9
  assert secs["non_private"]["accountant_epsilon"] == "inf"
  attacks = {a["attack"] for a in dp["attacks"]}
  assert attacks == {"threshold[loss]", "lira_online", "lira_online_fixed_var",
                     "lira_offline", "lira_offline_fixed_var"}
  # Pooled over 6 targets: an ordinary row is a trial for each target whose
  # 5 shadows include >= 2 IN and >= 2 OUT (P = 20/32 per target).
  a = dp["attacks"][0]
  trials = a["ntrain"] + a["ntest"]
  assert 0.4 < trials / (6 * (report["num_train_rows"] - 4)) <= 0.8
  reps = [r["repetitions"] for r in dp["canaries"]]
  assert reps == [0, 4]
  assert all(0 <= float(r["exposure_mean"]) <= math.log2(1e3) + 1e-9
             for r in dp["canaries"])
  with open(os.path.join(workdir, "report.md")) as f:
    md = f.read()
  assert "| dp_eps4 | 3.9" in md and "lira_offline_fixed_var" in md
  # A rerun with the same config reuses every finished defence.
  t0 = time.perf_counter()
  again = job.run(_config(), workdir, log=lambda m: None)
  assert time.perf_counter() - t0 < 15
  assert again["defences"] == report["defences"]


def test_bad_config_is_refused(tmp_path):
  with pytest.raises(ValueError, match="num_models=5"):
    job.validate_config(_config(num_models=5))
  with pytest.raises(ValueError, match="epsilons"):
    job.validate_config(_config(epsilons=(0.0,)))
  bad = _config()
  bad.canary.template = "my pin code is {d}{d}{d}{d}"
  data_dir_or_skip("clinc150", "data_full.json")
  with pytest.raises(ValueError, match="splits canary pattern"):
    job.run(bad, str(tmp_path / "bad"), log=lambda m: None)


def test_launch_script_reports_errors_cleanly(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "launch.audit", f"--config={CONFIG}:smoke",
       "--config.num_models=3", f"--workdir={tmp_path / 'w'}"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  assert "error: config.num_models=3 is invalid" in out.stderr


@pytest.mark.slow
def test_small_audit_claims(tmp_path):
  """The issue's claims on real CLINC150 (`:small` at eps in {inf, 1};
  ~25 min on a 2-core CPU; recorded numbers in the helper's report):

  * non-private, over-fitted: the best LiRA has AUC > 0.6 and a higher TPR
    at 0.1% FPR than the global threshold attack;
  * eps = 1: no attack beats what (eps, delta)-DP permits (AUC <= the DP
    bound, empirical epsilon lower bound <= the accountant's epsilon). The
    issue's heuristic "AUC <= 0.55" is NOT asserted: the loss threshold
    attack measured 0.56 on this near-chance DP model (see report);
  * canaries: repeated >= 4 times they are exposed and extracted without DP;
    with eps = 1, canaries repeated <= 4 times are at chance (group privacy
    does not cover 16 or 64 copies, which stay exposed).
  """
  data_dir_or_skip("clinc150", "data_full.json")
  from trustjax.audit import dp_max_auc
  report = job.run(_config("small", epsilons=(float("inf"), 1.0)),
                   str(tmp_path / "small"), log=print)
  secs = {s["defence"]: s for s in report["defences"]}
  np_, dp = secs["non_private"], secs["dp_eps1"]
  att = {a["attack"]: a for a in np_["attacks"]}
  lira = [a for n, a in att.items() if n.startswith("lira")]
  assert max(a["auc"] for a in lira) > 0.6
  assert max(a["tpr_at_0.1%_fpr"] for a in lira) > att["threshold[loss]"][
      "tpr_at_0.1%_fpr"]
  eps = float(dp["accountant_epsilon"])
  bound = dp_max_auc(eps, dp["delta"])
  assert all(a["auc"] <= bound for a in dp["attacks"])
  assert dp["empirical_epsilon"]["epsilon_lb"] <= eps
  can_np = {r["repetitions"]: r for r in np_["canaries"]}
  can_dp = {r["repetitions"]: r for r in dp["canaries"]}
  for r in (4, 16):
    assert can_np[r]["exposure_mean"] > 10
    assert can_np[r]["extraction_rate"] > 0.3
  for r in (0, 1, 4):
    assert can_dp[r]["exposure_mean"] < 4
    assert can_dp[r]["extraction_rate"] == 0.0
