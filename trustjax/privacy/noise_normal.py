"""Standard normal draws for DP noise, as one fusable, vectorised kernel.

Why this file exists. DP-SGD draws one normal per parameter every step. On
XLA:CPU, `jax.random.normal` was the most expensive part of a DP step on a
0.67M-parameter MLP (more than the whole non-private step) for two reasons:
  * JAX lowers the Threefry-2x32 hash on CPU as a rolled `while` loop of 5
    iterations; each iteration is its own set of kernels over the whole
    array, so the hash cannot fuse with the transform and the gradient
    update, and each kernel pays a thread-pool synchronisation;
  * XLA's f32 `erf_inv` (uniform -> normal) costs about twice the hash
    (its `log1p` is slow on CPU).

`normal(key, shape)` keeps JAX's random BITS exactly and changes only how the
uniform is mapped to a normal:
  * bits: Threefry-2x32 with 20 rounds (Salmon et al. 2011, "Parallel random
    numbers: as easy as 1, 2, 3"), same key, counters and bits as
    `jax.random.normal` under JAX's default `jax_threefry_partitionable=True`
    (element j: `w0 ^ w1` of `threefry2x32(key, (0, j))`), written unrolled
    in `jax.numpy` so that XLA fuses it; `uniform_bits` is tested equal to
    JAX's;
  * uniform: the same as `jax.random.normal` (23 random mantissa bits, u in
    [nextafter(-1, 0), 1));
  * transform: `sqrt(2) * erfinv(u)` with Giles's single-precision erfinv
    (M. Giles, "Approximating the erfinv function", GPU Computing Gems Jade,
    2011) and a Cephes-style `log`; over ALL 2^23 possible uniforms its
    largest error against the exact inverse normal CDF (float64 scipy) is
    1.1e-6 absolute (2.9e-7 relative), against 2.2e-5 (5.8e-6) for XLA's
    `erf_inv`, so the result differs from `jax.random.normal(key, shape)` by
    at most ~2.3e-5 per coordinate and is closer to an exact Gaussian. The
    largest possible |z| is 5.42 for both (the 23-bit uniform bounds the
    tails, as in JAX). `tests/privacy/test_privacy_noise_normal.py` checks
    all of this exhaustively.
Statistical quality is therefore that of JAX's default generator; only the
floating-point approximation of the inverse CDF differs, and it is the more
accurate one.

When the fast path does not apply (a key whose implementation is not
threefry2x32, `jax_threefry_partitionable=False`, a non-f32 dtype, or 2^32 or
more elements), `normal` returns `jax.random.normal(key, shape, dtype)`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KS_PARITY = np.uint32(0x1BD11BDA)
# jax.random.normal draws u uniform in [nextafter(-1, 0), 1), then
# sqrt(2) * erf_inv(u).
_LO = np.nextafter(np.float32(-1.0), np.float32(0.0))
# Draws of at least this many elements are materialised (see `normal`).
_MATERIALIZE_MIN = 65536
_CHUNKS = 2


def _rotl(v: jax.Array, r: int) -> jax.Array:
  return (v << np.uint32(r)) | (v >> np.uint32(32 - r))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array,
                 x2: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 (20 rounds) of counter words (x1, x2) under key (k1, k2).

  The same function as JAX's `threefry2x32` primitive (Salmon et al. 2011;
  JAX's `jax._src.random.threefry2x32`), written unrolled so that it fuses.
  All arguments are uint32 and broadcast against each other.
  """
  ks = (k1, k2, k1 ^ k2 ^ _KS_PARITY)
  x0, x1 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotl(x1, r)
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def fast_path_applies(key: jax.Array, shape: Sequence[int],
                      dtype: jnp.dtype = jnp.float32) -> bool:
  """Whether `normal(key, shape, dtype)` takes the fused path."""
  return (jnp.dtype(dtype) == jnp.float32 and
          bool(jax.config.jax_threefry_partitionable) and
          str(jax.random.key_impl(key)) == "threefry2x32" and
          jnp.shape(key) == () and
          int(np.prod(shape, dtype=np.int64)) < 2**32)


def uniform_bits(key: jax.Array, n: int) -> jax.Array:
  """uint32[n]: the bits `jax.random.bits(key, (n,), uint32)` (threefry)."""
  kd = jax.random.key_data(key)
  w0, w1 = threefry2x32(kd[0], kd[1], jnp.zeros((), jnp.uint32),
                        lax.iota(jnp.uint32, n))
  return w0 ^ w1


