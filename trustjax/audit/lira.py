"""Likelihood-ratio attack (LiRA), online and offline, from shadow models.

Carlini, Chien, Nasr, Song, Terzis, Tramer, "Membership Inference Attacks
From First Principles", IEEE S&P 2022 (arXiv:2112.03570), Algorithm 1.

Inputs are per-example scores (use `logit_scaled_confidence`, which the
paper shows is close to Gaussian across shadow models):

  target_scores  f[N]     the audited model's score on each example;
  shadow_scores  f[K, N]  each shadow model's score on each example;
  shadow_in      bool[K, N]  True where example n was in shadow k's
                          training set (IN), False where it was not (OUT).

For example n, mu_in/sigma_in are the mean/std of its IN shadow scores and
mu_out/sigma_out of its OUT scores (std with ddof=0, as in the paper's code).

  online  (needs IN and OUT): score = log N(x; mu_in, sigma_in^2)
                                     - log N(x; mu_out, sigma_out^2)
  offline (needs OUT only):   score = log Phi((x - mu_out) / sigma_out),
                               the log of the one-sided test's confidence
                               1 - Pr[Z > x], Z ~ N(mu_out, sigma_out^2).

Higher = more likely a member. `fix_variance=True` replaces the per-example
sigmas by one global sigma_in and one global sigma_out, the pooled
within-example standard deviation sqrt(sum_n sum_k (x_kn - mu_n)^2 /
sum_n K_n) over IN (resp. OUT) scores (the paper's "global variance", better
with few shadow models). Per-example means are always used.

Numerical notes: sigmas are floored at `min_std`; log Phi uses
`scipy.special.log_ndtr` (accurate in both tails, though ranks tie where
(x - mu) / sigma exceeds ~37, as Phi rounds to 1 - 1e-308).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from trustjax.audit import metrics as _metrics

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def _check(target_scores, shadow_scores, shadow_in):
  x = _metrics.check_scores("target_scores", target_scores)
  s = np.asarray(shadow_scores, np.float64)
  m = np.asarray(shadow_in)
  if s.ndim != 2 or s.shape[1] != x.size:
    raise ValueError(f"shadow_scores must have shape [K, N] = [K, {x.size}] "
                     f"(N from target_scores); got {s.shape}")
  if m.shape != s.shape:
    raise ValueError(f"shadow_in has shape {m.shape}; it must match "
                     f"shadow_scores {s.shape}")
  if m.dtype != bool:
    if not np.isin(m, (0, 1)).all():
      raise ValueError("shadow_in must be boolean (True = example in that "
                       "shadow model's training set)")
    m = m.astype(bool)
  bad = ~np.isfinite(s)
  if bad.any():
    k, n = np.argwhere(bad)[0]
    raise ValueError(f"shadow_scores has {int(bad.sum())} non-finite values "
                     f"(NaN/Inf), first at model {k}, example {n}: "
                     f"{s[k, n]}; scores must be finite")
  return x, s, m


def _require(count: np.ndarray, minimum: int, what: str, why: str):
  short = np.flatnonzero(count < minimum)
  if short.size:
    raise ValueError(
        f"{short.size} examples have fewer than {minimum} {what} shadow "
        f"models (e.g. example {short[0]} has {int(count[short[0]])}; "
        f"indices {short[:10].tolist()}{' ...' if short.size > 10 else ''}): "
        f"{why}. Train more shadow models or resample shadow_in (e.g. with "
        "`shadow_in_masks`, which puts every example IN exactly K/2 models)")


def _fit(s, m, fix_variance, min_std):
  """Per-example mean f64[N] and std (f64[N], or a broadcast global)."""
  cnt = m.sum(0)
  w = m.astype(np.float64)
  mu = np.einsum("kn,kn->n", w, s) / np.maximum(cnt, 1)
  sq = np.einsum("kn,kn->n", w, (s - mu[None]) ** 2)
  if fix_variance:
    std = np.full_like(mu, np.sqrt(sq.sum() / max(cnt.sum(), 1)))
  else:
    std = np.sqrt(sq / np.maximum(cnt, 1))
  return mu, np.maximum(std, min_std)


def _log_normal_pdf(x, mu, std):
  return -0.5 * ((x - mu) / std) ** 2 - np.log(std) - _LOG_SQRT_2PI


def lira_online(target_scores, shadow_scores, shadow_in, *,
                fix_variance: bool = False,
                min_std: float = 1e-6) -> np.ndarray:
  """Online LiRA membership scores f64[N] (see module docstring).

  Raises:
    ValueError: NaN/Inf scores, shape mismatch, or an example with no IN or
      no OUT shadow model (fewer than 2 of either with per-example variance).
  """
  x, s, m = _check(target_scores, shadow_scores, shadow_in)
  need = 1 if fix_variance else 2
  why = ("online LiRA fits a Gaussian to each example's IN and OUT scores"
         + ("" if fix_variance else
            " (per-example variance needs 2 of each; or fix_variance=True)"))
  _require(m.sum(0), need, "IN", why)
  _require((~m).sum(0), need, "OUT", why)
  mu_in, sd_in = _fit(s, m, fix_variance, min_std)
  mu_out, sd_out = _fit(s, ~m, fix_variance, min_std)
  return _log_normal_pdf(x, mu_in, sd_in) - _log_normal_pdf(x, mu_out, sd_out)


def lira_offline(target_scores, shadow_scores, shadow_in, *,
                 fix_variance: bool = False,
                 min_std: float = 1e-6) -> np.ndarray:
  """Offline LiRA membership scores f64[N]: log Phi((x - mu_out) / sd_out).

  Only OUT shadow models are used (IN entries of `shadow_scores` are
  ignored), so shadows can be trained before the examples to audit are known.

  Raises:
    ValueError: NaN/Inf scores, shape mismatch, or an example with no OUT
      shadow model (fewer than 2 with per-example variance).
  """
  x, s, m = _check(target_scores, shadow_scores, shadow_in)
  need = 1 if fix_variance else 2
  _require((~m).sum(0), need, "OUT",
           "offline LiRA compares each example's score with the Gaussian of "
           "its OUT scores" + ("" if fix_variance else
                               " (per-example variance needs 2; or "
                               "fix_variance=True)"))
  mu_out, sd_out = _fit(s, ~m, fix_variance, min_std)
  return special.log_ndtr((x - mu_out) / sd_out)


def shadow_in_masks(num_models: int, num_examples: int, seed: int = 0, *,
                    balanced: bool = True) -> np.ndarray:
  """bool[K, N] membership of each example in each model's training set.

  balanced=True: each example IN exactly floor(K/2) models (the paper's
  split for shadow models). balanced=False: IN each model independently with
  probability 1/2. Use independent masks when every model in turn is the
  target and the others its shadows (`leave_one_out`): with balanced masks
  the shadows' IN count (K/2 - 1 vs K/2) reveals the target's membership,
  which biases per-example fits badly when K is small.
  """
  if num_models < 2:
    raise ValueError(f"num_models={num_models}: LiRA needs at least 2 shadow "
                     "models (one IN and one OUT per example)")
  if num_examples < 1:
    raise ValueError(f"num_examples={num_examples} must be >= 1")
  rng = np.random.default_rng(seed)
  u = rng.uniform(size=(num_models, num_examples))
  if not balanced:
    return u < 0.5
  return u.argsort(0) < num_models // 2


def fit_counts(shadow_in) -> tuple[np.ndarray, np.ndarray]:
  """(IN count int[N], OUT count int[N]) of shadow models per example."""
  m = np.asarray(shadow_in, bool)
  return m.sum(0), (~m).sum(0)


def leave_one_out(scores, in_mask, target: int):
  """Splits stacked models' scores into (target x, its IN mask, shadows).

  scores f[K, N], in_mask bool[K, N]: model `target` is audited, the other
  K - 1 serve as its shadow models. Returns (target_scores f[N],
  target_in bool[N], shadow_scores f[K-1, N], shadow_in bool[K-1, N]).
  """
  scores = np.asarray(scores)
  in_mask = np.asarray(in_mask, bool)
  k = scores.shape[0]
  if not 0 <= target < k:
    raise ValueError(f"target={target} must index one of the K={k} models")
  keep = np.arange(k) != target
  return scores[target], in_mask[target], scores[keep], in_mask[keep]
