"""Small pytree helpers shared by clipping, noise and adaptive clipping.

A clipping threshold `l2_clip` is either one number (global clipping: the whole
per-example gradient is one group) or a pytree that is a *prefix* of the
params pytree whose leaves are numbers (per-layer / per-group clipping: each
leaf's subtree of the gradient is clipped to that leaf's threshold). Groups are
ordered as `jax.tree.leaves(l2_clip)`; that order is the `L` axis of
`ClipStats.per_layer_norms[B, L]` and of the adaptive per-layer helpers.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when x is a Python/numpy number or a concrete (non-traced) array."""
  return not isinstance(x, jax.core.Tracer)


def clip_leaves(l2_clip: Any) -> list:
  """Thresholds of `l2_clip` in group order (one element if a scalar)."""
  leaves = jax.tree.leaves(l2_clip)
  if not leaves:
    raise ValueError(f"l2_clip={l2_clip!r} has no leaves; pass a positive "
                     "number or a pytree of positive numbers")
  return leaves


def is_per_layer(l2_clip: Any) -> bool:
  """True when `l2_clip` is a pytree of thresholds (not a single number)."""
  return not jax.tree_util.treedef_is_leaf(jax.tree.structure(l2_clip))


def validate_l2_clip(l2_clip: Any, name: str = "l2_clip") -> None:
  """Raises ValueError unless every concrete threshold is finite and > 0.

  Traced thresholds (e.g. an adaptive clip norm carried in a jitted state)
  cannot be checked here and are accepted.
  """
  for c in clip_leaves(l2_clip):
    if not is_concrete(c):
      continue
    arr = np.asarray(c)
    if arr.shape != ():
      raise ValueError(f"{name} leaves must be scalars; got shape {arr.shape}")
    v = float(arr)
    if not (math.isfinite(v) and v > 0):
      raise ValueError(f"{name} must be finite and > 0; got {v} "
                       f"(in {name}={l2_clip!r})")


def total_l2_sensitivity(l2_clip: Any) -> Any:
  """L2 sensitivity of a sum of clipped per-example gradients, per example.

  Each example's clipped gradient has group norms `<= C_l`, so its full norm is
  `<= sqrt(sum_l C_l^2)`; under add/remove-one adjacency this is the L2
  sensitivity of the sum (twice it under replace-one). For a scalar `l2_clip`
  it is `l2_clip` itself. Returns a Python float when all thresholds are
  concrete, a traced scalar otherwise.
  """
  leaves = clip_leaves(l2_clip)
  if all(is_concrete(c) for c in leaves):
    return float(math.sqrt(sum(float(c) ** 2 for c in leaves)))
  return jnp.sqrt(sum(jnp.square(jnp.asarray(c, jnp.float32))
                      for c in leaves))


def group_subtrees(l2_clip: Any, tree: Any) -> list:
  """Splits `tree` into the subtrees that the leaves of `l2_clip` govern."""
  treedef = jax.tree.structure(l2_clip)
  try:
    return treedef.flatten_up_to(tree)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "l2_clip must be a number or a pytree prefix of the params (same "
        f"container types and keys, thresholds as leaves); got l2_clip "
        f"structure {treedef} which does not match the params: {e}") from e


def ungroup(l2_clip: Any, subtrees: Sequence[Any]) -> Any:
  """Inverse of `group_subtrees`."""
  return jax.tree.structure(l2_clip).unflatten(list(subtrees))


def unflatten_clips(l2_clip_template: Any, values: Any) -> Any:
  """A pytree shaped like `l2_clip_template` holding `values[L]` in group order.

  Use it to turn per-layer thresholds estimated as an array (e.g. by
  `private_layer_quantiles`) back into an `l2_clip` pytree.
  """
  leaves = clip_leaves(l2_clip_template)
  if len(values) != len(leaves):
    raise ValueError(f"values has {len(values)} entries but l2_clip_template "
                     f"has {len(leaves)} groups")
  return jax.tree.structure(l2_clip_template).unflatten(
      [values[i] for i in range(len(leaves))])


def uniform_per_layer_clip(params: Any, total_l2_clip: float) -> Any:
  """Per-leaf thresholds `total / sqrt(num_leaves)`: total sensitivity stays.

  Returns a pytree with the structure of `params` (one group per parameter
  array), whose `total_l2_sensitivity` equals `total_l2_clip`.
  """
  validate_l2_clip(total_l2_clip, "total_l2_clip")
  n = len(jax.tree.leaves(params))
  if n == 0:
    raise ValueError("params has no leaves")
  c = float(total_l2_clip) / math.sqrt(n)
  return jax.tree.map(lambda _: c, params)
