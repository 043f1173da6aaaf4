"""Membership-inference attack metrics: ROC, AUC, TPR at low FPR, advantage,
PPV, balanced accuracy.

Names follow TensorFlow Privacy's membership-inference module
(`tensorflow_privacy/privacy/privacy_tests/membership_inference_attack/
data_structures.py`: `RocCurve` with `get_auc`, `get_attacker_advantage`,
`get_ppv`, `test_train_ratio`) so numbers compare. Differences, all stated:

  * Everything is numpy only (no sklearn): the ROC is computed with one sort,
    AUC by the rank (Mann-Whitney) formula, ties counted 1/2.
  * `tpr_at_fpr(f)` is the largest TPR among thresholds whose FPR is <= f,
    as in Carlini et al. (S&P 2022, "Membership Inference Attacks From First
    Principles"), who report TPR at 0.1% and 1% FPR on log-log ROC curves.

Convention: a higher membership score means "more likely a member";
members are the training set ("train" / IN), non-members the held-out set
("test" / OUT). A threshold t predicts member when score >= t.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

# TF Privacy's tolerance below which TPR and FPR are treated as zero in PPV.
_ABSOLUTE_TOLERANCE = 1e-3


def check_scores(name: str, scores) -> np.ndarray:
  """1-D float64 copy of `scores`; ValueError on NaN/Inf or an empty array.

  Infinite scores are refused as well: they usually mean a probability of
  exactly 0 or 1 went through a log, and would tie arbitrarily.
  """
  a = np.asarray(scores, np.float64)
  if a.ndim != 1:
    raise ValueError(f"{name} must be a 1-D array of per-example scores; got "
                     f"shape {a.shape}")
  if a.size == 0:
    raise ValueError(f"{name} is empty: need at least one example")
  bad = ~np.isfinite(a)
  if bad.any():
    idx = np.flatnonzero(bad)
    raise ValueError(
        f"{name} has {idx.size} non-finite values (NaN/Inf) at indices "
        f"{idx[:10].tolist()}{' ...' if idx.size > 10 else ''} (first value "
        f"{a[idx[0]]}); scores must be finite: compute them from logits "
        "(e.g. logit_scaled_confidence) rather than from rounded "
        "probabilities")
  return a


@dataclasses.dataclass
class RocCurve:
  """ROC of a membership classifier (TF Privacy's `RocCurve`).

  Attributes:
    thresholds: f64[P] decreasing; point i predicts member when
      score >= thresholds[i]. thresholds[0] = +inf (the (0, 0) point).
    tpr: f64[P] fraction of members with score >= threshold (non-decreasing).
    fpr: f64[P] fraction of non-members with score >= threshold.
    test_train_ratio: n_non_members / n_members (TF Privacy's gamma, from
      Jayaraman et al. 2020), used by `get_ppv`.
    auc: area under the curve by the rank formula (exact, ties count 1/2;
      equals the trapezoid area under this curve).
  """
  thresholds: np.ndarray
  tpr: np.ndarray
  fpr: np.ndarray
  test_train_ratio: float
  auc: float

  def get_auc(self) -> float:
    return float(self.auc)

  def get_attacker_advantage(self) -> float:
    """max over thresholds of |TPR - FPR| (Yeom et al. 2018, Def. 4, as in TF
    Privacy)."""
    return float(np.max(np.abs(self.tpr - self.fpr)))

  def get_balanced_accuracy(self) -> float:
    """max over thresholds of (TPR + 1 - FPR) / 2 (Carlini et al. 2022's
    "balanced accuracy"; equals (1 + max(TPR - FPR)) / 2)."""
    return float(np.max((self.tpr + 1.0 - self.fpr) / 2.0))

  def get_ppv(self) -> float:
    """Max positive predictive value TP/(TP+FP) over thresholds, TF Privacy's
    formula: tpr / (tpr + gamma * fpr), and 1 / (1 + gamma) where both are
    ~0 (Jayaraman et al., 2020)."""
    tpr, fpr = np.asarray(self.tpr), np.asarray(self.fpr)
    den = tpr + self.test_train_ratio * fpr
    both0 = (np.isclose(tpr, 0.0, atol=_ABSOLUTE_TOLERANCE)
             & np.isclose(fpr, 0.0, atol=_ABSOLUTE_TOLERANCE))
    ratio = np.divide(tpr, den, out=np.zeros_like(den), where=den != 0)
    return float(np.max(np.where(both0, 1.0 / (1.0 + self.test_train_ratio),
                                 ratio)))

  def tpr_at_fpr(self, max_fpr: float) -> float:
    """Largest TPR over thresholds with FPR <= max_fpr (0 if none)."""
    if not 0.0 <= max_fpr <= 1.0:
      raise ValueError(f"max_fpr={max_fpr} must be in [0, 1]")
    ok = self.fpr <= max_fpr + 1e-12
    return float(np.max(self.tpr[ok])) if ok.any() else 0.0

  def threshold_at_fpr(self, max_fpr: float) -> float:
    """The threshold achieving `tpr_at_fpr(max_fpr)` (the lowest one with
    FPR <= max_fpr)."""
    ok = np.flatnonzero(self.fpr <= max_fpr + 1e-12)
    return float(self.thresholds[ok[-1]])


def auc_rank(scores_in, scores_out) -> float:
  """P(score_in > score_out) + P(tie)/2 by the rank (Mann-Whitney U) formula.

  O((m+n) log(m+n)): average ranks of the pooled scores (ties share their
  mean rank); AUC = (R_in - m(m+1)/2) / (m n), R_in the rank sum of members.
  """
  a = check_scores("scores_in", scores_in)
  b = check_scores("scores_out", scores_out)
  m, n = a.size, b.size
  pooled = np.concatenate([a, b])
  order = np.argsort(pooled, kind="mergesort")
  sorted_vals = pooled[order]
  ranks = np.empty(m + n, np.float64)
  # Average rank per tie group (1-based).
  starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
  ends = np.r_[starts[1:], m + n]
  avg = (starts + ends + 1) / 2.0
  ranks[order] = np.repeat(avg, ends - starts)
  r_in = ranks[:m].sum()
  return float((r_in - m * (m + 1) / 2.0) / (m * n))


def roc_curve(scores_in, scores_out) -> RocCurve:
  """ROC of "member iff score >= t" over every distinct threshold t.

  Args:
    scores_in: f[m] membership scores of members (training examples).
    scores_out: f[n] membership scores of non-members.

  Returns:
    `RocCurve`; its first point is (FPR, TPR) = (0, 0) at t = +inf and its
    last (1, 1) at t = min score.

  Raises:
    ValueError: NaN/Inf scores, empty or non-1-D inputs.
  """
  a = check_scores("scores_in", scores_in)
  b = check_scores("scores_out", scores_out)
  thresholds = np.unique(np.concatenate([a, b]))[::-1]
  # counts of scores >= t for each threshold t (descending)
  a_sorted, b_sorted = np.sort(a), np.sort(b)
  tp = a.size - np.searchsorted(a_sorted, thresholds, side="left")
  fp = b.size - np.searchsorted(b_sorted, thresholds, side="left")
  tpr = np.r_[0.0, tp / a.size]
  fpr = np.r_[0.0, fp / b.size]
  return RocCurve(thresholds=np.r_[np.inf, thresholds], tpr=tpr, fpr=fpr,
                  test_train_ratio=b.size / a.size,
                  auc=auc_rank(a, b))


@dataclasses.dataclass
class AttackResult:
  """One attack's scores and metrics (TF Privacy's `SingleAttackResult`).

  `membership_scores_train` / `membership_scores_test`: scores of members and
  non-members (higher = member). Metric getters mirror TF Privacy.
  """
  attack_type: str
  roc_curve: RocCurve
  membership_scores_train: np.ndarray
  membership_scores_test: np.ndarray

  def get_auc(self) -> float:
    return self.roc_curve.get_auc()

  def get_attacker_advantage(self) -> float:
    return self.roc_curve.get_attacker_advantage()

  def get_ppv(self) -> float:
    return self.roc_curve.get_ppv()

  def get_balanced_accuracy(self) -> float:
    return self.roc_curve.get_balanced_accuracy()

  def tpr_at_fpr(self, max_fpr: float) -> float:
    return self.roc_curve.tpr_at_fpr(max_fpr)

  def summary(self) -> dict:
    """Flat dict of the reported metrics (JSON-serialisable)."""
    return {
        "attack": self.attack_type,
        "ntrain": int(self.membership_scores_train.size),
        "ntest": int(self.membership_scores_test.size),
        "auc": self.get_auc(),
        "tpr_at_0.1%_fpr": self.tpr_at_fpr(1e-3),
        "tpr_at_1%_fpr": self.tpr_at_fpr(1e-2),
        "balanced_accuracy": self.get_balanced_accuracy(),
        "attacker_advantage": self.get_attacker_advantage(),
        "ppv": self.get_ppv(),
    }


def evaluate_attack(attack_type: str, scores_in, scores_out) -> AttackResult:
  """`AttackResult` of an attack given its members' and non-members' scores."""
  a = check_scores(f"{attack_type}: scores_in", scores_in)
  b = check_scores(f"{attack_type}: scores_out", scores_out)
  return AttackResult(attack_type=attack_type, roc_curve=roc_curve(a, b),
                      membership_scores_train=a, membership_scores_test=b)


def plot_roc(path: str, results, *, title: str = "") -> str:
  """Log-log ROC curves of several `AttackResult`s in one PNG (Carlini et al.
  2022, Fig. 1 style), with the chance diagonal; returns `path`.

  FPR and TPR of 0 cannot show on log axes; the lowest plotted value is
  1 / (2 n) of each curve's sample size.
  """
  # matplotlib's Agg canvas directly (no pyplot, no global state); the
  # audit pillar does not import trustjax.experiment (DESIGN: dependencies
  # point one way).
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  if not results:
    raise ValueError("plot_roc: results is empty")
  fig = Figure(figsize=(6, 4), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  floor = 1.0
  for r in results:
    n_out = r.membership_scores_test.size
    n_in = r.membership_scores_train.size
    f = np.maximum(r.roc_curve.fpr, 0.5 / n_out)
    t = np.maximum(r.roc_curve.tpr, 0.5 / n_in)
    ax.plot(f, t, label=f"{r.attack_type} (AUC {r.get_auc():.3f})")
    floor = min(floor, 0.5 / n_out)
  ax.plot([floor, 1.0], [floor, 1.0], "k--", lw=0.8, label="chance")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("false positive rate")
  ax.set_ylabel("true positive rate")
  if title:
    ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png")
  return path
