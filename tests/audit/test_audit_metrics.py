"""Attack metrics against hand computations and brute-force references."""

import math

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from trustjax import audit


def brute_auc(a, b):
  """P(a > b) + P(a == b) / 2 by counting every (member, non-member) pair."""
  total = 0.0
  for x in a:
    for y in b:
      total += 1.0 if x > y else 0.5 if x == y else 0.0
  return total / (len(a) * len(b))


def brute_roc(a, b):
  """(fpr, tpr) at every threshold t in the pooled scores, by loops."""
  pts = {(0.0, 0.0)}
  for t in set(list(a) + list(b)):
    tpr = sum(x >= t for x in a) / len(a)
    fpr = sum(y >= t for y in b) / len(b)
    pts.add((fpr, tpr))
  return sorted(pts)


def test_hand_fixture():
  # members 3, 2, 2 ; non-members 2, 1, 0, 0
  a, b = [3.0, 2.0, 2.0], [2.0, 1.0, 0.0, 0.0]
  roc = audit.roc_curve(a, b)
  # thresholds inf, 3, 2, 1, 0
  np.testing.assert_allclose(roc.tpr, [0, 1 / 3, 1, 1, 1])
  np.testing.assert_allclose(roc.fpr, [0, 0, 1 / 4, 2 / 4, 1])
  # pairs: 3 beats all 4; each 2 beats 3 and ties 1 -> 3.5; total 11 / 12
  assert roc.get_auc() == pytest.approx(11 / 12)
  assert roc.get_attacker_advantage() == pytest.approx(3 / 4)
  assert roc.get_balanced_accuracy() == pytest.approx((1 + 3 / 4) / 2)
  # PPV, gamma = 4/3: tpr/(tpr + gamma fpr); at (0, 1/3): 1; both-zero point
  # gives 1/(1 + gamma) = 3/7. Max = 1.
  assert roc.get_ppv() == pytest.approx(1.0)
  assert roc.tpr_at_fpr(0.0) == pytest.approx(1 / 3)
  assert roc.tpr_at_fpr(0.3) == pytest.approx(1.0)
  assert roc.threshold_at_fpr(0.0) == 3.0
  res = audit.evaluate_attack("x", a, b)
  s = res.summary()
  assert s["auc"] == pytest.approx(11 / 12) and s["ntrain"] == 3
  assert s["tpr_at_0.1%_fpr"] == pytest.approx(1 / 3)


def test_ppv_hand_value():
  # members 1, 0 ; non-members 1, 1, 0, 0: best PPV at t=1: tp=1, fp=2 ->
  # 1/3; TF Privacy's formula: tpr=1/2, fpr=1/2, gamma=2: 0.5/(0.5+1)=1/3.
  # The (0,0) point gives 1/(1+2) = 1/3 too; at t=0: 1/(1+2)=1/3.
  roc = audit.roc_curve([1.0, 0.0], [1.0, 1.0, 0.0, 0.0])
  assert roc.get_ppv() == pytest.approx(1 / 3)
  assert roc.test_train_ratio == 2.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=12),
       st.lists(st.integers(-3, 3), min_size=1, max_size=12))
def test_auc_and_roc_match_brute_force(a, b):
  a = np.asarray(a, float)
  b = np.asarray(b, float)
  assert audit.auc_rank(a, b) == pytest.approx(brute_auc(a, b), abs=1e-12)
  roc = audit.roc_curve(a, b)
  got = np.asarray(sorted(zip(roc.fpr.tolist(), roc.tpr.tolist())))
  np.testing.assert_allclose(got, np.asarray(brute_roc(a, b), float))
  # The rank AUC equals the trapezoid area under the ROC.
  area = float(np.sum(np.diff(roc.fpr) * (roc.tpr[1:] + roc.tpr[:-1]) / 2))
  assert roc.get_auc() == pytest.approx(area, abs=1e-12)
  adv = max(abs(t - f) for f, t in brute_roc(a, b))
  assert roc.get_attacker_advantage() == pytest.approx(adv)


def test_continuous_auc_large():
  rng = np.random.default_rng(0)
  a, b = rng.normal(1, 1, 300), rng.normal(0, 1, 400)
  assert audit.auc_rank(a, b) == pytest.approx(brute_auc(a, b), abs=1e-12)
  # Binormal AUC = Phi(1 / sqrt(2)) = 0.760; sample within a few sd.
  assert abs(audit.auc_rank(a, b) - 0.7602) < 0.05


def test_tpr_at_low_fpr_counts():
  # 1000 non-members 0..999, members 995..1004: at FPR <= 0.1% (<= 1 false
  # positive) the threshold is 999 -> members 999..1004 = 6 of 10.
  b = np.arange(1000.0)
  a = np.arange(995.0, 1005.0)
  roc = audit.roc_curve(a, b)
  assert roc.tpr_at_fpr(1e-3) == pytest.approx(0.6)
  assert roc.tpr_at_fpr(1e-2) == pytest.approx(1.0)


def test_nan_and_shape_errors():
  with pytest.raises(ValueError, match="scores_in has 1 non-finite"):
    audit.roc_curve([0.1, math.nan], [0.2])
  with pytest.raises(ValueError, match="scores_out has 1 non-finite"):
    audit.auc_rank([0.1], [math.inf])
  with pytest.raises(ValueError, match="empty"):
    audit.roc_curve([], [1.0])
  with pytest.raises(ValueError, match="1-D"):
    audit.roc_curve(np.zeros((2, 2)), [1.0])
  with pytest.raises(ValueError, match="max_fpr"):
    audit.roc_curve([1.0], [0.0]).tpr_at_fpr(2.0)


def test_plot_roc_writes_png(tmp_path):
  rng = np.random.default_rng(1)
  r1 = audit.evaluate_attack("a", rng.normal(1, 1, 50), rng.normal(0, 1, 60))
  r2 = audit.evaluate_attack("b", rng.normal(0, 1, 50), rng.normal(0, 1, 60))
  path = audit.plot_roc(str(tmp_path / "roc.png"), [r1, r2], title="t")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