def _log(y: jax.Array) -> jax.Array:
  """Natural log of positive normal f32 `y` (Cephes logf, ~1 ulp).

  Written out because XLA:CPU's `log` is about 2x slower; only used on
  (1 - u)(1 + u) in [1.1e-7, 1], never on 0, denormals, inf or NaN.
  """
  b = lax.bitcast_convert_type(y, jnp.uint32)
  e = (b >> np.uint32(23)).astype(jnp.int32) - 126
  m = lax.bitcast_convert_type((b & np.uint32(0x007FFFFF)) |
                               np.uint32(0x3F000000), jnp.float32)  # [.5, 1)
  small = m < np.float32(0.70710678)
  e = jnp.where(small, e - 1, e).astype(jnp.float32)
  m = jnp.where(small, m + m, m) - np.float32(1.0)
  z = m * m
  p = np.float32(7.0376836292e-2)
  for c in (-1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
            1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1,
            -2.4999993993e-1, 3.3333331174e-1):
    p = p * m + np.float32(c)
  p = p * m * z + e * np.float32(-2.12194440e-4) - np.float32(0.5) * z
  return m + p + e * np.float32(0.693359375)


_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06,
                   -4.39150654e-06, 0.00021858087, -0.00125372503,
                   -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322,
                -0.00367342844, 0.00573950773, -0.0076224613,
                0.00943887047, 1.00167406, 2.83297682)


def erfinv(x: jax.Array) -> jax.Array:
  """f32 erfinv for |x| < 1 (Giles 2011, single-precision version)."""
  w = -_log((np.float32(1.0) - x) * (np.float32(1.0) + x))
  t = w - np.float32(2.5)
  p1 = np.float32(_ERFINV_CENTRAL[0])
  for c in _ERFINV_CENTRAL[1:]:
    p1 = p1 * t + np.float32(c)
  t = jnp.sqrt(w) - np.float32(3.0)
  p2 = np.float32(_ERFINV_TAIL[0])
  for c in _ERFINV_TAIL[1:]:
    p2 = p2 * t + np.float32(c)
  return jnp.where(w < np.float32(5.0), p1, p2) * x


def bits_to_uniform(bits: jax.Array) -> jax.Array:
  """u in [nextafter(-1, 0), 1) from uint32 bits, as `jax.random.normal`."""
  f = lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000),
                               jnp.float32) - np.float32(1.0)
  return lax.max(_LO, f * (np.float32(1.0) - _LO) + _LO)


def normal(key: jax.Array, shape: Sequence[int],
           dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """Standard normal draws: JAX's bits, Giles's erfinv; fusable.

  Args:
    key: a typed scalar `jax.random.key` (or legacy raw uint32[2] key data).
    shape: output shape.
    dtype: output dtype.

  Returns:
    Element j (row-major) is `sqrt(2) * erfinv(u_j)` with `u_j =
    bits_to_uniform(uniform_bits(key, n)[j])`, the uniform
    `jax.random.normal(key, shape)` uses; equal to
    `jax.random.normal(key, shape, dtype)` within 2.5e-5 (module docstring).
    Off the fast path (`fast_path_applies` False) exactly
    `jax.random.normal(key, shape, dtype)`.
  """
  shape = tuple(int(d) for d in shape)
  if (not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and
      key.dtype == jnp.uint32 and key.shape == (2,)):
    key = jax.random.wrap_key_data(key)   # legacy raw threefry key
  if not fast_path_applies(key, shape, dtype):
    return jax.random.normal(key, shape, dtype)
  n = int(np.prod(shape, dtype=np.int64))
  kd = jax.random.key_data(key)

  def draw(start, size):
    idx = lax.iota(jnp.uint32, size) + start
    w0, w1 = threefry2x32(kd[0], kd[1], jnp.zeros((), jnp.uint32), idx)
    return np.float32(np.sqrt(2.0)) * erfinv(bits_to_uniform(w0 ^ w1))

  if n < _MATERIALIZE_MIN:
    return draw(np.uint32(0), n).reshape(shape)
  # Large draws go through a 2-iteration loop. The loop boundary makes XLA
  # materialise the normals once; as a plain elementwise expression XLA
  # fuses it into every consumer (e.g. both Adam moment updates) and so
  # computes the erfinv polynomials 2-3 times per step. Same values.
  h = -(-n // _CHUNKS)

  def body(i, buf):
    start = (i * h).astype(jnp.uint32)
    return lax.dynamic_update_slice(buf, draw(start, h), (i * h,))

  buf = lax.fori_loop(0, _CHUNKS, body,
                      jnp.zeros((_CHUNKS * h,), jnp.float32))
  return buf[:n].reshape(shape)
