"""Data-parallel clipping over 8 simulated CPU devices equals one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trustjax.privacy.clipping import clipped_grad
from trustjax.privacy.distributed import make_dp_grad_fn


def _loss(p, b, r):
  h = jnp.tanh(b["x"] @ p["w1"] + p["b1"][None])
  keep = jax.random.bernoulli(r, 0.7, h.shape)     # dropout: per-example rng
  h = jnp.where(keep, h / 0.7, 0.0)
  out = h @ p["w2"]
  return jnp.sum((out - b["y"]) ** 2, -1), {"out": out}


def _setup(b=16):
  rng = np.random.default_rng(0)
  params = {"w1": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32),
            "b1": jnp.zeros((6,), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(6, 2)), jnp.float32)}
  batch = {"x": jnp.asarray(rng.normal(size=(b, 4)) * 2, jnp.float32),
           "y": jnp.asarray(rng.normal(size=(b, 2)), jnp.float32)}
  mask = jnp.asarray(rng.random(b) < 0.75)
  return params, batch, mask


@pytest.mark.parametrize("l2_clip", [0.5, {"w1": 0.3, "b1": 0.1, "w2": 0.4}],
                         ids=["global", "per_layer"])
def test_eight_devices_equal_one(l2_clip):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices; tests/conftest.py sets them")
  params, batch, mask = _setup()
  rng = jax.random.key(7)
  cg = clipped_grad(_loss, l2_clip, method="vmap")
  one_g, one_s = jax.jit(cg)(params, batch, mask, rng)
  mesh = jax.make_mesh((8,), ("data",))
  dp = make_dp_grad_fn(cg, mesh, axis="data")
  assert dp.sensitivity == cg.sensitivity
  g, s = jax.jit(dp)(params, batch, mask, rng)
  for k in params:
    np.testing.assert_allclose(g[k], one_g[k], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s.per_example_norms, one_s.per_example_norms,
                             rtol=1e-5)
  np.testing.assert_allclose(s.aux["out"], one_s.aux["out"], rtol=1e-5,
                             atol=1e-6)
  assert int(s.num_real) == int(one_s.num_real) == int(np.sum(mask))
  assert float(s.frac_clipped) == pytest.approx(float(one_s.frac_clipped))
  assert int(s.num_nonfinite) == 0
  if isinstance(l2_clip, dict):
    np.testing.assert_allclose(s.per_layer_norms, one_s.per_layer_norms,
                               rtol=1e-5)
  # the sum is replicated on every device (noise is then added once)
  assert g["w1"].sharding.is_fully_replicated


def test_batch_must_divide_devices():
  params, batch, mask = _setup(b=12)
  mesh = jax.make_mesh((8,), ("data",))
  dp = make_dp_grad_fn(clipped_grad(_loss, 1.0, method="vmap"), mesh)
  with pytest.raises(ValueError, match="divisible"):
    dp(params, batch, mask, jax.random.key(0))
  with pytest.raises(ValueError, match="axis"):
    make_dp_grad_fn(clipped_grad(_loss, 1.0), mesh, axis="model")


def test_auto_method_eight_devices_equal_one():
  """Whatever clipped_grad(method="auto") picks also works under shard_map."""
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  params, batch, mask = _setup()

  def loss(p, b, r):
    h = jnp.tanh(b["x"] @ p["w1"] + p["b1"][None])
    return jnp.sum((h @ p["w2"] - b["y"]) ** 2, -1), None
  cg = clipped_grad(loss, 0.5)
  one_g, _ = jax.jit(cg)(params, batch, mask, None)
  dp = make_dp_grad_fn(cg, jax.make_mesh((8,), ("data",)))
  g, s = jax.jit(dp)(params, batch, mask, None)
  for k in params:
    np.testing.assert_allclose(g[k], one_g[k], rtol=1e-5, atol=1e-6)
  assert int(s.num_real) == int(np.sum(mask))
