"""Pure per-example losses over a params pytree (the trainers' convention).

`loss_fn(params, batch, rng) -> (per_example_loss[B], aux)`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


def classifier_loss_fn(graphdef: Any, *, rest: Any = None,
                       train: bool = False) -> Callable:
  """Cross entropy of a classifier given as `nnx.split(model, nnx.Param, ...)`.

  Args:
    graphdef: the model's graph definition.
    rest: the non-parameter state from the same split (may be None or empty).
    train: dropout on (keyed by `rng`) when True.

  Returns:
    `loss_fn(params, batch, rng) -> (ce[B], {"logits": logits[B,C]})` for a
    batch dict with "ids" int[B,T], "mask" [B,T] and "label" int[B]. Each
    example's loss depends on that example only, so the function can be
    `vmap`ped over single examples (leading dim 1) for per-example gradients.
  """

  def loss_fn(params, batch, rng):
    model = nnx.merge(graphdef, params, rest) if rest is not None else \
        nnx.merge(graphdef, params)
    logits = model(batch["ids"], batch["mask"], deterministic=not train,
                   rngs=rng if train else None)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["label"])
    return ce, {"logits": logits}

  return loss_fn


def accuracy(logits, labels, example_mask=None) -> float:
  """Fraction of real rows (example_mask) whose argmax equals the label."""
  pred = np.asarray(logits).argmax(-1)
  ok = pred == np.asarray(labels)
  if example_mask is None:
    return float(ok.mean())
  m = np.asarray(example_mask, bool)
  return float(ok[m].mean()) if m.any() else float("nan")
