"""Dropout keys passed explicitly at call time (no hidden RNG state)."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx


def dropout_key(rngs: Any, deterministic: bool, rate: float, where: str):
  """The jax key that drives dropout, or None when dropout is off.

  Accepts a jax key (typed or raw uint32[2]) or an `nnx.Rngs` (its `dropout`
  stream is drawn). Raises ValueError when dropout is on but no key is given,
  rather than silently falling back to a key stored in the module.
  """
  if deterministic or rate == 0.0:
    return None
  if rngs is None:
    raise ValueError(
        f"{where}: deterministic=False with dropout={rate} needs "
        "rngs=<jax.random key>; got rngs=None")
  if isinstance(rngs, nnx.Rngs):
    return rngs.dropout()
  return rngs


def split_or_none(key, num: int):
  """`num` independent keys from `key`, or `num` Nones when key is None."""
  if key is None:
    return [None] * num
  return list(jax.random.split(key, num))
