"""Dense layers over token sequences, in the layout XLA:CPU differentiates
fastest.

`dense(layer, x)` is `layer(x)` for x[B, T, ..., d_in], computed on x
reshaped to [B*T*..., d_in] and reshaped back: the same function and
parameters. Applied to [B, T, d] directly, the weight gradient is a
`dot_general` contracting two axes (B and T); XLA:CPU (jaxlib 0.10) lowers
it to a transposed copy of the output gradient followed by a dot with both
operands transposed, ~2.4x slower than the 2-D product (measured in
benchmarks/peers/README.md: 15-25% of a transformer's train step). Ghost
clipping (`trustjax.privacy.clipped_grad(method="ghost")`) follows the
folded rows (`_ghost_trace.Folded`), so per-example norms stay exact.
"""

from __future__ import annotations

import jax
from flax import nnx


def dense(layer: nnx.Module, x: jax.Array) -> jax.Array:
  """`layer(x)` (an `nnx.Linear`), with all leading axes folded into one."""
  if x.ndim <= 2:
    return layer(x)
  y = layer(x.reshape(-1, x.shape[-1]))
  return y.reshape(x.shape[:-1] + y.shape[-1:])
