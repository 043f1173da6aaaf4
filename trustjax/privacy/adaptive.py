"""Adaptive and per-layer clip norms from private quantiles of gradient norms.

Two recipes, both pure functions a train loop calls (no hidden state):

1. Quantile-tracking clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021,
   "Differentially Private Learning with Adaptive Clipping", NeurIPS,
   https://arxiv.org/abs/1905.03871). Each step, with the clip norm C_t used for
   this step's `clipped_grad`:
     b_noisy = (sum_{real i} (1[||g_i|| <= C_t] - 1/2) + N(0, sigma_b^2))
               / expected_batch_size + 1/2
     C_{t+1} = C_t * exp(-eta * (b_noisy - target_quantile))      (geometric)
   The indicators are centred (-1/2, +1/2) as in the paper and TF Privacy's
   `QuantileAdaptiveClipSumQuery`, so the count has add/remove sensitivity
   1/2: its noise multiplier is `2 sigma_b`. Releasing the gradient sum with
   noise multiplier `sigma_grad` and the count together is, by the Gaussian
   composition rule (paper, Thm. 1), exactly one Gaussian mechanism with
   `sigma = (sigma_grad^-2 + (2 sigma_b)^-2)^(-1/2)`; so to spend the budget
   of a stated sigma use `gradient_noise_multiplier(sigma, sigma_b)` for the
   gradient noise and account ONE Gaussian of multiplier sigma per step (same
   sampling). Per-layer vector version: L counts jointly have sensitivity
   sqrt(L)/2, multiplier `2 sigma_b / sqrt(L)` (`num_groups=L`).

2. eDP-SGD per-layer thresholds (Dupuy, Arava, Gupta, Rumshisky 2022, "An
   Efficient DP-SGD Mechanism for Large Scale NLU Models", ICASSP):
   `private_layer_quantiles` estimates, for each of L layers, a quantile of
   the per-example layer norms from a noisy histogram over a fixed candidate
   grid. It is a separate Gaussian query (sensitivity sqrt(L) under
   add/remove: each example adds 1 to one bin per layer) that must be composed
   in the accountant; it returns its (noise_multiplier, l2_sensitivity).

Everything here is NOT accounted by itself: the caller adds the events.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class GaussianQuery(NamedTuple):
  """Accounting description of one Gaussian release.

  `noise_multiplier = noise_std / l2_sensitivity` is what a
  `dp_accounting.GaussianDpEvent` takes (wrap it in the sampling event of the
  batch it was computed on, e.g. PoissonSampledDpEvent).
  """
  noise_multiplier: float
  l2_sensitivity: float
  noise_std: float


def count_noise_multiplier(clip_count_stddev: float,
                           num_groups: int = 1) -> float:
  """Noise multiplier of the centred clipped-count release: 2 sigma_b / sqrt(L)

  (L counts, each of add/remove sensitivity 1/2, jointly sqrt(L)/2).
  """
  if not clip_count_stddev > 0:
    raise ValueError(f"clip_count_stddev must be > 0; got {clip_count_stddev}")
  if num_groups < 1:
    raise ValueError(f"num_groups must be >= 1; got {num_groups}")
  return 2.0 * clip_count_stddev / math.sqrt(num_groups)


def gradient_noise_multiplier(noise_multiplier: float,
                              clip_count_stddev: float,
                              num_groups: int = 1) -> float:
  """sigma_grad with (sigma_grad^-2 + z_b^-2)^(-1/2) == noise_multiplier.

  Andrew et al. 2021, Thm. 1: `sigma_grad = (sigma^-2 - (2 sigma_b)^-2)^(-1/2)`
  (with `z_b = 2 sigma_b / sqrt(L)` for L per-layer counts). Then gradient sum
  plus clipped count together are one Gaussian mechanism of multiplier
  `noise_multiplier`, which is what the accountant should compose (e.g.
  `GaussianMechanism(noise_multiplier=sigma_grad, aux_noise_multipliers=
  (count_noise_multiplier(sigma_b, L),), ...)`, whose
  `mechanism.effective_noise_multiplier` gives back `noise_multiplier`).

  Raises:
    ValueError: if `z_b <= noise_multiplier` (the count noise alone would
      already spend more than the whole budget).
  """
  if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
    raise ValueError(f"noise_multiplier must be finite and > 0; got "
                     f"{noise_multiplier}")
  z_b = count_noise_multiplier(clip_count_stddev, num_groups)
  if z_b <= noise_multiplier:
    raise ValueError(
        f"clip_count_stddev={clip_count_stddev} is too small for "
        f"noise_multiplier={noise_multiplier} (num_groups={num_groups}): need "
        f"2*clip_count_stddev/sqrt(num_groups)={z_b} > noise_multiplier; the "
        "paper's default is clip_count_stddev = expected_batch_size / 20")
  return float((noise_multiplier ** -2 - z_b ** -2) ** -0.5)


def quantile_clip_update(l2_clip: Any, norms: jax.Array, mask: jax.Array | None,
                         key: jax.Array, *, target_quantile: float,
                         learning_rate: float, clip_count_stddev: float,
                         expected_batch_size: float
                         ) -> tuple[jax.Array, jax.Array]:
  """One geometric quantile step of Andrew et al. 2021 (pure, jittable).

  Args:
    l2_clip: f32[] (global) or f32[L] (per-layer) clip norms C_t that were
      used for this step's clipped sum.
    norms: f32[B] pre-clip per-example norms (`ClipStats.per_example_norms`)
      or f32[B, L] (`ClipStats.per_layer_norms`) matching `l2_clip`.
    mask: bool[B] real rows (None: all real). Padding rows count nothing.
    key: jax.random key for the count noise.
    target_quantile: gamma in [0, 1], fraction of examples to leave unclipped.
    learning_rate: eta > 0 of the geometric update.
    clip_count_stddev: sigma_b, std of the noise on the centred count.
    expected_batch_size: q * n (not the realised count: that would leak).

  Returns:
    `(new_l2_clip, noisy_fraction_unclipped)`, shapes of `l2_clip`.
    Norms exactly equal to C count as unclipped (`clipped_grad` leaves them).
  """
  if not 0.0 <= target_quantile <= 1.0:
    raise ValueError(f"target_quantile must be in [0, 1]; got "
                     f"{target_quantile}")
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0; got {learning_rate}")
  if not clip_count_stddev >= 0:
    raise ValueError(f"clip_count_stddev must be >= 0; got "
                     f"{clip_count_stddev}")
  if not expected_batch_size > 0:
    raise ValueError(f"expected_batch_size must be > 0; got "
                     f"{expected_batch_size}")
  c = jnp.asarray(l2_clip, jnp.float32)
  norms = jnp.asarray(norms, jnp.float32)
  if norms.ndim != c.ndim + 1:
    raise ValueError(f"norms shape {norms.shape} does not match l2_clip shape "
                     f"{c.shape}: need [B] for a scalar clip, [B, L] for [L]")
  b = norms.shape[0]
  m = (jnp.ones((b,), jnp.float32) if mask is None
       else jnp.asarray(mask).astype(jnp.float32))
  centred = (norms <= c[None]).astype(jnp.float32) - 0.5    # [B] or [B, L]
  count = jnp.tensordot(m, centred, axes=1)                 # [] or [L]
  noise = clip_count_stddev * jax.random.normal(key, c.shape, jnp.float32)
  frac = (count + noise) / expected_batch_size + 0.5
  new_c = c * jnp.exp(-learning_rate * (frac - target_quantile))
  return new_c, frac


def private_layer_quantiles(per_layer_norms: jax.Array,
                            mask: jax.Array | None, quantile: float,
                            candidate_grid: Any, noise_std: float,
                            key: jax.Array) -> tuple[jax.Array, GaussianQuery]:
  """Per-layer private quantiles of per-example norms via a noisy histogram.

  For each layer l, each real example adds 1 to the bin k of its norm in
  `(grid[k-1], grid[k]]` (bin K: above the largest candidate). Gaussian noise
  N(0, noise_std^2) is added to every bin of the [L, K+1] histogram; the
  threshold of layer l is the smallest candidate whose noisy cumulative count
  reaches `quantile` times the noisy total (the largest candidate if none).
  Used by eDP-SGD (Dupuy et al., ICASSP 2022) to set per-layer clip norms.

  Accounting: the histogram is one Gaussian query with add/remove L2
  sensitivity sqrt(L) (one unit per layer per example), noise multiplier
  `noise_std / sqrt(L)`; compose it with the training events (wrapped in the
  sampling event of the batch it used). The thresholds are post-processing.

  Args:
    per_layer_norms: f32[B, L] (`ClipStats.per_layer_norms`).
    mask: bool[B] real rows or None.
    quantile: in [0, 1].
    candidate_grid: increasing f32[K] positive candidate thresholds
      (data-independent, e.g. `np.geomspace(1e-3, 1e2, 64)`).
    noise_std: std of the noise per bin (> 0).
    key: jax.random key.

  Returns:
    `(thresholds f32[L], GaussianQuery)`; `unflatten_clips` turns the
    thresholds into an `l2_clip` pytree.
  """
  grid = np.asarray(candidate_grid, np.float64)
  if grid.ndim != 1 or grid.size < 1 or np.any(np.diff(grid) <= 0) or \
      np.any(grid <= 0):
    raise ValueError("candidate_grid must be a 1-D strictly increasing array "
                     f"of positive thresholds; got {candidate_grid!r}")
  if not 0.0 <= quantile <= 1.0:
    raise ValueError(f"quantile must be in [0, 1]; got {quantile}")
  if not (math.isfinite(noise_std) and noise_std > 0):
    raise ValueError(f"noise_std must be finite and > 0; got {noise_std}")
  norms = jnp.asarray(per_layer_norms, jnp.float32)
  if norms.ndim != 2:
    raise ValueError(f"per_layer_norms must be [B, L]; got {norms.shape}")
  b, num_layers = norms.shape
  m = (jnp.ones((b,), jnp.float32) if mask is None
       else jnp.asarray(mask).astype(jnp.float32))
  g = jnp.asarray(grid, jnp.float32)
  k = grid.size
  bins = jnp.searchsorted(g, norms, side="left")            # [B, L] in 0..K
  onehot = jax.nn.one_hot(bins, k + 1, dtype=jnp.float32)   # [B, L, K+1]
  hist = jnp.einsum("b,blk->lk", m, onehot)
  noisy = hist + noise_std * jax.random.normal(key, hist.shape, jnp.float32)
  cdf = jnp.cumsum(noisy, axis=1)                           # [L, K+1]
  total = cdf[:, -1:]
  reached = cdf[:, :k] >= quantile * total                  # [L, K]
  first = jnp.where(jnp.any(reached, axis=1), jnp.argmax(reached, axis=1),
                    k - 1)
  thresholds = g[first]
  sens = math.sqrt(num_layers)
  return thresholds, GaussianQuery(noise_multiplier=float(noise_std / sens),
                                   l2_sensitivity=float(sens),
                                   noise_std=float(noise_std))
