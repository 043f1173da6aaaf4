"""Client selection with aggregation weights that are unbiased for the sampler.

The server wants the example-weighted population mean of client updates,
`Delta = sum_k (n_k / N) Delta_k` over all K clients. Each sampler returns a
`Cohort` whose weights make `sum_{k in cohort} w_k Delta_k` an unbiased
estimate of Delta:

* uniform without replacement (fixed size m, all clients available):
  inclusion probability pi_k = m / K, w_k = (n_k / N) / pi_k.
* with replacement (uniform, or activity-based p_k ∝ n_k^power): m i.i.d.
  draws, Hansen-Hurwitz weights w_k = c_k (n_k / N) / (m p_k), c_k the number
  of times client k was drawn (duplicates merged into one entry).
* activity-based without replacement, and any sampler with availability:
  Poisson sampling. Client k is online with probability a_k and, if online,
  selected with probability min(1, c p_k), c set so that the expected cohort
  size is m; pi_k = a_k min(1, c p_k) and w_k = (n_k / N) / pi_k
  (Horvitz-Thompson). The cohort size is random; it is padded to
  `max_cohort_size` (default m + 6 sqrt(m) + 8). Should a draw exceed that,
  a uniformly random subset is kept and `Cohort.truncated` is set (that rare
  event breaks exact unbiasedness; raise max_cohort_size to avoid it).

`normalize=True` rescales the weights to sum to 1 (the self-normalised ratio
estimator FedAvg uses in practice: lower variance, slightly biased).
Activity-based selection follows Dupuy et al., "Learnings from federated
learning in the real world", ICASSP 2022. Randomness is a function of
(seed, round) only, so reruns are identical.
"""

from __future__ import annotations

import dataclasses

import numpy as np

METHODS = ("uniform", "activity")


@dataclasses.dataclass(frozen=True)
class Cohort:
  """Selected clients, padded to a fixed size.

  clients: int64[M] (padding rows hold 0); weights: float64[M] (0 on padding);
  mask: bool[M]; inclusion_prob: float64[M] (pi_k of each selected client);
  truncated: whether a Poisson draw exceeded the padded size.
  """
  clients: np.ndarray
  weights: np.ndarray
  mask: np.ndarray
  inclusion_prob: np.ndarray
  truncated: bool = False

  @property
  def size(self) -> int:
    return int(self.mask.sum())


def _probabilities(sizes, method, power):
  if method == "uniform":
    return np.full(len(sizes), 1.0 / len(sizes))
  w = np.asarray(sizes, np.float64) ** power
  if w.sum() <= 0:
    raise ValueError("activity-based selection needs at least one client "
                     "with data (all sizes are 0)")
  return w / w.sum()


def _poisson_rates(p, avail, m):
  """c with sum_k avail_k min(1, c p_k) = m (bisection); returns pi."""
  hi_total = float(np.sum(avail * (p > 0)))
  if m > hi_total + 1e-9:
    raise ValueError(f"cohort_size={m} exceeds the expected number of "
                     f"available clients with data ({hi_total:.1f})")
  lo, hi = 0.0, 1.0
  while np.sum(avail * np.minimum(1.0, hi * p)) < m:
    hi *= 2
  for _ in range(60):
    mid = 0.5 * (lo + hi)
    if np.sum(avail * np.minimum(1.0, mid * p)) < m:
      lo = mid
    else:
      hi = mid
  return avail * np.minimum(1.0, hi * p)


def _pad(clients, weights, pis, size, truncated=False):
  out_c = np.zeros(size, np.int64)
  out_w = np.zeros(size)
  out_p = np.zeros(size)
  mask = np.zeros(size, bool)
  n = len(clients)
  out_c[:n], out_w[:n], out_p[:n], mask[:n] = clients, weights, pis, True
  return Cohort(out_c, out_w, mask, out_p, truncated)


def select_clients(sizes: np.ndarray, cohort_size: int, *, round: int,
                   seed: int, method: str = "uniform", power: float = 1.0,
                   replace: bool = False, availability=None,
                   max_cohort_size: int | None = None,
                   normalize: bool = False) -> Cohort:
  """Draws the cohort of one round; see the module docstring for weights.

  Args:
    sizes: int[K], examples each client holds now (its n_k).
    cohort_size: m, the (expected, for Poisson sampling) cohort size.
    round, seed: the draw is a function of (seed, round).
    method: "uniform" or "activity" (p_k ∝ sizes_k^power).
    replace: sample with replacement (m i.i.d. draws).
    availability: None (always online) or float[K] in [0, 1].
  """
  sizes = np.asarray(sizes, np.int64)
  k = len(sizes)
  if method not in METHODS:
    raise ValueError(f"method={method!r}; valid: {METHODS}")
  if k == 0:
    raise ValueError("no clients to select from")
  if cohort_size < 1:
    raise ValueError(f"cohort_size={cohort_size} must be >= 1")
  if np.any(sizes < 0):
    raise ValueError("client sizes must be >= 0")
  total = sizes.sum()
  if total <= 0:
    raise ValueError("all clients are empty: no data to train on")
  share = sizes / total
  rng = np.random.default_rng([seed, round])
  p = _probabilities(sizes, method, power)
  if replace:
    if availability is not None:
      raise ValueError("availability is supported with replace=False only")
    draws = rng.choice(k, size=cohort_size, replace=True, p=p)
    clients, counts = np.unique(draws, return_counts=True)
    w = counts * share[clients] / (cohort_size * p[clients])
    pis = 1.0 - (1.0 - p[clients]) ** cohort_size
    cohort = _pad(clients, w, pis, cohort_size)
  elif method == "uniform" and availability is None:
    if cohort_size > k:
      raise ValueError(f"cohort_size={cohort_size} exceeds the {k} clients "
                       "(sampling without replacement)")
    clients = np.sort(rng.choice(k, size=cohort_size, replace=False))
    pi = cohort_size / k
    cohort = _pad(clients, share[clients] / pi, np.full(cohort_size, pi),
                  cohort_size)
  else:
    avail = np.ones(k) if availability is None else np.asarray(
        availability, np.float64)
    if avail.shape != (k,) or np.any((avail < 0) | (avail > 1)):
      raise ValueError(f"availability must be float[{k}] in [0, 1]")
    pi = _poisson_rates(p, avail, cohort_size)
    chosen = np.flatnonzero(rng.random(k) < pi)
    size = max_cohort_size or int(cohort_size + 6 * np.sqrt(cohort_size) + 8)
    truncated = len(chosen) > size
    if truncated:
      chosen = np.sort(rng.choice(chosen, size=size, replace=False))
    cohort = _pad(chosen, share[chosen] / pi[chosen], pi[chosen], size,
                  truncated)
  if normalize and cohort.weights.sum() > 0:
    cohort = dataclasses.replace(cohort,
                                 weights=cohort.weights / cohort.weights.sum())
  return cohort
