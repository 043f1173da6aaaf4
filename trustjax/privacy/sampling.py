"""Host-side batch samplers with fixed output shapes, and their DpEvents.

`PoissonSampler` implements the sampling that DP-SGD's standard accounting
assumes (Abadi et al. 2016; Mironov, Talwar & Zhang 2019): at every step each
example is included independently with probability q. Batches are returned as
fixed-shape index arrays plus a mask, so a jitted train step never recompiles.
A fixed shape needs a maximum batch size B; a realised batch larger than B is
truncated to a uniformly random subset of B examples, and the accounting
(`PoissonSampler.dp_event`) describes exactly that truncated mechanism
(`TruncatedSubsampledGaussianDpEvent`, arXiv:2508.15089).

`ShuffledBatchSampler` (fixed-size batches from shuffled epochs) is what many
implementations do instead; it is NOT Poisson sampling and Poisson accounting
does not apply to it (Chua et al. 2024, "How Private are DP-SGD
Implementations?"; Annamalai et al. 2024). Its `dp_event` gives an honest bound
without any amplification by sampling.

Randomness: every batch is drawn from `np.random.default_rng([seed, step])`
(or `[seed, epoch]` for shuffling), so a batch depends only on (seed, step):
independent of call order, and the sampler's whole state is its constructor
arguments (`state_dict`), which makes resuming exact.
"""

from __future__ import annotations

import math
from typing import Any

from dp_accounting import dp_event as dpe
import numpy as np
from scipy import stats

from trustjax.privacy import accounting

TRUNCATION_MODES = ("account", "refuse")


def _truncation_probability(max_batch_size: int, num_examples: int,
                            sampling_rate: float) -> float:
  # P[Binomial(n + 1, q) > B]: the worst case over the data set and its
  # add/remove neighbours (the larger has at most n + 1 examples).
  return float(stats.binom.sf(max_batch_size, num_examples + 1, sampling_rate))


def default_max_batch_size(num_examples: int, sampling_rate: float,
                           per_step_truncation_prob: float) -> int:
  """Smallest B with P[Binomial(n + 1, q) > B] <= per_step_truncation_prob."""
  n = accounting._check_int("num_examples", num_examples, 1)
  q = accounting._check_rate("sampling_rate", sampling_rate)
  p = accounting._check_positive("per_step_truncation_prob",
                                 per_step_truncation_prob)
  b = int(stats.binom.isf(p, n + 1, q))
  while b > 1 and _truncation_probability(b - 1, n, q) <= p:
    b -= 1
  while _truncation_probability(b, n, q) > p:
    b += 1
  return max(1, min(b, n + 1))


