"""noise_normal: JAX's threefry bits, Giles's erfinv, one fusable kernel.

References: JAX's own `threefry2x32` primitive and `jax.random.bits` (the
bits must be identical), `jax.random.normal` (values within 2.5e-5), and
scipy's float64 erfinv over ALL 2^23 uniforms the generator can produce
(the transform's error).
"""

import math

import jax
import jax.numpy as jnp
from jax.extend import random as jex_random
import numpy as np
import pytest
import scipy.special

from trustjax.privacy import noise_normal


@pytest.mark.parametrize("shape", [(), (1,), (7,), (300, 7), (3, 4, 5),
                                   (0,), (2, 0, 3), (784, 512)])
def test_bits_equal_jax_and_values_close_to_jax_random_normal(shape):
  n = int(np.prod(shape))
  for seed, fold in [(0, 0), (5, 3), (2**31 + 7, 123456)]:
    key = jax.random.fold_in(jax.random.key(seed), fold)
    assert noise_normal.fast_path_applies(key, shape)
    bits = jax.jit(lambda k: noise_normal.uniform_bits(k, n))(key)
    np.testing.assert_array_equal(
        np.asarray(bits), np.asarray(jax.random.bits(key, (n,), jnp.uint32)))
    ours = jax.jit(lambda k: noise_normal.normal(k, shape))(key)
    ref = jax.random.normal(key, shape, jnp.float32)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=0,
                               atol=2.5e-5)


def test_transform_accuracy_over_every_possible_uniform():
  """All 2^23 uniforms: |z - sqrt(2) erfinv_exact(u)| <= 1.2e-6 (XLA's own
  erf_inv: 2.2e-5), and the map is monotone (no inverted pairs)."""
  k = np.arange(2**23, dtype=np.uint32) << np.uint32(9)   # all mantissas
  u = jax.jit(noise_normal.bits_to_uniform)(jnp.asarray(k))
  z = np.asarray(jax.jit(lambda u: np.float32(np.sqrt(2.0)) *
                         noise_normal.erfinv(u))(u), np.float64)
  exact = np.sqrt(2.0) * scipy.special.erfinv(np.asarray(u, np.float64))
  err = np.abs(z - exact)
  assert err.max() <= 1.2e-6, (err.max(), exact[err.argmax()])
  assert np.all(np.diff(z) >= 0)
  # 23-bit uniforms bound the tails as in JAX: z in [-5.42, 5.22]
  assert np.isfinite(z).all()
  assert abs(z.min() + 5.42) < 0.01 and abs(z.max() - 5.22) < 0.01


def test_hash_equals_jax_threefry_primitive():
  rng = np.random.default_rng(0)
  k = rng.integers(0, 2**32, 2, dtype=np.uint32)
  x = rng.integers(0, 2**32, (2, 1000), dtype=np.uint32)
  ours = jax.jit(noise_normal.threefry2x32)(k[0], k[1], x[0], x[1])
  ref = jex_random.threefry2x32_p.bind(
      jnp.uint32(k[0]), jnp.uint32(k[1]), jnp.asarray(x[0]),
      jnp.asarray(x[1]))
  for a, b in zip(ours, ref):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_under_vmap_of_keys():
  keys = jax.random.split(jax.random.key(9), 4)
  ours = jax.jit(jax.vmap(lambda k: noise_normal.normal(k, (5, 3))))(keys)
  ref = jax.vmap(lambda k: jax.random.normal(k, (5, 3)))(keys)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), atol=2.5e-5)


@pytest.mark.parametrize("key_fn,dtype", [
    (lambda: jax.random.key(1, impl="rbg"), jnp.float32),
    (lambda: jax.random.key(1), jnp.bfloat16),
    (lambda: jax.random.key(1), jnp.float16),
])
def test_other_impls_and_dtypes_fall_back_to_jax(key_fn, dtype):
  key = key_fn()
  assert not noise_normal.fast_path_applies(key, (6, 5), dtype)
  ours = noise_normal.normal(key, (6, 5), dtype)
  ref = jax.random.normal(key, (6, 5), dtype)
  assert ours.dtype == ref.dtype
  np.testing.assert_array_equal(np.asarray(ours, np.float32),
                                np.asarray(ref, np.float32))


def test_moments_and_independence_of_keys():
  """Mean 0, std 1, no correlation between two keys (5 standard errors)."""
  n = 200_000
  z = np.asarray(noise_normal.normal(jax.random.key(3), (2, n)), np.float64)
  assert abs(z.mean()) < 5 / math.sqrt(2 * n)
  assert abs(z.std() - 1) < 5 / math.sqrt(4 * n)
  assert abs(np.corrcoef(z[0], z[1])[0, 1]) < 5 / math.sqrt(n)
  # tails: P(|z| > 3) = 0.0027 within 5 binomial standard errors
  p = 0.0026998
  frac = np.mean(np.abs(z) > 3)
  assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / (2 * n))


@pytest.mark.parametrize("shape", [(65535,), (65536,), (65537,), (3, 70001)])
def test_materialised_large_draws_equal_the_elementwise_formula(shape):
  """Draws >= 2^16 elements go through a 2-chunk loop: same numbers."""
  key = jax.random.key(11)
  n = int(np.prod(shape))
  ours = jax.jit(lambda k: noise_normal.normal(k, shape))(key)
  u = noise_normal.bits_to_uniform(jax.random.bits(key, (n,), jnp.uint32))
  ref = jax.jit(lambda u: np.float32(np.sqrt(2.0)) *
                noise_normal.erfinv(u))(u).reshape(shape)
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


def test_legacy_raw_key_takes_the_same_path():
  raw = jax.random.PRNGKey(4)
  ours = noise_normal.normal(raw, (50,))
  typed = noise_normal.normal(jax.random.wrap_key_data(raw), (50,))
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(typed))
  np.testing.assert_allclose(np.asarray(ours),
                             np.asarray(jax.random.normal(raw, (50,))),
                             atol=2.5e-5)
