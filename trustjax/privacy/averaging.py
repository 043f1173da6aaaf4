"""Exponential moving average of DP-SGD iterates (free post-processing).

The average is a function of the released (noisy) iterates only, so it costs
no privacy: every guarantee of the training run holds for it unchanged
(post-processing). Averaging the last iterates cancels part of the noise that
each one carries; De et al. (2022), "Unlocking high-accuracy differentially
private image classification through scale", Sec. 3.2, evaluate DP-SGD with
an EMA of the parameters (decay 0.999 to 0.9999, with warm-up).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_decay_at(decay: float | jax.Array, count: jax.Array,
                 warmup: bool = True) -> jax.Array:
  """The decay used at update `count` (0 for the first update).

  With `warmup`, min(decay, (1 + count) / (10 + count)) (the warm-up of
  TensorFlow's `ExponentialMovingAverage`, as used by De et al. 2022): early
  iterates, far from the end of training, are forgotten quickly.
  """
  decay = jnp.asarray(decay, jnp.float32)
  if not warmup:
    return decay
  c = jnp.asarray(count, jnp.float32)
  return jnp.minimum(decay, (1.0 + c) / (10.0 + c))


def ema_update(ema: Any, params: Any, count: jax.Array,
               decay: float | jax.Array, warmup: bool = True) -> Any:
  """ema <- d * ema + (1 - d) * params, with d = `ema_decay_at(...)`.

  Args:
    ema: the current average, a pytree shaped like `params`.
    params: the parameters after update `count` (same pytree structure).
    count: int scalar, number of EMA updates done before this one.
    decay: the target decay in [0, 1).
    warmup: use the warm-up schedule of `ema_decay_at`.

  Returns:
    The new average (same structure and dtypes as `ema`).
  """
  d = ema_decay_at(decay, count, warmup)
  return jax.tree.map(
      lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)