class PoissonSampler:
  """Poisson sampling with a fixed maximum batch size.

  `batch(step)` includes each of the `num_examples` examples independently
  with probability `sampling_rate`, using `np.random.default_rng([seed,
  step])`. If more than `max_batch_size` examples are drawn, a uniformly
  random subset of `max_batch_size` of them is kept (truncation).

  Truncation and accounting. `truncation_probability()` bounds the per-step
  probability that a batch is truncated, for this data set and any add/remove
  neighbour: P[Binomial(n + 1, q) > max_batch_size].
  * truncation="account" (default): `dp_event` returns the truncated event
    (`TruncatedSubsampledGaussianDpEvent`), which dp_accounting's PLD
    accountant accounts exactly; the RDP path pays the truncation through
    delta (see `accounting.epsilon_from_event`).
  * truncation="refuse": additionally requires that truncation is negligible:
    `steps * truncation_probability() <= max_truncation_prob`, checked at
    construction when `steps` is given and in `dp_event`/`check_steps`
    (ValueError otherwise). The event is the same truncated event, so the
    accounting always describes what `batch` does.

  Args:
    num_examples: n >= 1, the size of the private data set.
    sampling_rate: q in (0, 1]; expected batch size q * n.
    max_batch_size: B >= 1, the fixed output length, capped at n + 1 (with
      B = n + 1 no neighbour's batch can be truncated either). Default:
      the smallest B whose truncation probability over `steps` steps (per step
      when `steps` is None) is <= `max_truncation_prob`.
    seed: integer >= 0 (required; positional or keyword); batches depend only
      on (seed, step).
    truncation: "account" or "refuse" (see above).
    max_truncation_prob: bound used for the default B and by "refuse".
    steps: optional planned number of steps (for the default B and the
      "refuse" check).
  """

  matches_poisson_accounting = True

  def __init__(self,
               num_examples: int,
               sampling_rate: float,
               max_batch_size: int | None = None,
               seed: int | None = None,
               *,
               truncation: str = "account",
               max_truncation_prob: float = 1e-9,
               steps: int | None = None):
    self.num_examples = accounting._check_int("num_examples", num_examples, 1)
    self.sampling_rate = accounting._check_rate("sampling_rate", sampling_rate)
    if seed is None:
      raise ValueError("seed is required (an integer >= 0): batches are drawn "
                       "from np.random.default_rng([seed, step]).")
    self.seed = accounting._check_int("seed", seed, 0)
    if truncation not in TRUNCATION_MODES:
      raise ValueError(f"truncation={truncation!r} must be one of "
                       f"{TRUNCATION_MODES}.")
    self.truncation = truncation
    self.max_truncation_prob = accounting._check_positive(
        "max_truncation_prob", max_truncation_prob)
    if self.max_truncation_prob >= 1:
      raise ValueError(f"max_truncation_prob={max_truncation_prob!r} must be "
                       "in (0, 1).")
    self.steps = None if steps is None else accounting._check_int(
        "steps", steps, 1)
    self._requested_max_batch_size = max_batch_size
    if max_batch_size is None:
      per_step = self.max_truncation_prob / (self.steps or 1)
      max_batch_size = default_max_batch_size(self.num_examples,
                                              self.sampling_rate, per_step)
    else:
      max_batch_size = accounting._check_int("max_batch_size", max_batch_size,
                                             1)
    # n + 1 rows suffice for the data set and every add/remove neighbour.
    self.max_batch_size = min(max_batch_size, self.num_examples + 1)
    if self.steps is not None:
      self.check_steps(self.steps)

  @property
  def expected_batch_size(self) -> float:
    """q * n, the mean Poisson batch size (before truncation)."""
    return self.sampling_rate * self.num_examples

  def truncation_probability(self) -> float:
    """Per-step truncation probability bound P[Binomial(n+1, q) > B]."""
    return _truncation_probability(self.max_batch_size, self.num_examples,
                                   self.sampling_rate)

  def check_steps(self, steps: int) -> None:
    """In "refuse" mode, raises if steps * truncation_probability() > bound."""
    steps = accounting._check_int("steps", steps, 0)
    if self.truncation != "refuse":
      return
    total = steps * self.truncation_probability()
    if total > self.max_truncation_prob:
      raise ValueError(
          f"truncation='refuse': over steps={steps} the probability that some "
          f"batch is truncated is up to {total:.3g} > max_truncation_prob="
          f"{self.max_truncation_prob:.3g} (max_batch_size="
          f"{self.max_batch_size}, expected batch "
          f"{self.expected_batch_size:g})."
          " Increase max_batch_size (or leave it None and pass steps=), or use "
          "truncation='account'.")

  def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch of 0-based `step`.

    Returns:
      indices: int32[max_batch_size], the sampled example indices in
        increasing order, padded with 0.
      mask: bool[max_batch_size], True for real entries, False for padding.
    """
    step = accounting._check_int("step", step, 0)
    rng = np.random.default_rng([self.seed, step])
    chosen = np.flatnonzero(rng.random(self.num_examples) < self.sampling_rate)
    if chosen.size > self.max_batch_size:
      chosen = np.sort(rng.choice(chosen, self.max_batch_size, replace=False))
    indices = np.zeros(self.max_batch_size, np.int32)
    mask = np.zeros(self.max_batch_size, bool)
    indices[:chosen.size] = chosen
    mask[:chosen.size] = True
    return indices, mask

  def dp_event(self, noise_multiplier: float, steps: int) -> dpe.DpEvent:
    """The DpEvent of `steps` DP-SGD steps on batches from this sampler.

    Gaussian noise N(0, (noise_multiplier * C)^2) on the sum of clipped
    gradients, C the total l2 clip norm; add/remove-one adjacency. Describes
    the truncation exactly (see class docstring); see
    `accounting.dp_sgd_event`.
    """
    self.check_steps(steps)
    return accounting.dp_sgd_event(
        noise_multiplier, self.sampling_rate, steps,
        truncated_batch_size=self.max_batch_size,
        num_examples=self.num_examples)

  def state_dict(self) -> dict[str, Any]:
    """JSON-serialisable constructor arguments: the sampler's whole state."""
    return dict(num_examples=self.num_examples,
                sampling_rate=self.sampling_rate,
                max_batch_size=self.max_batch_size, seed=self.seed,
                truncation=self.truncation,
                max_truncation_prob=self.max_truncation_prob, steps=self.steps)

  @classmethod
  def from_state_dict(cls, state: dict[str, Any]) -> "PoissonSampler":
    return cls(**state)

  def __repr__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.state_dict().items())
    return f"PoissonSampler({args})"


