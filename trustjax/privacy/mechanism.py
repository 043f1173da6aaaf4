"""`GaussianMechanism`: one object for the noise scale and its accounting.

DP-SGD's noise (added on device) and its privacy accounting (on the host) are
two readings of the same few numbers. Holding them in one frozen object means
`noise_std` and `dp_event` cannot drift apart (the jax_privacy 2.x design).

Per step the mechanism releases, on a Poisson sample of the data (each example
included independently with probability `sampling_rate`; truncated to
`max_batch_size` when set),
  sum_i clip(g_i, l2_clip) + N(0, (noise_multiplier * l2_clip)^2 I)
and, optionally, auxiliary Gaussian queries on the SAME sample (for example the
noisy count of unclipped examples of adaptive clipping, Andrew et al. 2021).
Adjacency: add/remove one example.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from dp_accounting import dp_event as dpe

from trustjax.privacy import accounting


def effective_noise_multiplier(noise_multiplier: float,
                               aux_noise_multipliers: Sequence[float] = ()
                               ) -> float:
  """Noise multiplier of the joint Gaussian query (main + auxiliary).

  Queries with l2 sensitivities Delta_j and isotropic noise stds
  z_j * Delta_j, computed on the same sample, form one Gaussian mechanism
  (after scaling each by 1 / z_j) with noise multiplier
    z_eff = (sum_j z_j^-2)^(-1/2)
  (Andrew et al. 2021, "Differentially Private Learning with Adaptive
  Clipping", Sec. 3.1; TF Privacy's QuantileAdaptiveClipSumQuery). Composing
  separately Poisson-sampled events instead would assume independent samples
  and can underestimate epsilon when the queries share one sample.
  """
  total = noise_multiplier**-2 + sum(z**-2 for z in aux_noise_multipliers)
  return total**-0.5


@dataclasses.dataclass(frozen=True)
class GaussianMechanism:
  """Noise scale and DP event of Poisson-sampled DP-SGD, from one source.

  Attributes:
    l2_clip: C > 0, the TOTAL l2 sensitivity of the summed query: the clip
      norm for global clipping, sqrt(sum_l C_l^2) for per-layer clipping with
      thresholds C_l.
    noise_multiplier: sigma > 0; the noise added to the SUM has std
      `noise_std = sigma * C`.
    expected_batch_size: q * n > 0, the divisor that turns the noisy sum into
      an average (not the realised batch size, which would leak it).
    sampling_rate: q in (0, 1], the Poisson inclusion probability.
    num_examples: n, optional; when given, expected_batch_size must equal q*n
      (relative tolerance 1e-9) and q*n <= n is checked.
    max_batch_size: truncation size of the sampler (requires num_examples);
      the event then is the truncated one (see `accounting.dp_sgd_event`).
    aux_noise_multipliers: noise multipliers z_j of extra Gaussian queries on
      the same sample, each relative to that query's own l2 sensitivity under
      add/remove (e.g. the count of examples with norm <= C, with values
      shifted to +-1/2 so its sensitivity is 1/2: if N(0, s^2) is added,
      z = s / (1/2) = 2 s). They are accounted jointly with the gradient query
      via `effective_noise_multiplier`.
    extra_events_per_step: further DpEvents composed once per step, for
      mechanisms that do NOT share the gradient's sample (their own sampling
      must be part of the event).
  """

  l2_clip: float
  noise_multiplier: float
  expected_batch_size: float
  sampling_rate: float
  num_examples: int | None = None
  max_batch_size: int | None = None
  aux_noise_multipliers: tuple[float, ...] = ()
  extra_events_per_step: tuple[dpe.DpEvent, ...] = ()

  def __post_init__(self):
    accounting._check_positive("l2_clip", self.l2_clip)
    accounting._check_positive("noise_multiplier", self.noise_multiplier)
    accounting._check_positive("expected_batch_size", self.expected_batch_size)
    q = accounting._check_rate("sampling_rate", self.sampling_rate)
    object.__setattr__(self, "aux_noise_multipliers",
                       tuple(float(z) for z in self.aux_noise_multipliers))
    object.__setattr__(self, "extra_events_per_step",
                       tuple(self.extra_events_per_step))
    for i, z in enumerate(self.aux_noise_multipliers):
      accounting._check_positive(f"aux_noise_multipliers[{i}]", z)
    for i, e in enumerate(self.extra_events_per_step):
      if not isinstance(e, dpe.DpEvent):
        raise ValueError(f"extra_events_per_step[{i}]={e!r} must be a "
                         "dp_accounting DpEvent.")
    if self.num_examples is not None:
      n = accounting._check_int("num_examples", self.num_examples, 1)
      if self.expected_batch_size > n:
        raise ValueError(f"expected_batch_size={self.expected_batch_size!r} "
                         f"must be <= num_examples={n}.")
      if not math.isclose(self.expected_batch_size, q * n, rel_tol=1e-9):
        raise ValueError(
            f"expected_batch_size={self.expected_batch_size!r} must equal "
            f"sampling_rate * num_examples = {q} * {n} = {q * n!r}.")
    if self.max_batch_size is not None:
      accounting._check_int("max_batch_size", self.max_batch_size, 1)
      if self.num_examples is None:
        raise ValueError("max_batch_size requires num_examples.")

  @classmethod
  def from_sampler(cls, sampler, l2_clip: float, noise_multiplier: float,
                   **kwargs) -> "GaussianMechanism":
    """The mechanism for batches drawn by a `PoissonSampler`."""
    if not getattr(sampler, "matches_poisson_accounting", False):
      raise ValueError(f"sampler={sampler!r} does not match Poisson "
                       "accounting; GaussianMechanism needs a PoissonSampler.")
    return cls(l2_clip=l2_clip, noise_multiplier=noise_multiplier,
               expected_batch_size=sampler.expected_batch_size,
               sampling_rate=sampler.sampling_rate,
               num_examples=sampler.num_examples,
               max_batch_size=sampler.max_batch_size, **kwargs)

  @property
  def noise_std(self) -> float:
    """Std of the Gaussian noise added to the SUM of clipped gradients."""
    return self.noise_multiplier * self.l2_clip

  @property
  def noise_std_of_mean(self) -> float:
    """noise_std / expected_batch_size: the std on the averaged gradient."""
    return self.noise_std / self.expected_batch_size

  @property
  def effective_noise_multiplier(self) -> float:
    """Joint noise multiplier of gradient and auxiliary queries."""
    return effective_noise_multiplier(self.noise_multiplier,
                                      self.aux_noise_multipliers)

  def step_event(self) -> dpe.DpEvent:
    """The DpEvent of one step."""
    main = accounting.dp_sgd_event(
        self.effective_noise_multiplier, self.sampling_rate, 1,
        truncated_batch_size=self.max_batch_size,
        num_examples=self.num_examples).event
    if not self.extra_events_per_step:
      return main
    return dpe.ComposedDpEvent([main, *self.extra_events_per_step])

  def dp_event(self, steps: int) -> dpe.DpEvent:
    """The DpEvent of `steps` steps (NoOpDpEvent for 0)."""
    steps = accounting._check_int("steps", steps, 0)
    if steps == 0:
      return dpe.NoOpDpEvent()
    return dpe.SelfComposedDpEvent(self.step_event(), steps)

  def epsilon(self, steps: int, delta: float, *, accountant: str = "pld",
              **kwargs) -> float:
    """Epsilon after `steps` steps at `delta` (see accounting)."""
    if self.num_examples is not None:
      accounting.check_delta(delta, self.num_examples)
    return accounting.epsilon_from_event(self.dp_event(steps), delta,
                                         accountant=accountant, **kwargs)

  def replace(self, **changes) -> "GaussianMechanism":
    """A copy with some fields changed (validated again)."""
    return dataclasses.replace(self, **changes)

  @classmethod
  def from_target_epsilon(cls,
                          *,
                          l2_clip: float,
                          target_epsilon: float,
                          delta: float,
                          steps: int,
                          sampling_rate: float,
                          num_examples: int,
                          max_batch_size: int | None = None,
                          aux_noise_multipliers: Sequence[float] = (),
                          extra_events_per_step: Sequence[dpe.DpEvent] = (),
                          accountant: str = "pld",
                          tol: float = 0.01,
                          **calibration_kwargs) -> "GaussianMechanism":
    """The mechanism whose `steps`-step epsilon is <= target (within tol).

    Calibrates the gradient noise multiplier with everything else (auxiliary
    queries, extra events, truncation) fixed; see `accounting.calibrate_event`.
    delta must be < 1/num_examples.
    """
    accounting.check_delta(delta, num_examples)
    steps = accounting._check_int("steps", steps, 1)
    q = accounting._check_rate("sampling_rate", sampling_rate)
    n = accounting._check_int("num_examples", num_examples, 1)

    def make(sigma):
      return cls(l2_clip=l2_clip, noise_multiplier=sigma,
                 expected_batch_size=q * n, sampling_rate=q, num_examples=n,
                 max_batch_size=max_batch_size,
                 aux_noise_multipliers=tuple(aux_noise_multipliers),
                 extra_events_per_step=tuple(extra_events_per_step))

    make(1.0)  # validate the other arguments before calibrating.
    sigma = accounting.calibrate_event(
        lambda s: make(s).dp_event(steps), target_epsilon, delta,
        accountant=accountant, tol=tol, **calibration_kwargs)
    return make(sigma)
