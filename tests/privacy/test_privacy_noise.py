"""gaussian_noise / dpsgd: exact reconstruction and sampling statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special

from trustjax.privacy.noise import dpsgd
from trustjax.privacy.noise import gaussian_noise


def _exact_normal(key, shape):
  """float64 N(0,1) from JAX's own threefry bits (`jax.random.bits`), with the
  uniform of `jax.random.normal` and scipy's exact inverse (the documented
  transform of `noise_normal.normal`, up to its <= 1.1e-6 error)."""
  bits = np.asarray(jax.random.bits(key, shape, jnp.uint32))
  f = ((bits >> 9) | np.uint32(0x3F800000)).view(np.float32) - np.float32(1)
  lo = np.nextafter(np.float32(-1), np.float32(0))
  u = np.maximum(lo, f * (np.float32(1) - lo) + lo)
  return np.sqrt(2.0) * scipy.special.erfinv(u.astype(np.float64))


def _expected_noise(seed, count, tree, std):
  """Independent re-derivation of the documented key schedule."""
  k = jax.random.fold_in(jax.random.key(seed), count)
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(k, len(leaves))
  return treedef.unflatten([
      std * _exact_normal(kk, x.shape) for kk, x in zip(keys, leaves)])


# noise_normal's erfinv is within 1.1e-6 of exact per unit of std.
_ATOL_PER_STD = 2e-6


SUM = {"a": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3),
       "b": jnp.full((4,), -2.0, jnp.float32)}


def test_update_is_sum_plus_noise_over_expected_batch_size():
  sigma, c, ebs = 1.3, 0.7, 32.0
  tx = gaussian_noise(c, sigma, ebs, jax.random.key(5))
  state = tx.init(SUM)
  for count in range(3):
    out, state = jax.jit(tx.update)(SUM, state)
    noise = _expected_noise(5, count, SUM, sigma * c)
    for k in SUM:
      np.testing.assert_allclose(
          out[k], (np.asarray(SUM[k]) + np.asarray(noise[k])) / ebs,
          rtol=1e-6, atol=_ATOL_PER_STD * sigma * c / ebs)
  assert int(state.count) == 3


def test_noise_moments():
  """Mean 0 and std sigma*C per coordinate: n = 200k draws (2 steps).

  Tolerances are 5 standard errors of the sampling distribution:
  mean: 5 * s / sqrt(n); std: 5 * s / sqrt(2n) (normal approximation).
  """
  sigma, c, ebs = 0.9, 2.5, 1.0
  zeros = {"w": jnp.zeros((100_000,), jnp.float32)}
  tx = gaussian_noise(c, sigma, ebs, 11)
  state = tx.init(zeros)
  draws = []
  for _ in range(2):
    out, state = tx.update(zeros, state)
    draws.append(np.asarray(out["w"], np.float64))
  x = np.concatenate(draws)
  s, n = sigma * c, x.size
  assert abs(x.mean()) < 5 * s / math.sqrt(n)
  assert abs(x.std() - s) < 5 * s / math.sqrt(2 * n)
  # steps use different keys: independent draws
  assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) < 5 / math.sqrt(n / 2)


def test_per_layer_noise_calibrated_to_total_sensitivity():
  clips = {"a": 3.0, "b": 4.0}   # total sensitivity 5
  tx = gaussian_noise(clips, 2.0, 1.0, 0)
  state = tx.init(SUM)
  out, _ = tx.update(SUM, state)
  noise = _expected_noise(0, 0, SUM, 2.0 * 5.0)
  np.testing.assert_allclose(out["b"], SUM["b"] + noise["b"], rtol=1e-6,
                             atol=_ATOL_PER_STD * 10.0)


def test_dpsgd_chain_with_sgd():
  lr, sigma, c, ebs = 0.1, 1.0, 1.0, 8.0
  tx = dpsgd(optax.sgd(lr), c, sigma, ebs, seed=3)
  state = tx.init(SUM)
  upd, state = tx.update(SUM, state, SUM)
  noise = _expected_noise(3, 0, SUM, sigma * c)
  np.testing.assert_allclose(
      upd["a"], -lr * (SUM["a"] + noise["a"]) / ebs, rtol=1e-5,
      atol=_ATOL_PER_STD * lr * sigma * c / ebs)


def test_dynamic_clip_requires_value_per_update():
  tx = gaussian_noise(None, 1.0, 4.0, 0)
  state = tx.init(SUM)
  with pytest.raises(ValueError, match="l2_clip"):
    tx.update(SUM, state)
  out, _ = jax.jit(lambda u, s, c: tx.update(u, s, l2_clip=c))(
      SUM, state, jnp.float32(0.5))
  noise = _expected_noise(0, 0, SUM, 0.5)
  np.testing.assert_allclose(out["a"], (SUM["a"] + noise["a"]) / 4.0,
                             rtol=1e-6, atol=_ATOL_PER_STD * 0.5 / 4.0)
  fixed = gaussian_noise(1.0, 1.0, 4.0, 0)
  with pytest.raises(ValueError, match="fixed l2_clip"):
    fixed.update(SUM, fixed.init(SUM), l2_clip=0.5)


def test_noise_schedule():
  sched = optax.exponential_decay(2.0, 1, 0.5)   # 2, 1, 0.5, ...
  tx = gaussian_noise(1.0, sched, 1.0, 0)
  state = tx.init(SUM)
  _, state = tx.update(SUM, state)
  out, _ = tx.update(SUM, state)
  noise = _expected_noise(0, 1, SUM, 1.0)
  np.testing.assert_allclose(out["a"], SUM["a"] + noise["a"], rtol=1e-6,
                             atol=_ATOL_PER_STD)


@pytest.mark.parametrize("args,kwargs,match", [
    ((0.0, 1.0, 8.0), {}, "l2_clip"),
    ((-1.0, 1.0, 8.0), {}, "l2_clip"),
    ((1.0, -0.1, 8.0), {}, "noise_multiplier"),
    ((1.0, float("nan"), 8.0), {}, "noise_multiplier"),
    ((1.0, 0.0, 8.0), {}, "allow_no_noise"),
    ((1.0, 1.0, 0.0), {}, "expected_batch_size"),
    ((1.0, 1.0, -3.0), {}, "expected_batch_size"),
])
def test_validation(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    gaussian_noise(*args, key=0, **kwargs)


def test_no_noise_when_allowed():
  tx = gaussian_noise(1.0, 0.0, 2.0, 0, allow_no_noise=True)
  out, _ = tx.update(SUM, tx.init(SUM))
  np.testing.assert_array_equal(out["a"], SUM["a"] / 2.0)
