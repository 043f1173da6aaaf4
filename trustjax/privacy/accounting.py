"""Privacy accounting for DP-SGD: a thin layer over `dp_accounting`.

Nothing here is an accountant: every epsilon comes from `dp_accounting`'s
PLD accountant (default; Meiser & Mohammadi 2018, Koskela et al. 2020,
Doroshenko et al. 2022 "Connect the dots") or its RDP accountant (Mironov 2017;
Mironov, Talwar & Zhang 2019). This module builds the `DpEvent`s that describe
DP-SGD, calibrates the noise, and converts events to epsilon.

Adjacency: ADD_OR_REMOVE_ONE (two data sets are neighbours when one is the
other plus one example), the relation under which Poisson-sampled DP-SGD is
usually stated (Abadi et al. 2016). `noise_multiplier` is the noise standard
deviation divided by the l2 sensitivity of the summed query (the clip norm C).

Truncated Poisson sampling (a fixed `max_batch_size`, see `sampling.py`) is
described by `dp_accounting.TruncatedSubsampledGaussianDpEvent`
(arXiv:2508.15089), which the PLD accountant handles exactly. The RDP
accountant does not support it; `epsilon_from_event(..., accountant="rdp")`
then accounts the untruncated Poisson event and pays the truncation through
delta by a total-variation argument (see `_epsilon_with_truncation`).
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Callable, NamedTuple, Sequence

import dp_accounting
from dp_accounting import dp_event as dpe
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import stats

ACCOUNTANTS = ("pld", "rdp")
# dp_accounting's own default for PLDAccountant.
DEFAULT_VALUE_DISCRETIZATION_INTERVAL = 1e-4
DEFAULT_RDP_ORDERS = tuple(rdp_privacy_accountant.DEFAULT_RDP_ORDERS)
# Default search range for calibrate_noise / calibrate_event.
DEFAULT_SIGMA_BOUNDS = (0.2, 500.0)


# ---------------------------------------------------------------- validation


def _check_positive(name: str, value, *, allow_zero: bool = False) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"{name}={value!r} must be a real number.")
  value = float(value)
  ok = value >= 0 if allow_zero else value > 0
  if not ok or not math.isfinite(value):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"{name}={value!r} must be finite and {bound}.")
  return value


def _check_rate(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"{name}={value!r} must be a real number in (0, 1].")
  value = float(value)
  if not 0.0 < value <= 1.0:
    raise ValueError(f"{name}={value!r} must be in (0, 1].")
  return value


def _check_int(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{name}={value!r} must be an integer >= {minimum}.")
  value = int(value)
  if value < minimum:
    raise ValueError(f"{name}={value!r} must be an integer >= {minimum}.")
  return value


def _check_delta(delta) -> float:
  if isinstance(delta, bool) or not isinstance(delta, numbers.Real):
    raise ValueError(f"delta={delta!r} must be a real number in (0, 1).")
  delta = float(delta)
  if not 0.0 < delta < 1.0:
    raise ValueError(f"delta={delta!r} must be in (0, 1) (exclusive); "
                     "use default_delta(num_examples) for a standard choice.")
  return delta


def _check_accountant(accountant: str) -> str:
  if accountant not in ACCOUNTANTS:
    raise ValueError(f"accountant={accountant!r} must be one of {ACCOUNTANTS}.")
  return accountant


def default_delta(num_examples: int) -> float:
  """The conventional delta = 1 / n^1.1, strictly below 1/n.

  A delta of order 1/n allows mechanisms that publish a random example in the
  clear; the common rule of thumb is delta << 1/n.
  """
  n = _check_int("num_examples", num_examples, 1)
  return 1.0 / n**1.1


def check_delta(delta: float, num_examples: int) -> float:
  """Returns delta if 0 < delta < 1/num_examples, else raises ValueError."""
  delta = _check_delta(delta)
  n = _check_int("num_examples", num_examples, 1)
  if delta >= 1.0 / n:
    raise ValueError(
        f"delta={delta!r} must be < 1/num_examples = 1/{n} = {1.0 / n:.3g}: a "
        "delta of order 1/n allows releasing an example in the clear. Use e.g. "
        f"default_delta({n}) = {default_delta(n):.3g}.")
  return delta


# -------------------------------------------------------------------- events


def dp_sgd_event(noise_multiplier: float,
                 sampling_rate: float,
                 steps: int,
                 *,
                 truncated_batch_size: int | None = None,
                 num_examples: int | None = None) -> dpe.DpEvent:
  """The `DpEvent` of `steps` steps of Poisson-sampled DP-SGD.

  Each step includes every example independently with probability
  `sampling_rate` (Poisson sampling) and releases the sum of the clipped
  per-example gradients plus N(0, (noise_multiplier * C)^2), C the total l2
  clip norm. Adjacency: add/remove one example.

  Args:
    noise_multiplier: sigma > 0, noise std divided by the l2 sensitivity C.
    sampling_rate: q in (0, 1].
    steps: number of steps (>= 0; 0 gives `NoOpDpEvent`).
    truncated_batch_size: when the sampled batch is cut to at most this many
      examples (a random subset kept), as `PoissonSampler` does with its
      `max_batch_size`. Requires `num_examples`.
    num_examples: size n of the private data set. With truncation the event is
      `TruncatedSubsampledGaussianDpEvent(dataset_size=n + 1, ...)`: the
      truncation probability grows with the data set size and under
      add/remove the larger data set of a neighbouring pair has at most n + 1
      examples, so n + 1 is the worst case over all neighbours of the actual
      data set.

  Returns:
    `SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)),
    steps)` or, with truncation, `SelfComposedDpEvent(
    TruncatedSubsampledGaussianDpEvent(n + 1, q, B, sigma), steps)`.
  """
  sigma = _check_positive("noise_multiplier", noise_multiplier)
  q = _check_rate("sampling_rate", sampling_rate)
  steps = _check_int("steps", steps, 0)
  if truncated_batch_size is None:
    if num_examples is not None:
      _check_int("num_examples", num_examples, 1)
    step_event = dpe.PoissonSampledDpEvent(q, dpe.GaussianDpEvent(sigma))
  else:
    b = _check_int("truncated_batch_size", truncated_batch_size, 1)
    if num_examples is None:
      raise ValueError("truncated_batch_size requires num_examples (the "
                       "private data set size).")
    n = _check_int("num_examples", num_examples, 1)
    if b >= n + 1:
      # A batch can never exceed the data set: no truncation possible.
      step_event = dpe.PoissonSampledDpEvent(q, dpe.GaussianDpEvent(sigma))
    else:
      step_event = dpe.TruncatedSubsampledGaussianDpEvent(
          dataset_size=n + 1, sampling_probability=q, truncated_batch_size=b,
          noise_multiplier=sigma)
  if steps == 0:
    return dpe.NoOpDpEvent()
  return dpe.SelfComposedDpEvent(step_event, steps)


class Segment(NamedTuple):
  """A constant stretch of a schedule: `steps` steps at (sigma, q)."""
  noise_multiplier: float
  sampling_rate: float
  steps: int


def schedule_event(segments: Sequence[Sequence],
                   *,
                   num_examples: int | None = None,
                   truncated_batch_size: int | None = None) -> dpe.DpEvent:
  """Composition of DP-SGD segments with changing noise and/or sampling rate.

  Args:
    segments: sequence of `(noise_multiplier, sampling_rate, steps)` (or
      `Segment`s), run one after the other.
    num_examples, truncated_batch_size: as in `dp_sgd_event`, applied to every
      segment.

  Returns:
    `ComposedDpEvent([dp_sgd_event(*segment) for segment in segments])`
    (adaptive sequential composition; the order does not matter for the
    accounting).
  """
  if len(segments) == 0:
    raise ValueError("segments must be a non-empty sequence of "
                     "(noise_multiplier, sampling_rate, steps).")
  events = []
  for i, seg in enumerate(segments):
    if len(seg) != 3:
      raise ValueError(f"segments[{i}]={seg!r} must be (noise_multiplier, "
                       "sampling_rate, steps).")
    events.append(dp_sgd_event(*seg, truncated_batch_size=truncated_batch_size,
                               num_examples=num_examples))
  return dpe.ComposedDpEvent(events)


def noise_decay_schedule(initial_noise_multiplier: float, decay: float,
                         steps_per_epoch: int, epochs: int,
                         sampling_rate: float) -> list[Segment]:
  """Per-epoch geometric noise decay: sigma_e = initial * decay**e.

  As in the eDP-SGD recipe (noise decay over epochs). Returns one `Segment`
  per epoch e = 0..epochs-1; feed it to `schedule_event` for the accounting
  and to `noise_multiplier_at` for the trainer, so both read one schedule.
  """
  s0 = _check_positive("initial_noise_multiplier", initial_noise_multiplier)
  decay = _check_positive("decay", decay)
  spe = _check_int("steps_per_epoch", steps_per_epoch, 1)
  epochs = _check_int("epochs", epochs, 1)
  q = _check_rate("sampling_rate", sampling_rate)
  return [Segment(s0 * decay**e, q, spe) for e in range(epochs)]


def noise_multiplier_at(segments: Sequence[Sequence], step: int) -> float:
  """The noise multiplier of 0-based `step` in a schedule of segments."""
  step = _check_int("step", step, 0)
  start = 0
  for seg in segments:
    if step < start + int(seg[2]):
      return float(seg[0])
    start += int(seg[2])
  raise ValueError(f"step={step} is past the end of the schedule "
                   f"({start} steps).")


# ------------------------------------------------------------------- epsilon


def make_accountant(accountant: str = "pld", *,
                    value_discretization_interval: float | None = None,
                    rdp_orders: Sequence[float] | None = None
                    ) -> dp_accounting.PrivacyAccountant:
  """A fresh dp_accounting accountant (add/remove-one adjacency)."""
  _check_accountant(accountant)
  if accountant == "pld":
    vdi = (DEFAULT_VALUE_DISCRETIZATION_INTERVAL
           if value_discretization_interval is None else
           _check_positive("value_discretization_interval",
                           value_discretization_interval))
    return pld_privacy_accountant.PLDAccountant(
        value_discretization_interval=vdi)
  orders = DEFAULT_RDP_ORDERS if rdp_orders is None else tuple(rdp_orders)
  return rdp_privacy_accountant.RdpAccountant(orders=orders)


def _untruncate(event: dpe.DpEvent) -> tuple[dpe.DpEvent, float]:
  """Replaces truncated events by untruncated ones; returns the TV mass.

  Returns (event', tv): event' with every TruncatedSubsampledGaussianDpEvent
  replaced by PoissonSampled(q, Gaussian(sigma)), and tv an upper bound on the
  probability that at least one truncation happens in the run, on any data set
  of at most `dataset_size` examples (union bound over steps of
  P[Binomial(dataset_size, q) > B]).
  """
  if isinstance(event, dpe.TruncatedSubsampledGaussianDpEvent):
    p = float(stats.binom.sf(event.truncated_batch_size, event.dataset_size,
                             event.sampling_probability))
    return (dpe.PoissonSampledDpEvent(
        event.sampling_probability,
        dpe.GaussianDpEvent(event.noise_multiplier)), p)
  if isinstance(event, dpe.SelfComposedDpEvent):
    inner, p = _untruncate(event.event)
    return (dpe.SelfComposedDpEvent(inner, event.count),
            min(1.0, p * event.count))
  if isinstance(event, dpe.ComposedDpEvent):
    parts = [_untruncate(e) for e in event.events]
    return (dpe.ComposedDpEvent([e for e, _ in parts]),
            min(1.0, sum(p for _, p in parts)))
  return event, 0.0


def _raw_epsilon(event, delta, accountant, vdi, rdp_orders) -> float:
  acc = make_accountant(accountant, value_discretization_interval=vdi,
                        rdp_orders=rdp_orders)
  if not acc.supports(event):
    raise ValueError(f"The {accountant!r} accountant does not support "
                     f"event={event!r}.")
  acc.compose(event)
  return float(acc.get_epsilon(delta))


# Below this ratio tv / delta, truncated events are accounted by the coupling
# bound even with PLD: PLD of TruncatedSubsampledGaussianDpEvent costs seconds
# per call (calibration makes dozens), and the bound then costs at most
# (1 + e^eps) * 1e-3 of delta.
TRUNCATION_COUPLING_MAX_TV_OVER_DELTA = 1e-3


def _epsilon_with_truncation(event, tv, delta, accountant, vdi,
                             rdp_orders) -> float:
  """Epsilon of a truncated run from the untruncated run's epsilon.

  Let M be the untruncated mechanism and M' the truncated one, coupled so
  that they agree unless a truncation happens: for every data set D with at
  most `dataset_size` examples and every output set S,
  |P[M'(D) in S] - P[M(D) in S]| <= tv. If M is (eps, d)-DP then
    P[M'(D) in S] <= P[M(D) in S] + tv <= e^eps P[M(D') in S] + d + tv
                  <= e^eps P[M'(D') in S] + d + (1 + e^eps) tv,
  so M' is (eps, d + (1 + e^eps) tv)-DP. We look for eps with
  eps >= eps_M(delta - (1 + e^eps) tv) by a monotone fixed-point iteration and
  return the first candidate that satisfies it (checked, not assumed).
  """
  def eps_at(d):
    if d <= 0:
      # (1 + e^eps) tv already exceeds delta: this bound proves nothing at
      # such an epsilon; infinity is the honest (conservative) answer.
      return math.inf
    return _raw_epsilon(event, d, accountant, vdi, rdp_orders)

  eps = eps_at(delta - 2.0 * tv)
  for _ in range(100):
    if math.isinf(eps):
      return math.inf
    candidate = eps * (1 + 1e-9) + 1e-12
    needed = eps_at(delta - (1.0 + math.exp(min(candidate, 700.0))) * tv)
    if needed <= candidate:
      return candidate
    eps = needed
  # No fixed point within 100 rounds: the bound is not established, so
  # claim nothing (PLD callers then account the truncated event exactly).
  return math.inf


def epsilon_from_event(event: dpe.DpEvent,
                       delta: float,
                       *,
                       accountant: str = "pld",
                       value_discretization_interval: float | None = None,
                       rdp_orders: Sequence[float] | None = None) -> float:
  """Epsilon of `event` at `delta` (add/remove-one adjacency).

  PLD (default) handles every event this package builds, truncated sampling
  included, without extra delta. RDP (`accountant="rdp"`, orders
  `rdp_orders` or dp_accounting's defaults) does not support
  `TruncatedSubsampledGaussianDpEvent`: such events are replaced by the
  untruncated Poisson event and the probability tv that any step truncates is
  paid as extra delta (1 + e^eps) * tv (a coupling / total-variation bound, see
  `_epsilon_with_truncation`), so the returned epsilon is still valid at
  `delta`. PLD uses the same bound when tv <= 1e-3 * delta (the usual case:
  samplers truncate with negligible probability), because PLD of the
  truncated event is slow; otherwise PLD accounts the truncated event
  exactly. Returns `math.inf` for a non-private event.
  """
  delta = _check_delta(delta)
  _check_accountant(accountant)
  if not isinstance(event, dpe.DpEvent):
    raise ValueError(f"event={event!r} must be a dp_accounting DpEvent.")
  event_u, tv = _untruncate(event)
  if accountant == "rdp" or tv <= TRUNCATION_COUPLING_MAX_TV_OVER_DELTA * delta:
    if tv > 0:
      eps = _epsilon_with_truncation(event_u, tv, delta, accountant,
                                     value_discretization_interval,
                                     rdp_orders)
      # At large epsilon (1 + e^eps) tv exceeds delta and the bound gives
      # inf; PLD can still account the truncated event exactly.
      if not (math.isinf(eps) and accountant == "pld"):
        return eps
    else:
      event = event_u
  return _raw_epsilon(event, delta, accountant, value_discretization_interval,
                      rdp_orders)


def epsilon(noise_multiplier: float,
            sampling_rate: float,
            steps: int,
            delta: float,
            *,
            accountant: str = "pld",
            truncated_batch_size: int | None = None,
            num_examples: int | None = None,
            value_discretization_interval: float | None = None,
            rdp_orders: Sequence[float] | None = None) -> float:
  """Epsilon after `steps` steps of Poisson-sampled DP-SGD at `delta`.

  Equals `epsilon_from_event(dp_sgd_event(...), delta, ...)`; see there and
  `dp_sgd_event` for the exact mechanism and adjacency. When `num_examples`
  is given, delta is also checked to be < 1/num_examples.
  """
  delta = _check_delta(delta)
  if num_examples is not None:
    check_delta(delta, num_examples)
  event = dp_sgd_event(noise_multiplier, sampling_rate, steps,
                       truncated_batch_size=truncated_batch_size,
                       num_examples=num_examples)
  return epsilon_from_event(
      event, delta, accountant=accountant,
      value_discretization_interval=value_discretization_interval,
      rdp_orders=rdp_orders)


# --------------------------------------------------------------- calibration


def calibrate_event(make_event: Callable[[float], dpe.DpEvent],
                    target_epsilon: float,
                    delta: float,
                    *,
                    accountant: str = "pld",
                    tol: float = 0.01,
                    sigma_bounds: tuple[float, float] = DEFAULT_SIGMA_BOUNDS,
                    value_discretization_interval: float | None = None,
                    rdp_orders: Sequence[float] | None = None) -> float:
  """Smallest-found sigma with epsilon(make_event(sigma)) <= target_epsilon.

  Bisection on log(sigma) within `sigma_bounds` (bracketed from a cheap RDP
  guess, steps interpolated in log-log space), keeping the invariant
  epsilon(hi) <= target_epsilon, until (1 - tol) * target <= epsilon(hi).
  The returned sigma therefore always satisfies epsilon <= target (checked
  with the same accountant), and is within `tol` (relative) of the target
  unless even `sigma_bounds[0]` is below it, in which case `sigma_bounds[0]`
  is returned with a warning.

  Raises:
    ValueError: target_epsilon <= 0, delta not in (0, 1), or no sigma up to
      `sigma_bounds[1]` reaches the target.
  """
  target = _check_positive("target_epsilon", target_epsilon)
  delta = _check_delta(delta)
  _check_accountant(accountant)
  tol = _check_positive("tol", tol)
  if tol >= 1:
    raise ValueError(f"tol={tol!r} must be in (0, 1).")
  lo, hi = (float(b) for b in sigma_bounds)
  if not 0 < lo < hi:
    raise ValueError(f"sigma_bounds={sigma_bounds!r} must satisfy "
                     "0 < low < high.")

  def eps(sigma):
    return epsilon_from_event(
        make_event(sigma), delta, accountant=accountant,
        value_discretization_interval=value_discretization_interval,
        rdp_orders=rdp_orders)

  # Bracket from a cheap RDP guess: RDP epsilons are usually >= PLD ones, so
  # the RDP-calibrated sigma is usually a feasible `hi` for PLD.
  guess = None
  if accountant == "pld":
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guess = calibrate_event(make_event, target, delta, accountant="rdp",
                                tol=0.05, sigma_bounds=(lo, hi),
                                rdp_orders=rdp_orders)
    except ValueError:
      guess = None
  if guess is not None and guess > lo:
    b_hi, e = guess, eps(guess)
    while e > target and b_hi < hi:
      b_hi = min(hi, b_hi * 1.5)
      e = eps(b_hi)
    if e > target:
      raise _unreachable(target, delta, hi, e)
    b_lo = b_hi
    while True:
      b_lo = max(lo, b_lo / 1.25)
      e_lo = eps(b_lo)
      if e_lo > target or b_lo == lo:
        break
      b_hi, e = b_lo, e_lo
    if e_lo <= target:
      return _at_lower_bound(lo, e_lo, target)
    lo, hi, eps_lo, eps_hi = b_lo, b_hi, e_lo, e
  else:
    eps_hi = eps(hi)
    if eps_hi > target:
      raise _unreachable(target, delta, hi, eps_hi)
    eps_lo = eps(lo)
    if eps_lo <= target:
      return _at_lower_bound(lo, eps_lo, target)
  goal = target * (1.0 - tol / 2)
  while eps_hi < (1.0 - tol) * target:
    if hi / lo < 1 + 1e-9:
      warnings.warn(f"calibration stopped at noise_multiplier={hi!r} with "
                    f"epsilon={eps_hi!r}, not within tol of {target!r} "
                    "(accountant discretisation).", stacklevel=2)
      break
    # Interpolate log(eps) linearly in log(sigma), kept inside the bracket.
    llo, lhi = math.log(lo), math.log(hi)
    if math.isfinite(eps_lo) and eps_hi > 0 and eps_lo > eps_hi:
      frac = ((math.log(eps_lo) - math.log(goal)) /
              (math.log(eps_lo) - math.log(eps_hi)))
    else:
      frac = 0.5
    frac = min(0.9, max(0.1, frac))
    mid = math.exp(llo + frac * (lhi - llo))
    e = eps(mid)
    if e <= target:
      hi, eps_hi = mid, e
    else:
      lo, eps_lo = mid, e
  return hi


def _unreachable(target, delta, hi, e) -> ValueError:
  return ValueError(
      f"target_epsilon={target!r} is unreachable at delta={delta!r}: even "
      f"noise_multiplier={hi:g} (the top of sigma_bounds) gives "
      f"epsilon={e:.4g}. Use fewer steps, a smaller sampling rate, a larger "
      "delta or a larger target.")


def _at_lower_bound(lo, e, target) -> float:
  warnings.warn(
      f"noise_multiplier={lo:g} (the bottom of sigma_bounds) already gives "
      f"epsilon={e:.4g} <= target_epsilon={target!r}; returning it.",
      stacklevel=3)
  return lo


def calibrate_noise(target_epsilon: float,
                    delta: float,
                    sampling_rate: float,
                    steps: int,
                    *,
                    accountant: str = "pld",
                    tol: float = 0.01,
                    truncated_batch_size: int | None = None,
                    num_examples: int | None = None,
                    sigma_bounds: tuple[float, float] = DEFAULT_SIGMA_BOUNDS,
                    value_discretization_interval: float | None = None,
                    rdp_orders: Sequence[float] | None = None) -> float:
  """Noise multiplier for `steps` DP-SGD steps to reach `target_epsilon`.

  Returns sigma with epsilon(sigma) <= target_epsilon and
  epsilon(sigma) >= (1 - tol) * target_epsilon (see `calibrate_event`).
  """
  q = _check_rate("sampling_rate", sampling_rate)
  steps = _check_int("steps", steps, 1)
  if num_examples is not None:
    check_delta(delta, num_examples)
  return calibrate_event(
      lambda s: dp_sgd_event(s, q, steps,
                             truncated_batch_size=truncated_batch_size,
                             num_examples=num_examples),
      target_epsilon, delta, accountant=accountant, tol=tol,
      sigma_bounds=sigma_bounds,
      value_discretization_interval=value_discretization_interval,
      rdp_orders=rdp_orders)


def max_composed_steps(step_event: dpe.DpEvent,
                       target_epsilon: float,
                       delta: float,
                       *,
                       prefix: dpe.DpEvent | None = None,
                       accountant: str = "pld",
                       max_steps: int = 10**7,
                       value_discretization_interval: float | None = None,
                       rdp_orders: Sequence[float] | None = None) -> int:
  """Largest m <= max_steps with epsilon(prefix + m * step_event) <= target.

  Exponential then binary search (O(log m) accountant calls), assuming
  epsilon is non-decreasing in m; the returned m is always verified to satisfy
  the bound. Returns 0 when even one step (or the prefix) exceeds it.
  """
  target = _check_positive("target_epsilon", target_epsilon)
  delta = _check_delta(delta)
  max_steps = _check_int("max_steps", max_steps, 0)

  def ok(m):
    parts = [] if prefix is None else [prefix]
    if m > 0:
      parts.append(dpe.SelfComposedDpEvent(step_event, m))
    if not parts:
      return True
    ev = parts[0] if len(parts) == 1 else dpe.ComposedDpEvent(parts)
    return epsilon_from_event(
        ev, delta, accountant=accountant,
        value_discretization_interval=value_discretization_interval,
        rdp_orders=rdp_orders) <= target

  if not ok(min(1, max_steps)):
    return 0
  good, bad = 1 if max_steps >= 1 else 0, None
  while bad is None:
    trial = min(good * 2, max_steps)
    if trial == good:
      return good
    if ok(trial):
      good = trial
    else:
      bad = trial
  while bad - good > 1:
    mid = (good + bad) // 2
    if ok(mid):
      good = mid
    else:
      bad = mid
  return good


def calibrate_steps(target_epsilon: float,
                    delta: float,
                    noise_multiplier: float,
                    sampling_rate: float,
                    *,
                    accountant: str = "pld",
                    truncated_batch_size: int | None = None,
                    num_examples: int | None = None,
                    max_steps: int = 10**7) -> int:
  """Largest number of DP-SGD steps whose epsilon is <= target_epsilon."""
  step_event = dp_sgd_event(noise_multiplier, sampling_rate, 1,
                            truncated_batch_size=truncated_batch_size,
                            num_examples=num_examples).event
  return max_composed_steps(step_event, target_epsilon, delta,
                            accountant=accountant, max_steps=max_steps)
