"""Empirical epsilon lower bounds: Clopper-Pearson and the DP inequality."""

import math

import numpy as np
import pytest
from scipy import optimize, stats

from trustjax import audit


def cp_by_root_finding(k, n, alpha):
  """Clopper-Pearson ends from their definition: the p at which the binomial
  tail probability equals alpha / 2."""
  lo = 0.0 if k == 0 else optimize.brentq(
      lambda p: stats.binom.sf(k - 1, n, p) - alpha / 2, 1e-12, 1 - 1e-12)
  hi = 1.0 if k == n else optimize.brentq(
      lambda p: stats.binom.cdf(k, n, p) - alpha / 2, 1e-12, 1 - 1e-12)
  return lo, hi


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (1, 1000),
                                 (250, 500)])
def test_clopper_pearson_matches_definition(k, n):
  got = audit.clopper_pearson(k, n, 0.05)
  want = cp_by_root_finding(k, n, 0.05)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10)
  # k = 0: upper end has the closed form 1 - (alpha/2)^(1/n).
  if k == 0:
    assert got[1] == pytest.approx(1 - 0.025 ** (1 / n))


def test_bound_formula_by_hand():
  # 1000 members, 1000 non-members, 10 false positives, 500 false negatives.
  fpr_hi = audit.clopper_pearson(10, 1000)[1]
  fnr_hi = audit.clopper_pearson(500, 1000)[1]
  delta = 1e-5
  want = max(math.log((1 - delta - fnr_hi) / fpr_hi),
             math.log((1 - delta - fpr_hi) / fnr_hi), 0.0)
  got = audit.epsilon_lower_bound(10, 1000, 500, 1000, delta=delta)
  assert got == pytest.approx(want)
  assert 3.0 < got < 4.0    # log(0.47 / 0.018) ~ 3.2
  # Scores giving exactly those counts at threshold 0.5.
  s_in = np.r_[np.ones(500), np.zeros(500)]
  s_out = np.r_[np.ones(10), np.zeros(990)]
  b = audit.empirical_epsilon(s_in, s_out, 0.5, delta=delta)
  assert b.epsilon_lb == pytest.approx(want)
  assert (b.tpr, b.fpr) == (0.5, 0.01)
  # A useless attack proves nothing.
  assert audit.epsilon_lower_bound(500, 1000, 500, 1000) == 0.0


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_randomized_response_bound_is_sound_and_tight(eps):
  """Randomised response is exactly eps-DP: members answer 1 with probability
  e^eps / (1 + e^eps), non-members with 1 / (1 + e^eps). The bound from
  its outputs stays below eps and, with many trials, gets close."""
  rng = np.random.default_rng(int(eps * 10))
  p = math.exp(eps) / (1 + math.exp(eps))
  n = 20000
  s_in = (rng.uniform(size=n) < p).astype(float)
  s_out = (rng.uniform(size=n) < 1 - p).astype(float)
  b = audit.empirical_epsilon(s_in, s_out, 0.5, delta=0.0, alpha=0.05)
  assert b.epsilon_lb <= eps
  assert b.epsilon_lb > 0.85 * eps
  held = audit.empirical_epsilon_heldout(s_in, s_out, seed=0)
  assert held.epsilon_lb <= eps and held.num_in == n - n // 2


def test_best_threshold_picks_separating_point():
  s_in = np.r_[np.full(100, 5.0), np.zeros(100)]
  s_out = np.zeros(200)
  assert audit.best_threshold(s_in, s_out) == 5.0


def test_errors():
  with pytest.raises(ValueError, match="k=11, n=10"):
    audit.clopper_pearson(11, 10)
  with pytest.raises(ValueError, match="alpha"):
    audit.clopper_pearson(1, 10, alpha=1.5)
  with pytest.raises(ValueError, match="delta"):
    audit.empirical_epsilon([1.0], [0.0], 0.5, delta=1.0)
  with pytest.raises(ValueError, match="non-finite"):
    audit.empirical_epsilon([np.nan], [0.0], 0.5)


def test_dp_max_auc():
  for eps in (0.0, 0.5, 1.0, 3.0):
    # closed form for delta = 0: sigmoid(eps)
    assert audit.dp_max_auc(eps) == pytest.approx(
        math.exp(eps) / (1 + math.exp(eps)), abs=1e-6)
  assert audit.dp_max_auc(1.0, 1e-5) > audit.dp_max_auc(1.0)
  assert audit.dp_max_auc(float("inf")) == 1.0
  # Randomised response at eps reaches the bound's AUC with a 0/1 score.
  p = math.exp(1.0) / (1 + math.exp(1.0))
  rr_auc = p * p + (p * (1 - p) + (1 - p) * p) / 2
  assert rr_auc <= audit.dp_max_auc(1.0) + 1e-9
  with pytest.raises(ValueError, match="epsilon"):
    audit.dp_max_auc(-1.0)
