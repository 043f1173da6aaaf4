"""A plain ReLU multi-layer perceptron."""

from __future__ import annotations

from typing import Sequence

import jax
from flax import nnx


class MLP(nnx.Module):
  """Dense ReLU network `in_dim -> hidden[0] -> ... -> out_dim`.

  `__call__(x[B, in_dim]) -> [B, out_dim]`; every layer is an `nnx.Linear`
  (no normalisation across the batch), so rows are processed independently.
  """

  def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, *,
               dtype=None, rngs: nnx.Rngs):
    for name, v in (("in_dim", in_dim), ("out_dim", out_dim)):
      if int(v) < 1:
        raise ValueError(f"MLP: {name}={v} must be a positive integer")
    hidden = tuple(int(h) for h in hidden)
    if any(h < 1 for h in hidden):
      raise ValueError(f"MLP: hidden={hidden} must hold positive integers")
    dims = (int(in_dim), *hidden)
    self.layers = nnx.List([
        nnx.Linear(a, b, dtype=dtype, rngs=rngs)
        for a, b in zip(dims[:-1], dims[1:])])
    self.head = nnx.Linear(dims[-1], int(out_dim), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      x = jax.nn.relu(layer(x))
    return self.head(x)
