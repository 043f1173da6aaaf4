"""Mixed precision ghost clipping: clipped_grad(..., compute_dtype=bfloat16).

Stated tolerances (bf16 has an 8-bit significand, eps = 2^-8 = 3.9e-3):
  * per-example norms: relative error <= 2e-2 against the f32 path and
    against an independent reference (vmap(grad) of the same bf16-compute
    loss, per-example gradients materialised);
  * clipped sum: ||sum_bf16 - sum_f32|| <= 2e-2 * sum_i min(||g_i||, C), i.e.
    relative to the size the sum can have;
  * the privacy guarantee is NOT approximate: each example's contribution
    has norm <= C (1 + 1e-5) (f32 rounding only), and the sum is f32.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
import pytest

from trustjax.privacy import clipped_grad
from trustjax.privacy.ghost import cast_floats

BF16 = jnp.bfloat16
B, T = 10, 6


class _Model(nnx.Module):
  """Embed + LayerNorm + sequence Linear + pooled Linear, plus a parameter
  used twice (`temp`, handled by the vmap fallback)."""

  def __init__(self, rngs):
    self.emb = nnx.Embed(40, 16, rngs=rngs)
    self.ln = nnx.LayerNorm(16, rngs=rngs)
    self.l1 = nnx.Linear(16, 24, rngs=rngs)
    self.l2 = nnx.Linear(24, 5, rngs=rngs)
    self.temp = nnx.Param(jnp.full((), 1.5, jnp.float32))

  def __call__(self, ids, x):
    h = self.emb(ids) + x
    h = jax.nn.gelu(self.l1(self.ln(h)))
    logits = self.l2(jnp.mean(h, axis=1))
    return logits * self.temp + 0.1 * self.temp


def _setup(seed):
  graphdef, params = nnx.split(_Model(nnx.Rngs(seed)), nnx.Param)

  def loss_fn(p, bt, rng):
    del rng
    logits = nnx.merge(graphdef, p)(bt["ids"], bt["x"]).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, bt["y"][:, None], axis=1)[:, 0], None

  rng = np.random.default_rng(seed)
  batch = {"ids": jnp.asarray(rng.integers(0, 40, (B, T)), jnp.int32),
           "x": jnp.asarray(rng.normal(size=(B, T, 16)), jnp.float32),
           "y": jnp.asarray(rng.integers(0, 5, B), jnp.int32)}
  return loss_fn, params, batch


def _dist(a, b):
  return float(np.sqrt(sum(
      np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64))**2)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))))


def _norm(a):
  return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64)**2)
                           for x in jax.tree.leaves(a))))


@pytest.mark.parametrize("seed,clip", [(0, 0.05), (2, 50.0)])
def test_bf16_norms_and_sum_close_to_f32(seed, clip):
  loss_fn, params, batch = _setup(seed)
  mask = jnp.arange(B) < B - 2
  # jit: eager op-by-op dispatch of these traces is much slower on CPU.
  g32, s32 = jax.jit(clipped_grad(loss_fn, clip, method="ghost"))(
      params, batch, mask)
  fn16 = clipped_grad(loss_fn, clip, method="ghost", compute_dtype=BF16)
  assert fn16.compute_dtype == BF16
  g16, s16 = jax.jit(fn16)(params, batch, mask)
  for x in jax.tree.leaves(g16):
    assert x.dtype == jnp.float32       # f32 master params -> f32 sum
  # independent reference: materialised per-example grads of the bf16 loss
  lf16 = lambda p, bt, r: loss_fn(*cast_floats((p, bt), BF16), r)
  _, sref = jax.jit(clipped_grad(lf16, clip, method="vmap"))(
      params, batch, mask)
  real = np.asarray(mask)
  n32 = np.asarray(s32.per_example_norms)[real]
  n16 = np.asarray(s16.per_example_norms)[real]
  nref = np.asarray(sref.per_example_norms)[real]
  assert np.all(np.asarray(s16.per_example_norms)[~real] == 0)
  np.testing.assert_allclose(n16, n32, rtol=2e-2)
  np.testing.assert_allclose(n16, nref, rtol=2e-2)
  scale = float(np.sum(np.minimum(n32, clip)))
  assert _dist(g16, g32) <= 2e-2 * scale
  # and it is bf16 arithmetic, not a silent f32 computation
  assert not np.array_equal(n16, n32)


def test_each_contribution_is_clipped_to_c():
  """The sensitivity bound holds exactly (f32 rounding), not to bf16."""
  loss_fn, params, batch = _setup(3)
  clip = 0.02   # every example is clipped
  fn = jax.jit(clipped_grad(loss_fn, clip, method="ghost",
                            compute_dtype=BF16))
  norms = []
  for i in range(B):
    g, st = fn(params, batch, jnp.arange(B) == i)
    assert float(st.per_example_norms[i]) > clip
    norms.append(_norm(g))
  assert max(norms) <= clip * (1 + 1e-5)
  assert min(norms) >= clip * (1 - 1e-5)   # clipped exactly to C, not less


def test_float32_compute_dtype_matches_default():
  loss_fn, params, batch = _setup(4)
  g0, s0 = jax.jit(clipped_grad(loss_fn, 1.0, method="ghost"))(params, batch)
  g1, s1 = jax.jit(clipped_grad(loss_fn, 1.0, method="ghost",
                                compute_dtype=jnp.float32))(params, batch)
  np.testing.assert_allclose(s1.per_example_norms, s0.per_example_norms,
                             rtol=1e-6)
  assert _dist(g0, g1) <= 1e-6 * _norm(g0)


def test_validation():
  loss_fn, _, _ = _setup(0)
  with pytest.raises(ValueError, match="compute_dtype"):
    clipped_grad(loss_fn, 1.0, method="vmap", compute_dtype=BF16)
  with pytest.raises(ValueError, match="compute_dtype"):
    clipped_grad(loss_fn, 1.0, method="ghost", compute_dtype=jnp.int32)