class ShuffledBatchSampler:
  """Fixed-size batches from shuffled epochs. NOT Poisson sampling.

  Epoch e is the permutation `np.random.default_rng([seed, e]).permutation(n)`
  cut into `steps_per_epoch = ceil(n / batch_size)` consecutive batches; the
  last batch of an epoch is padded (mask False). Every example is used exactly
  once per epoch.

  Accounting. Poisson accounting (`PoissonSampledDpEvent` with q = B / n) does
  NOT hold for shuffled batches and can underestimate epsilon substantially
  (Chua et al. 2024, arXiv:2403.17673). `matches_poisson_accounting` is False.
  `dp_event` returns a valid but pessimistic bound that claims no
  amplification: each example enters one batch per epoch, so `steps` steps are
  at most `ceil(steps / steps_per_epoch)` compositions of a Gaussian mechanism
  with sensitivity C, i.e. `SelfComposedDpEvent(GaussianDpEvent(sigma),
  epochs)`. That bound holds under the zero-out adjacency (one example
  replaced by a null example contributing a zero gradient, same permutation),
  not for add/remove of an example (which shifts the permutation).
  `poisson_event` returns the (invalid for this sampler) Poisson event only
  with `allow_unaccounted=True`, for comparison with papers that report it.
  """

  matches_poisson_accounting = False

  def __init__(self, num_examples: int, batch_size: int, *, seed: int):
    self.num_examples = accounting._check_int("num_examples", num_examples, 1)
    self.batch_size = accounting._check_int("batch_size", batch_size, 1)
    if self.batch_size > self.num_examples:
      raise ValueError(f"batch_size={batch_size} must be <= num_examples="
                       f"{num_examples}.")
    self.seed = accounting._check_int("seed", seed, 0)

  @property
  def steps_per_epoch(self) -> int:
    return math.ceil(self.num_examples / self.batch_size)

  def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int32[batch_size], mask bool[batch_size]) of 0-based step."""
    step = accounting._check_int("step", step, 0)
    epoch, i = divmod(step, self.steps_per_epoch)
    perm = np.random.default_rng([self.seed, epoch]).permutation(
        self.num_examples)
    chosen = perm[i * self.batch_size:(i + 1) * self.batch_size]
    indices = np.zeros(self.batch_size, np.int32)
    mask = np.zeros(self.batch_size, bool)
    indices[:chosen.size] = chosen
    mask[:chosen.size] = True
    return indices, mask

  def dp_event(self, noise_multiplier: float, steps: int) -> dpe.DpEvent:
    """No-amplification bound (zero-out adjacency); see class docstring."""
    sigma = accounting._check_positive("noise_multiplier", noise_multiplier)
    steps = accounting._check_int("steps", steps, 0)
    epochs = math.ceil(steps / self.steps_per_epoch)
    if epochs == 0:
      return dpe.NoOpDpEvent()
    return dpe.SelfComposedDpEvent(dpe.GaussianDpEvent(sigma), epochs)

  def poisson_event(self, noise_multiplier: float, steps: int, *,
                    allow_unaccounted: bool = False) -> dpe.DpEvent:
    """The Poisson event with q = batch_size / n. NOT valid for this sampler.

    Raises ValueError unless `allow_unaccounted=True`: the epsilon it gives is
    not a guarantee for shuffled batches (Chua et al. 2024).
    """
    if not allow_unaccounted:
      raise ValueError(
          "ShuffledBatchSampler does not match Poisson accounting: the epsilon "
          "of PoissonSampledDpEvent is not a guarantee for shuffled fixed-size "
          "batches. Use PoissonSampler, or dp_event() (valid, no "
          "amplification), or pass allow_unaccounted=True to get the Poisson "
          "event for comparison only.")
    return accounting.dp_sgd_event(noise_multiplier,
                                   self.batch_size / self.num_examples, steps)

  def state_dict(self) -> dict[str, Any]:
    return dict(num_examples=self.num_examples, batch_size=self.batch_size,
                seed=self.seed)

  @classmethod
  def from_state_dict(cls, state: dict[str, Any]) -> "ShuffledBatchSampler":
    return cls(**state)
