"""Pure per-example classifier losses over a params pytree, and evaluation.

Trainer convention: `loss_fn(params, batch, rng) -> (per_example_loss[B], aux)`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


def classifier_logits(model, batch: Mapping[str, Any]) -> jax.Array:
  """Logits of a classifier on `batch` in evaluation mode (no dropout):
  `model(ids, mask)` for token inputs, `model(x)` for feature inputs."""
  return _apply(model, batch, False, None)


def _apply(model, batch: Mapping[str, Any], train: bool, rng) -> jax.Array:
  """Logits of `model` on `batch`: token inputs ("ids", "mask") or "x"."""
  if "ids" in batch:
    if train:
      return model(batch["ids"], batch["mask"], deterministic=False, rngs=rng)
    return model(batch["ids"], batch["mask"])
  if "x" in batch:
    return model(batch["x"])
  raise ValueError(f"batch has keys {sorted(batch)}; a classifier batch needs "
                   "'ids' and 'mask' (token models) or 'x' (feature models), "
                   "plus 'label'")


def classifier_loss_fn(graphdef: Any, *, rest: Any = None, train: bool = False,
                       extra_state: Any = None) -> Callable:
  """Per-example cross entropy of an NNX classifier split into pure pieces.

  Use with `graphdef, params, rest = nnx.split(model, nnx.Param, ...)`.

  Args:
    graphdef: the model's graph definition.
    rest: the non-parameter state from the same split (None or empty when the
      model has only `nnx.Param`s). `extra_state` is an accepted alias.
    train: when True dropout is active, driven by the `rng` argument of the
      returned function (a jax key; required then). When False `rng` is
      ignored and may be None.

  Returns:
    `loss_fn(params, batch, rng) -> (ce f32[B], {"logits": f32[B,C]})` for a
    batch dict with "ids" int[B,T], "mask" [B,T] (real tokens) and "label"
    int[B] (or "x" [B,F] and "label" for feature models such as `MLP`).
    `ce` is NOT averaged: entry i is example i's cross entropy, and depends
    on example i only (no batch statistics), so `jax.vmap` of `loss_fn` over
    single examples (leading dim 1) gives the same values as the batched call.
  """
  if rest is not None and extra_state is not None:
    raise ValueError("classifier_loss_fn: pass the non-param state as `rest` "
                     "or `extra_state`, not both")
  rest = rest if rest is not None else extra_state

  def loss_fn(params, batch, rng):
    model = (nnx.merge(graphdef, params) if rest is None
             else nnx.merge(graphdef, params, rest))
    logits = _apply(model, batch, train, rng).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits,
                                                         batch["label"])
    return ce, {"logits": logits}

  return loss_fn


def accuracy(logits: jax.Array, labels: jax.Array,
             example_mask: jax.Array | None = None) -> jax.Array:
  """Fraction of real rows whose argmax logit equals the label.

  logits[B,C], labels int[B], example_mask bool[B] (None = all rows real).
  Padding rows are ignored; NaN when there is no real row. Works on numpy or
  jax arrays and under jit; returns a float32 scalar array.
  """
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  if example_mask is None:
    return jnp.mean(correct)
  m = jnp.asarray(example_mask).astype(jnp.float32)
  n = jnp.sum(m)
  return jnp.where(n > 0, jnp.dot(correct, m) / jnp.maximum(n, 1.0), jnp.nan)


@functools.partial(jax.jit, static_argnums=0)
def _eval_batch(graphdef, params, rest, batch):
  model = nnx.merge(graphdef, params, rest)
  logits = _apply(model, batch, False, None).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  return logits, ce


def evaluate(graphdef: Any, params: Any, arrays: Mapping[str, np.ndarray], *,
             rest: Any = None, batch_size: int = 512,
             return_logits: bool = False) -> dict[str, Any]:
  """Accuracy and mean cross entropy of a classifier over a whole data set.

  `arrays` holds "label" int[N] and the model inputs ("ids", "mask" [N,T], or
  "x" [N,F]). Rows are evaluated in fixed-size batches of `batch_size` (the
  last one padded and masked out), so the forward pass is compiled once per
  (graphdef, shapes) and reused across calls. Dropout is off.

  Returns:
    {"accuracy": float, "loss": float (mean CE), "num_examples": N}, plus
    "logits" f32[N,C] (numpy) when `return_logits`.
  """
  if batch_size < 1:
    raise ValueError(f"evaluate: batch_size={batch_size} must be >= 1")
  if "label" not in arrays:
    raise ValueError(f"evaluate: arrays has keys {sorted(arrays)}; "
                     "'label' is required")
  if rest is None:
    rest = nnx.State({})
  keys = [k for k in ("ids", "mask", "x", "label") if k in arrays]
  n = len(arrays["label"])
  all_logits, correct, total_ce = [], 0.0, 0.0
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    batch = {}
    for k in keys:
      a = np.asarray(arrays[k][start:stop])
      pad = np.zeros((batch_size - (stop - start),) + a.shape[1:], a.dtype)
      batch[k] = np.concatenate([a, pad]) if len(pad) else a
    logits, ce = _eval_batch(graphdef, params, rest, batch)
    logits = np.asarray(logits)[:stop - start]
    ce = np.asarray(ce)[:stop - start]
    correct += float(np.sum(logits.argmax(-1) == arrays["label"][start:stop]))
    total_ce += float(np.sum(ce, dtype=np.float64))
    if return_logits:
      all_logits.append(logits)
  out = {"accuracy": correct / n if n else float("nan"),
         "loss": total_ce / n if n else float("nan"),
         "num_examples": n}
  if return_logits:
    out["logits"] = (np.concatenate(all_logits) if all_logits
                     else np.zeros((0, 0), np.float32))
  return out
