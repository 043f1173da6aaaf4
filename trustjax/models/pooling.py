"""Masked pooling over the token axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x[B,T,D] over T, counting only positions where mask[B,T] is set.

  Rows with no real token give zeros (the denominator is clamped at 1), so a
  fully padded row never produces NaN. Written as a contraction (einsum), which
  XLA:CPU runs much faster than a broadcast multiply followed by a sum.
  """
  w = mask.astype(x.dtype)
  total = jnp.einsum("btd,bt->bd", x, w)
  count = jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)
  return total / count.astype(x.dtype)


def word_dropout_mask(key: jax.Array, mask: jax.Array, rate: float
                      ) -> jax.Array:
  """bool[B,T]: `mask` with each set position cleared with probability `rate`.

  Word dropout of a deep averaging network (Iyyer et al. 2015). A row that
  would lose every one of its tokens keeps them all, so no example is emptied
  by the augmentation; rows with no token stay empty. Row b's result depends
  only on `mask[b]` and the key.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"word_dropout_mask: rate={rate} must be in [0, 1)")
  mask = mask.astype(bool)
  kept = mask & jax.random.bernoulli(key, 1.0 - rate, mask.shape)
  return jnp.where(jnp.any(kept, axis=-1, keepdims=True), kept, mask)
