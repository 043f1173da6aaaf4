"""DP-FedAvg with client-level clipping, server Gaussian noise and optional
adaptive clipping (McMahan et al. 2018, "Learning differentially private
recurrent language models"; Andrew et al. 2021, "Differentially private
learning with adaptive clipping").

Guarantee (user-level DP, add/remove one client): each round, every client
is included independently with probability q (`poisson_cohort`), each
included client's model delta is clipped to l2 norm C, the server adds
N(0, (sigma_delta C)^2) to the SUM of clipped deltas and divides by the
EXPECTED cohort size q K (never the realised one). With adaptive clipping
each client also reports the bit [||delta|| <= C], summed with
N(0, sigma_b^2) noise; the two queries share one sample and together form
one Gaussian mechanism with noise multiplier sigma (so sigma_delta =
(sigma^-2 - (2 sigma_b)^-2)^-1/2). `dp_event(rounds)` is the matching
`dp_accounting` event: Poisson-sampled Gaussian(sigma) per round.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from trustjax.federated.algorithms import _local_sgd
from trustjax.federated.algorithms import Algorithm
from trustjax.federated.selection import Cohort
from trustjax.privacy import noise_normal
from trustjax.privacy.noise import add_gaussian_noise


def _global_norm(tree):
  return jnp.sqrt(sum(jnp.vdot(x, x).real for x in jax.tree.leaves(tree)))


@dataclasses.dataclass(frozen=True)
class DPFedAvgConfig:
  """Privacy settings of DP-FedAvg.

  l2_clip: initial client clip norm C > 0.
  noise_multiplier: sigma > 0 of the joint mechanism (what is accounted).
  num_clients: K, the population; sampling_rate q = expected_cohort / K.
  expected_cohort: q K, the divisor of the noisy sum.
  target_quantile / clip_lr / clipped_count_stddev: adaptive clipping
    (gamma, eta, sigma_b); `clipped_count_stddev=None` disables it.
  """
  l2_clip: float
  noise_multiplier: float
  num_clients: int
  expected_cohort: float
  server_lr: float = 1.0
  target_quantile: float = 0.5
  clip_lr: float = 0.2
  clipped_count_stddev: float | None = None

  def __post_init__(self):
    if self.l2_clip <= 0:
      raise ValueError(f"l2_clip={self.l2_clip} must be > 0")
    if self.noise_multiplier <= 0:
      raise ValueError(f"noise_multiplier={self.noise_multiplier} must be "
                       "> 0 (0 gives no privacy)")
    if not 0 < self.expected_cohort <= self.num_clients:
      raise ValueError(f"expected_cohort={self.expected_cohort} must lie in "
                       f"(0, num_clients={self.num_clients}]")
    if self.clipped_count_stddev is not None:
      sb = self.clipped_count_stddev / self.expected_cohort
      if self.clipped_count_stddev <= 0 or 2 * sb <= 0 or \
          self.noise_multiplier ** -2 - (2 * self.clipped_count_stddev) ** -2 <= 0:
        raise ValueError(
            f"clipped_count_stddev={self.clipped_count_stddev} is too small "
            f"for noise_multiplier={self.noise_multiplier}: need "
            f"2 * stddev > sigma so that the delta query keeps finite noise")

  @property
  def sampling_rate(self) -> float:
    return self.expected_cohort / self.num_clients

  @property
  def delta_noise_multiplier(self) -> float:
    """sigma_delta of the delta sum (sigma itself without adaptive clip)."""
    if self.clipped_count_stddev is None:
      return self.noise_multiplier
    return (self.noise_multiplier ** -2 -
            (2 * self.clipped_count_stddev) ** -2) ** -0.5

  def dp_event(self, rounds: int):
    from trustjax.privacy.accounting import dp_sgd_event
    return dp_sgd_event(self.noise_multiplier, self.sampling_rate, rounds)


def poisson_cohort(num_clients: int, sampling_rate: float, *, round: int,
                   seed: int, max_cohort_size: int) -> Cohort:
  """Each client included independently with probability q (unit weights).

  The cohort is padded to `max_cohort_size`; a draw exceeding it raises
  (truncation would change the accounted event) — choose a size many
  standard deviations above q K.
  """
  rng = np.random.default_rng([seed, round])
  chosen = np.flatnonzero(rng.random(num_clients) < sampling_rate)
  if len(chosen) > max_cohort_size:
    raise ValueError(f"round {round}: {len(chosen)} clients sampled, more "
                     f"than max_cohort_size={max_cohort_size}; raise it")
  m = max_cohort_size
  clients = np.zeros(m, np.int64)
  mask = np.zeros(m, bool)
  clients[:len(chosen)], mask[:len(chosen)] = chosen, True
  return Cohort(clients, mask.astype(np.float64), mask,
                np.where(mask, sampling_rate, 0.0))


def dp_fedavg(loss_fn, config: DPFedAvgConfig, *, client_lr: float,
              seed: int) -> Algorithm:
  """DP-FedAvg as an Algorithm; run it with cohorts from `poisson_cohort`.

  Server state: params, clip norm, round counter and the noise key. All
  updates travel in the "summed" aggregate (unit weights): the estimator is
  sum / expected_cohort, as the accounting assumes.

  Noise: round r draws from `key = fold_in(jax.random.key(seed), r)`, split
  into `(k_delta, k_bit)`. The delta sum gets
  `add_gaussian_noise(sum, sigma_delta * C, expected_cohort, k_delta)` (the
  DP-SGD noise of `trustjax.privacy`: one key per leaf from
  `split(k_delta, num_leaves)`, standard normals from
  `trustjax.privacy.noise_normal.normal`, f32, fused on XLA), the unclipped
  count `clipped_count_stddev * noise_normal.normal(k_bit, ())`. Every draw
  is a function of (seed, round) only, so all processes of a multi-host run
  and all device counts draw the same noise.
  """
  sigma_d = config.delta_noise_multiplier
  adaptive = config.clipped_count_stddev is not None

  def server_init(params):
    return {"params": params,
            "l2_clip": jnp.asarray(config.l2_clip, jnp.float32),
            "round": jnp.zeros((), jnp.int32),
            "noise_key": jax.random.key_data(jax.random.key(seed))}

  def client_update(server_state, client_state, batches, rng):
    g = server_state["params"]
    p, n, loss = _local_sgd(loss_fn, g, batches, rng, client_lr)
    delta = jax.tree.map(jnp.subtract, p, g)
    norm = _global_norm(delta)
    c = server_state["l2_clip"]
    scale = jnp.minimum(1.0, c / jnp.maximum(norm, 1e-12))
    clipped = jax.tree.map(lambda x: x * scale, delta)
    return ({"summed": {"delta": clipped,
                        "unclipped": (norm <= c).astype(jnp.float32)}},
            client_state, {"loss": loss, "steps": n, "norm": norm})

  def server_update(server_state, aggregate, cohort_size):
    del cohort_size
    key = jax.random.fold_in(jax.random.wrap_key_data(
        server_state["noise_key"]), server_state["round"])
    k_delta, k_bit = jax.random.split(key)
    c = server_state["l2_clip"]
    mean_delta = add_gaussian_noise(aggregate["summed"]["delta"], sigma_d * c,
                                    config.expected_cohort, k_delta)
    params = jax.tree.map(lambda p, d: p + config.server_lr * d,
                          server_state["params"], mean_delta)
    new_c = c
    if adaptive:
      bits = aggregate["summed"]["unclipped"] + \
          config.clipped_count_stddev * noise_normal.normal(k_bit, ())
      frac = bits / config.expected_cohort
      new_c = c * jnp.exp(-config.clip_lr * (frac - config.target_quantile))
    return {"params": params, "l2_clip": new_c,
            "round": server_state["round"] + 1,
            "noise_key": server_state["noise_key"]}

  # Client-level clipping uses the norm of the whole delta, which rows
  # outside the client's ids do not change (they are zero).
  return Algorithm(server_init, client_update, server_update,
                   name="dp_fedavg", row_sparse_safe=True)
