"""Fixed-shape numpy batches: padding rows plus an `example_mask`.

Shapes never change, so jitted steps compile once.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np


def gather_batch(arrays: Mapping[str, np.ndarray], indices: np.ndarray,
                 example_mask: np.ndarray) -> dict[str, np.ndarray]:
  """Rows `indices` of every array; rows where example_mask is False zeroed.

  For fixed-shape index batches such as `PoissonSampler.batch(step)`.

  Args:
    arrays: name -> array with a leading example axis [N, ...].
    indices: int[B] row indices (values at padding positions are ignored).
    example_mask: bool[B], True for real rows.

  Returns:
    name -> [B, ...] copies (the inputs are not modified), padding rows all
    zeros, plus "example_mask" (bool[B]).
  """
  indices = np.asarray(indices)
  example_mask = np.asarray(example_mask, bool)
  if indices.ndim != 1 or indices.shape != example_mask.shape:
    raise ValueError(f"indices shape {indices.shape} != example_mask shape "
                     f"{example_mask.shape}")
  out = {}
  for k, v in arrays.items():
    rows = np.asarray(v)[indices]
    rows[~example_mask] = 0
    out[k] = rows
  out["example_mask"] = example_mask
  return out


def batch_iterator(arrays: Mapping[str, np.ndarray], batch_size: int, *,
                   seed: int, epoch: int, shuffle: bool = True,
                   drop_remainder: bool = False
                   ) -> Iterator[dict[str, np.ndarray]]:
  """One epoch of batches of exactly `batch_size` rows.

  The order is a permutation drawn from `default_rng([seed, epoch])` (or the
  identity without shuffle); the last batch is padded with masked rows unless
  `drop_remainder`.
  """
  if batch_size <= 0:
    raise ValueError(f"batch_size={batch_size} must be positive")
  sizes = {k: len(v) for k, v in arrays.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"arrays have different lengths: {sizes}")
  n = next(iter(sizes.values()))
  order = (np.random.default_rng([seed, epoch]).permutation(n) if shuffle
           else np.arange(n))
  for start in range(0, n, batch_size):
    idx = order[start:start + batch_size]
    if len(idx) < batch_size and drop_remainder:
      return
    mask = np.zeros(batch_size, bool)
    mask[:len(idx)] = True
    full = np.zeros(batch_size, np.int64)
    full[:len(idx)] = idx
    yield gather_batch(arrays, full, mask)
