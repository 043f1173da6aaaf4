"""End-to-end tests of the classification jobs (launch/train*.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from trustjax.experiment import classification
from trustjax.experiment import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _config(dp: bool, variant: str = "smoke", **overrides):
  name = "dp_clinc150" if dp else "clinc150"
  return load_config(os.path.join(REPO, "configs", f"{name}.py"), variant,
                     overrides)


def _read_lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read().splitlines()


@pytest.mark.parametrize("dp", [False, True], ids=["nonprivate", "dp"])
def test_smoke_run_writes_workdir(tmp_path, dp):
  workdir = str(tmp_path / "run")
  summary = classification.run(_config(dp), workdir)
  for name in ("config.json", "metrics.jsonl", "summary.json", "loss.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert os.path.isdir(os.path.join(workdir, "checkpoints"))
  assert any(f.startswith("events") for f in _walk(workdir))
  assert 0.0 <= summary["test_accuracy"] <= 1.0
  rows = [json.loads(l) for l in _read_lines(workdir)]
  assert rows[0]["step"] == 4
  if dp:
    eps = [r["epsilon"] for r in rows if "epsilon" in r]
    assert eps == sorted(eps) and 0 < eps[-1] <= 8.0 + 1e-9
    assert summary["epsilon"] <= 8.0 + 1e-9
    assert summary["noise_multiplier"] > 0
    assert "Poisson" in summary["sampling"]


def _walk(root):
  for _, _, files in os.walk(root):
    yield from files


@pytest.mark.parametrize("dp", [False, True], ids=["nonprivate", "dp"])
def test_resume_is_exact(tmp_path, dp):
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  s_full = classification.run(_config(dp), full)
  # Interrupted after 7 steps (checkpoints every 5: resumes from a checkpoint
  # written at the interruption), then restarted.
  assert classification.run(_config(dp), part, stop_after=7) == {
      "stopped_at": 7}
  s_part = classification.run(_config(dp), part)
  assert _read_lines(full) == _read_lines(part)
  for k in ("test_accuracy", "train_accuracy", "epsilon"):
    assert s_full[k] == s_part[k], k


def test_resume_after_kill_between_checkpoints(tmp_path):
  """A kill after step 7 with the last checkpoint at 5 replays steps 6-7."""
  from trustjax import experiment as tjx
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  classification.run(_config(True), full)
  classification.run(_config(True), part, stop_after=7)
  # Simulate the kill: drop the step-7 checkpoint, as if the process died
  # after logging step 8 but before saving.
  ckdir = os.path.join(part, "checkpoints")
  import shutil
  shutil.rmtree(os.path.join(ckdir, "7"))
  with open(os.path.join(part, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 8, "loss": 123.0}) + "\n")
  classification.run(_config(True), part)
  assert _read_lines(full) == _read_lines(part)
  del tjx


def test_refuses_workdir_with_other_config(tmp_path):
  workdir = str(tmp_path / "run")
  classification.run(_config(False), workdir, stop_after=2)
  other = _config(False, **{"optimizer.learning_rate": 0.5})
  with pytest.raises(ValueError, match="learning_rate"):
    classification.run(other, workdir)
  # Existing checkpoints are untouched by the refusal.
  assert os.listdir(os.path.join(workdir, "checkpoints"))
  classification.run(other, workdir, overwrite=True)


@pytest.mark.parametrize("override,match", [
    ({"batch_size": -4}, "batch_size"),
    ({"dp.l2_clip": 0.0}, "l2_clip"),
    ({"dp.noise_multiplier": -1.0}, "noise_multiplier"),
    ({"data.tokenizer": "word"}, "vocabulary"),
    ({"dp.delta": 0.5}, "delta"),
    ({"batch_size": 10 ** 6}, "expected Poisson batch"),
])
def test_bad_dp_config_fails_before_training(tmp_path, override, match):
  with pytest.raises(ValueError, match=match):
    classification.run(_config(True, **override), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints") or not \
      os.listdir(tmp_path / "run" / "checkpoints")


def test_unreachable_epsilon_is_refused(tmp_path):
  # q = 1 (batch = all 600 smoke examples) and 12 steps: even sigma = 500
  # spends more than 1e-3 at delta 1e-6.
  cfg = _config(True, **{"dp.target_epsilon": 1e-3, "batch_size": 600,
                         "dp.delta": 1e-6})
  with pytest.raises(ValueError, match="unreachable"):
    classification.run(cfg, str(tmp_path / "run"))


def test_missing_data_file(tmp_path):
  cfg = _config(False, **{"data.name": "file",
                          "data.path": str(tmp_path / "nope.csv")})
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    classification.run(cfg, str(tmp_path / "run"))


def _launch(*args, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)


def test_cli_unknown_config_key_is_a_clear_error(tmp_path):
  r = _launch("launch.train", "--config=configs/clinc150.py:smoke",
              f"--workdir={tmp_path}/w", "--config.no_such_key=3")
  assert r.returncode != 0
  assert "no_such_key" in r.stderr


def test_cli_negative_batch_size(tmp_path):
  r = _launch("launch.train", "--config=configs/clinc150.py:smoke",
              f"--workdir={tmp_path}/w", "--config.batch_size=-1")
  assert r.returncode != 0
  assert "batch_size" in r.stderr and "Traceback" not in r.stderr


def test_cli_dp_smoke_prints_epsilon(tmp_path):
  r = _launch("launch.train_dp", "--config=configs/dp_clinc150.py:smoke",
              f"--workdir={tmp_path}/w")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "at epsilon" in r.stdout


def test_real_clinc150_nonprivate_reaches_90_percent(tmp_path, real_data_dir):
  """Foundation issue: >= 90% in-scope test accuracy on real CLINC150."""
  cfg = _config(False, "default", **{"data.data_dir": real_data_dir,
                                     "data.allow_synthetic": False})
  summary = classification.run(cfg, str(tmp_path / "run"))
  assert "clinc150" in summary["data"].lower()
  assert summary["num_train_examples"] == 15100
  assert summary["test_in_scope_accuracy"] >= 0.90, summary


def _real_dp_summary(tmp_path, real_data_dir, variant):
  cfg = _config(True, variant, **{"data.data_dir": real_data_dir,
                                  "data.allow_synthetic": False})
  summary = classification.run(cfg, str(tmp_path / "run"))
  assert "clinc150" in summary["data"].lower()
  assert summary["num_train_examples"] == 15100
  assert summary["epsilon"] <= 8.0 and summary["delta"] < 1 / 15100
  return summary


def test_real_clinc150_dp_reaches_80_percent_at_epsilon_8(tmp_path,
                                                          real_data_dir):
  """DP-SGD core issue: >= 80% in-scope test accuracy at total epsilon 8
  with the bag-of-embeddings model (`:dp_words_drop`, seed 0; seeds 0-2
  gave 81.0 / 81.1 / 80.8% in BENCHMARKS.md). The vocabulary is a DP
  release whose cost is inside the epsilon checked here."""
  summary = _real_dp_summary(tmp_path, real_data_dir, "dp_words_drop")
  assert "DP word vocabulary" in summary["tokenizer"]
  assert summary["test_in_scope_accuracy"] >= 0.80, summary


@pytest.mark.slow   # ~100 s (encoding + training): `make check-slow`
def test_real_clinc150_dp_on_public_encoder_features(tmp_path, real_data_dir,
                                                     monkeypatch):
  """`:encoder`: a DP linear probe on frozen all-MiniLM-L6-v2 features at
  epsilon 8 (seeds 0-2 in BENCHMARKS.md). The encoder itself is checked
  against transformers in make test (tests/models/test_models_bert.py)."""
  from trustjax import models
  try:
    models.minilm_path()
  except (ImportError, FileNotFoundError) as e:
    pytest.skip(f"the packaged all-MiniLM-L6-v2 is not installed: {e}")
  monkeypatch.setenv("TRUSTJAX_FEATURE_CACHE", str(tmp_path / "cache"))
  summary = _real_dp_summary(tmp_path, real_data_dir, "encoder")
  assert summary["num_params"] == 384 * 151 + 151
  assert summary["test_in_scope_accuracy"] >= 0.90, summary


def test_adaptive_clipping_job_accounts_the_count_and_resumes(tmp_path):
  """Adaptive clipping: C moves, the noise is split so gradient sum + count
  are one Gaussian of the calibrated sigma, and resume stays exact."""
  import math
  from trustjax import privacy as tjp
  over = {"dp.adaptive_clip": True, "dp.l2_clip": 10.0, "dp.clip_lr": 0.5}
  full = classification.run(_config(True, **over), str(tmp_path / "full"))
  classification.run(_config(True, **over), str(tmp_path / "part"),
                     stop_after=7)
  part = classification.run(_config(True, **over), str(tmp_path / "part"))
  assert _read_lines(tmp_path / "full") == _read_lines(tmp_path / "part")
  assert full == {**full, **{k: part[k] for k in ("final_l2_clip",
                                                  "epsilon")}}
  assert full["final_l2_clip"] < 10.0  # norms are far below C = 10
  sigma, sigma_g = full["noise_multiplier"], full["gradient_noise_multiplier"]
  sigma_b = 32 / 20.0
  assert sigma_g > sigma
  assert math.isclose((sigma_g ** -2 + (2 * sigma_b) ** -2) ** -0.5, sigma,
                      rel_tol=1e-9)
  assert full["epsilon"] <= 8.0 + 1e-9
  # Epsilon is that of Poisson-sampled Gaussian(sigma) over the run (plus
  # the negligible truncation term of the fixed-shape sampler).
  eps = tjp.epsilon(sigma, full["sampling_rate"], full["steps"],
                    full["delta"], accountant="rdp")
  assert eps <= full["epsilon"] <= eps * 1.001
  rows = [json.loads(l) for l in _read_lines(tmp_path / "full")]
  clips = [r["l2_clip"] for r in rows if "l2_clip" in r]
  assert clips[0] > clips[-1]


def test_dp_job_on_eight_devices_equals_one(tmp_path):
  """Data-parallel DP training (batch sharded over 8 simulated devices,
  clipped sums psummed, noise drawn once) gives the run of one device."""
  import jax
  assert jax.device_count() >= 8
  # The same fixed batch shape (divisible by 8) in both runs.
  over = {"dp.max_batch_size": 80}
  one = classification.run(_config(True, **over), str(tmp_path / "one"))
  eight = classification.run(_config(True, **over, **{"dp.num_devices": 8}),
                             str(tmp_path / "eight"))
  rows1 = [json.loads(l) for l in _read_lines(tmp_path / "one")]
  rows8 = [json.loads(l) for l in _read_lines(tmp_path / "eight")]
  assert len(rows1) == len(rows8)
  for a, b in zip(rows1, rows8):
    for k, v in a.items():
      if isinstance(v, float):
        assert b[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
  assert one["epsilon"] == eight["epsilon"]
  with pytest.raises(ValueError, match="num_devices"):
    classification.run(_config(True, **{"dp.num_devices": 64}),
                       str(tmp_path / "bad"))


def test_noise_decay_is_accounted_as_the_composed_schedule(tmp_path):
  """eDP-SGD noise decay: sigma_e = sigma_0 decay^e per epoch; epsilon is
  that of the composed per-epoch events, computed here independently with
  dp_accounting."""
  import dp_accounting
  from trustjax.privacy import accounting
  cfg = _config(True, **{"dp.noise_decay": 0.7, "batch_size": 200})
  s = classification.run(cfg, str(tmp_path / "run"))
  # n = 600, batch 200: epochs of 3 steps; 12 steps = 4 epochs.
  q, s0 = s["sampling_rate"], s["noise_multiplier"]
  assert s["final_noise_multiplier"] == pytest.approx(s0 * 0.7 ** 3)
  events = [dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(s0 * 0.7 ** e)), 3)
            for e in range(4)]
  ref = accounting.epsilon_from_event(
      dp_accounting.ComposedDpEvent(events), s["delta"], accountant="rdp")
  assert ref <= s["epsilon"] <= ref * 1.001
  assert s["epsilon"] <= 8.0 + 1e-9
  # The noise transform reads the same schedule as the accountant.
  priv = classification.resolve_privacy(cfg, 600, 12)
  sched = priv.noise_schedule()
  for count, e in ((0, 0), (2, 0), (3, 1), (11, 3)):
    assert float(sched(np.int32(count))) == pytest.approx(s0 * 0.7 ** e)
  with pytest.raises(ValueError, match="noise_decay"):
    classification.run(_config(True, **{"dp.noise_decay": 1.5}),
                       str(tmp_path / "bad"))


def test_per_layer_private_thresholds_are_accounted(tmp_path):
  """eDP-SGD layer-wise clipping: thresholds from a private quantile of each
  layer's norms, the query composed into epsilon, exact resume."""
  import dp_accounting
  from trustjax.privacy import accounting
  over = {"dp.per_layer": True}
  full = classification.run(_config(True, **over), str(tmp_path / "full"))
  classification.run(_config(True, **over), str(tmp_path / "part"),
                     stop_after=7)
  part = classification.run(_config(True, **over), str(tmp_path / "part"))
  assert _read_lines(tmp_path / "full") == _read_lines(tmp_path / "part")
  assert full["per_layer_clips"] == 5  # embed, hidden (w, b), head (w, b)
  assert full["per_layer_clip_min"] < full["per_layer_clip_max"]
  assert full["l2_clip"] == pytest.approx(part["l2_clip"])
  # epsilon = setup query (sensitivity sqrt(5), std 32/10) + training.
  q, sigma = full["sampling_rate"], full["noise_multiplier"]
  setup = dp_accounting.PoissonSampledDpEvent(
      q, dp_accounting.GaussianDpEvent(3.2 / np.sqrt(5)))
  train = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          q, dp_accounting.GaussianDpEvent(sigma)), full["steps"])
  ref = accounting.epsilon_from_event(
      dp_accounting.ComposedDpEvent([setup, train]), full["delta"],
      accountant="rdp")
  assert ref <= full["epsilon"] <= ref * 1.001 <= 8.0 * 1.001
  with pytest.raises(ValueError, match="exclusive"):
    classification.run(_config(True, **over, **{"dp.adaptive_clip": True}),
                       str(tmp_path / "bad"))
