"""Learning-rate schedules, the parameter EMA and word dropout in the DP job."""
import json
import math
import os

import jax
import numpy as np
import pytest

from trustjax.experiment import classification
from trustjax.experiment import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _config(**overrides):
  return load_config(os.path.join(REPO, "configs", "dp_clinc150.py"),
                     "smoke", overrides)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_lr_schedule_matches_formula(schedule):
  cfg = _config(**{"optimizer.schedule": schedule,
                   "optimizer.warmup_steps": 3,
                   "optimizer.final_lr_fraction": 0.1})
  steps, lr = 20, 0.5
  rate = classification.lr_schedule(cfg, lr, steps)
  for t in range(steps + 2):
    warm = min(1.0, (t + 1) / 3)
    frac = min(1.0, max(0.0, (t - 3) / (steps - 1 - 3)))
    decay = {"constant": 1.0,
             "cosine": 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)),
             "linear": 1 - 0.9 * frac}[schedule]
    assert float(rate(t)) == pytest.approx(lr * warm * decay, rel=1e-5)
  assert float(rate(steps - 1)) == pytest.approx(
      lr * (1.0 if schedule == "constant" else 0.1), rel=1e-5)


def test_constant_schedule_is_a_plain_float():
  assert classification.lr_schedule(_config(), 0.02, None) == 0.02


def _read(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read().splitlines()


@pytest.mark.parametrize("step", ["hp_step", "adaptive_clip"])
def test_resume_with_ema_and_schedule_is_exact(tmp_path, step):
  """The EMA and its count are checkpointed; the schedule depends only on
  the step count. Both DP steps (`_hp_step`, and `_make_step` through
  adaptive clipping)."""
  _assert_resume_exact(tmp_path, {
      "optimizer.ema_decay": 0.9, "optimizer.schedule": "cosine",
      "optimizer.warmup_steps": 2,
      "dp.adaptive_clip": step == "adaptive_clip"})


def _assert_resume_exact(tmp_path, over):
  """A run stopped after 7 steps and resumed equals the uninterrupted run;
  returns the uninterrupted run's (summary, workdir)."""
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  s_full = classification.run(_config(**over), full)
  assert classification.run(_config(**over), part, stop_after=7) == {
      "stopped_at": 7}
  s_part = classification.run(_config(**over), part)
  assert _read(full) == _read(part)
  for k in ("test_accuracy", "val_accuracy", "train_accuracy", "epsilon"):
    assert s_full[k] == s_part[k], k
  return s_full, full


def test_ema_is_what_is_evaluated_and_does_not_change_training(tmp_path):
  """Same training with and without the EMA (it is post-processing); the
  run returns and evaluates the EMA, not the last iterate."""
  plain = _config()
  ema = _config(**{"optimizer.ema_decay": 0.5, "optimizer.ema_warmup": False})
  (s_plain,), (p_plain,) = classification.run_stacked(
      [plain], [str(tmp_path / "plain")], return_params=True)
  (s_ema,), (p_ema,) = classification.run_stacked(
      [ema], [str(tmp_path / "ema")], return_params=True)
  losses = lambda w: [json.loads(l).get("loss") for l in _read(w)]
  assert losses(str(tmp_path / "plain")) == losses(str(tmp_path / "ema"))
  gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(p_plain), jax.tree.leaves(p_ema)))
  assert gap > 1e-6
  data = classification.load_data(ema)
  _, _, predict = classification._build(ema, data)
  res = classification.evaluate(predict, p_ema, data.arrays["test"],
                                ema.eval_batch_size, data.oos_label)
  assert res["accuracy"] == s_ema["test_accuracy"]
  assert s_plain["epsilon"] == s_ema["epsilon"]


def test_word_dropout_resumes_exactly_and_costs_no_privacy(tmp_path):
  """Word dropout draws from the step's key, so a killed and resumed run
  repeats the uninterrupted one; it changes training, not epsilon."""
  s_full, full = _assert_resume_exact(tmp_path, {"model.word_dropout": 0.3})
  plain = str(tmp_path / "plain")
  s_plain = classification.run(_config(), plain)
  losses = lambda w: [json.loads(l).get("loss") for l in _read(w)]
  assert losses(plain) != losses(full)
  assert s_plain["epsilon"] == s_full["epsilon"]


def test_validation_names_bad_fields():
  for key, value in (("optimizer.schedule", "step"),
                     ("optimizer.ema_decay", 1.0),
                     ("optimizer.final_lr_fraction", 2.0),
                     ("optimizer.warmup_steps", -1),
                     ("model.word_dropout", 1.0)):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
      classification.validate_config(_config(**{key: value}))


def test_word_dropout_is_refused_outside_the_bag_model():
  cfg = _config(**{"model.name": "transformer", "model.word_dropout": 0.2})
  with pytest.raises(ValueError, match=r"model\.word_dropout.*bag"):
    classification.validate_config(cfg)


def test_dp_words_ema_variant_is_valid():
  cfg = load_config(os.path.join(REPO, "configs", "dp_clinc150.py"),
                    "dp_words_ema")
  classification.validate_config(cfg)
  assert (cfg.batch_size, cfg.num_epochs, cfg.optimizer.ema_decay) == (
      6144, 90.0, 0.999)


def test_dp_words_drop_variant_is_dp_words_ema_with_dropout():
  load = lambda v: load_config(os.path.join(REPO, "configs", "dp_clinc150.py"),
                               v)
  wd, ema = load("dp_words_drop"), load("dp_words_ema")
  classification.validate_config(wd)
  assert (wd.model.word_dropout, wd.model.dropout) == (0.2, 0.2)
  wd.model.word_dropout = wd.model.dropout = 0.0
  assert wd.to_dict() == ema.to_dict()
