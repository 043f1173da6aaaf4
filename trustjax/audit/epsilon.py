"""Empirical lower bounds on epsilon from a membership attack's errors.

An (epsilon, delta)-DP training algorithm forces every membership test to
satisfy FPR + e^eps FNR >= 1 - delta and FNR + e^eps FPR >= 1 - delta
(Kairouz et al. 2015; used for auditing by Jagielski, Ullman, Oprea,
"Auditing Differentially Private Machine Learning: How Private is Private
SGD?", NeurIPS 2020, and Nasr, Song, Thakurta, Papernot, Carlini,
"Adversary Instantiation: Lower Bounds for Differentially Private Machine
Learning", IEEE S&P 2021). With upper confidence bounds FPR_hi, FNR_hi
(Clopper-Pearson) on the attack's error rates at one threshold,

  eps_lb = max(log((1 - delta - FNR_hi) / FPR_hi),
               log((1 - delta - FPR_hi) / FNR_hi), 0)

holds with probability >= 1 - alpha over the audit's randomness, IF the
threshold was fixed before looking at the scores it is evaluated on. Each
one-sided Clopper-Pearson bound is taken at level alpha / 2 (Bonferroni), so
both hold jointly with probability >= 1 - alpha. `empirical_epsilon_heldout`
picks the threshold on one half of the examples and bounds on the other.

Caveat (stated in reports): the bound speaks about the membership of the
audited examples; in a one-run audit with many examples (Steinke, Nasr,
Jagielski 2023) the trials are not independent training runs, so the bound
is a heuristic measure of leakage, not a proof of a DP violation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from trustjax.audit import metrics as _metrics


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
  """Two-sided (1 - alpha) Clopper-Pearson interval for a binomial rate k/n.

  Lower = Beta(alpha/2; k, n-k+1) quantile (0 when k = 0), upper =
  Beta(1-alpha/2; k+1, n-k) quantile (1 when k = n). Each end is a valid
  one-sided bound at level alpha / 2.
  """
  if n < 1 or not 0 <= k <= n:
    raise ValueError(f"clopper_pearson: need 0 <= k <= n and n >= 1; got "
                     f"k={k}, n={n}")
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha={alpha} must be in (0, 1)")
  lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
  hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
  return lo, hi


@dataclasses.dataclass
class EpsilonBound:
  """An empirical epsilon lower bound and the counts it came from."""
  epsilon_lb: float
  threshold: float
  tpr: float
  fpr: float
  fpr_hi: float
  fnr_hi: float
  num_in: int
  num_out: int
  delta: float
  alpha: float

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def epsilon_lower_bound(fp: int, n_out: int, fn: int, n_in: int, *,
                        delta: float = 0.0, alpha: float = 0.05) -> float:
  """eps_lb from false-positive and false-negative counts (module formula)."""
  if not 0.0 <= delta < 1.0:
    raise ValueError(f"delta={delta} must be in [0, 1)")
  fpr_hi = clopper_pearson(fp, n_out, alpha)[1]
  fnr_hi = clopper_pearson(fn, n_in, alpha)[1]
  return _bound(fpr_hi, fnr_hi, delta)


def _bound(fpr_hi, fnr_hi, delta):
  best = 0.0
  for num, den in ((1 - delta - fnr_hi, fpr_hi), (1 - delta - fpr_hi, fnr_hi)):
    if num > 0 and den > 0:
      best = max(best, math.log(num / den))
  return best


def empirical_epsilon(scores_in, scores_out, threshold: float, *,
                      delta: float = 0.0,
                      alpha: float = 0.05) -> EpsilonBound:
  """Bound for the fixed test "member iff score >= threshold".

  Args:
    scores_in: f[m] membership scores of members. scores_out: f[n] of
      non-members. threshold: chosen independently of these scores.
    delta: the delta of the (epsilon, delta) claim being audited.
    alpha: 1 - confidence of the joint Clopper-Pearson bounds.
  """
  a = _metrics.check_scores("scores_in", scores_in)
  b = _metrics.check_scores("scores_out", scores_out)
  tp = int(np.sum(a >= threshold))
  fp = int(np.sum(b >= threshold))
  fpr_hi = clopper_pearson(fp, b.size, alpha)[1]
  fnr_hi = clopper_pearson(a.size - tp, a.size, alpha)[1]
  if not 0.0 <= delta < 1.0:
    raise ValueError(f"delta={delta} must be in [0, 1)")
  return EpsilonBound(epsilon_lb=_bound(fpr_hi, fnr_hi, delta),
                      threshold=float(threshold), tpr=tp / a.size,
                      fpr=fp / b.size, fpr_hi=fpr_hi, fnr_hi=fnr_hi,
                      num_in=a.size, num_out=b.size, delta=delta, alpha=alpha)


def best_threshold(scores_in, scores_out, *, delta: float = 0.0,
                   alpha: float = 0.05) -> float:
  """The threshold whose bound on THESE scores is largest (selection only:
  a bound computed on the same scores is optimistic)."""
  roc = _metrics.roc_curve(scores_in, scores_out)
  m, n = np.size(scores_in), np.size(scores_out)
  fp = np.rint(roc.fpr[1:] * n)
  fn = np.rint((1 - roc.tpr[1:]) * m)
  fpr_hi = _cp_upper(fp, n, alpha)
  fnr_hi = _cp_upper(fn, m, alpha)
  with np.errstate(divide="ignore", invalid="ignore"):
    e1 = np.log(np.maximum(1 - delta - fnr_hi, 0) / fpr_hi)
    e2 = np.log(np.maximum(1 - delta - fpr_hi, 0) / fnr_hi)
  e = np.nan_to_num(np.maximum(e1, e2), nan=-np.inf)
  return float(roc.thresholds[1:][int(np.argmax(e))])


def _cp_upper(k, n, alpha):
  """Vectorised upper Clopper-Pearson bound (as in `clopper_pearson`)."""
  k = np.asarray(k, np.float64)
  hi = stats.beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1e-300))
  return np.where(k >= n, 1.0, hi)


def empirical_epsilon_heldout(scores_in, scores_out, *, delta: float = 0.0,
                              alpha: float = 0.05,
                              seed: int = 0) -> EpsilonBound:
  """Threshold chosen on a random half of the examples (each side), bound
  computed on the other half: a valid (1 - alpha) bound for that test."""
  a = _metrics.check_scores("scores_in", scores_in)
  b = _metrics.check_scores("scores_out", scores_out)
  if a.size < 2 or b.size < 2:
    raise ValueError(f"need >= 2 members and >= 2 non-members to split; got "
                     f"{a.size} and {b.size}")
  rng = np.random.default_rng(seed)
  pa, pb = rng.permutation(a.size), rng.permutation(b.size)
  ha, hb = a.size // 2, b.size // 2
  t = best_threshold(a[pa[:ha]], b[pb[:hb]], delta=delta, alpha=alpha)
  return empirical_epsilon(a[pa[ha:]], b[pb[hb:]], t, delta=delta,
                           alpha=alpha)


def dp_max_auc(epsilon: float, delta: float = 0.0,
               num_points: int = 200_001) -> float:
  """Largest AUC any membership test can reach against an (epsilon, delta)-DP
  mechanism: the area under TPR <= min(1, e^eps FPR + delta,
  1 - e^-eps (1 - delta - FPR)) (trapezoid rule on `num_points` FPRs).
  For delta = 0 it equals e^eps / (1 + e^eps)."""
  if not epsilon >= 0 or not 0.0 <= delta < 1.0:
    raise ValueError(f"need epsilon >= 0 and 0 <= delta < 1; got "
                     f"epsilon={epsilon}, delta={delta}")
  if math.isinf(epsilon):
    return 1.0
  x = np.linspace(0.0, 1.0, num_points)
  f = np.minimum.reduce([np.ones_like(x), math.exp(epsilon) * x + delta,
                         1.0 - math.exp(-epsilon) * (1.0 - delta - x)])
  f = np.clip(f, 0.0, 1.0)
  return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(x)))
