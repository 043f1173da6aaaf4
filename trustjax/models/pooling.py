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
