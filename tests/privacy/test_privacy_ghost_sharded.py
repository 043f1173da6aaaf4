"""Ghost / book-keeping clipping under shard_map (`make_dp_grad_fn`) on 8
simulated CPU devices equals single-device `vmap(grad)` clipping.

The reference is single-device `jax.vmap(jax.grad)` of the loss on
one-example batches, clipped and summed in float64 numpy (no trustjax
clipping code).
The sharded ghost path shares none of that code: per-example norms come from
layer inputs and output gradients of zero perturbations, device by device.

Before the fix, the zero perturbations were device-INVARIANT inside
shard_map, so their cotangents were psummed over the 8 devices: a dense-only
model got silently wrong norms and sums (`test_dense_only_*` would fail), a
model with biases raised a type error, and method="auto" silently fell back
to vmap (`_assert_ghost_used` would fail).
"""

import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trustjax import models
from trustjax.privacy.clipping import clipped_grad
from trustjax.privacy.distributed import make_dp_grad_fn
from test_privacy_ghost import Mixed  # the models and loss wiring of
from test_privacy_ghost import _nnx_loss  # the 1-device tests

RTOL = 1e-5

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8,
    reason="needs 8 (simulated) devices; tests/conftest.py sets them")


def _mesh():
  return jax.make_mesh((8,), ("data",))


class _Ref(NamedTuple):
  per_example_norms: np.ndarray
  num_real: int
  frac_clipped: float
  aux: dict


def _reference(loss_fn, params, batch, mask):
  """Single-device `jax.vmap(jax.grad)` per-example gradients, clipped and
  summed in float64 numpy, at a clip norm that clips about half."""

  def single(p, ex):
    return loss_fn(p, jax.tree.map(lambda x: x[None], ex), None)[0][0]

  grads = jax.jit(jax.vmap(jax.grad(single), in_axes=(None, 0)))(params,
                                                                  batch)
  grads = jax.tree.map(lambda g: np.asarray(g, np.float64), grads)
  m = np.asarray(mask)
  norms = np.sqrt(sum(np.sum(g.reshape(len(m), -1) ** 2, axis=1)
                      for g in jax.tree.leaves(grads)))
  # Halfway between two norms: no norm lies within rounding of the clip.
  s = np.sort(norms[m])
  l2_clip = float(s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
  clipped = m & (norms > l2_clip)
  assert 0 < clipped.sum() < m.sum(), "must clip some, not all"
  w = np.where(m, np.minimum(1.0, l2_clip / np.maximum(norms, 1e-30)), 0.0)
  g_sum = jax.tree.map(lambda g, p: np.tensordot(w, g, axes=1).astype(
      p.dtype), grads, params)
  aux = jax.jit(loss_fn)(params, batch, None)[1]
  return l2_clip, g_sum, _Ref(norms, int(m.sum()), clipped.sum() / m.sum(),
                              aux)


def _assert_same(g, st, ref_g, ref_st, mask):
  mask = np.asarray(mask)
  # Padding rows: 0 on the ghost path, their (unused) norm on vmap.
  np.testing.assert_allclose(np.asarray(st.per_example_norms)[mask],
                             np.asarray(ref_st.per_example_norms)[mask],
                             rtol=RTOL)
  np.testing.assert_array_equal(np.asarray(st.per_example_norms)[~mask], 0)
  # One scale for all leaves: some leaves (e.g. the key bias, to which
  # softmax is invariant) have an exactly-zero gradient up to rounding.
  scale = max(float(np.max(np.abs(r))) for r in jax.tree.leaves(ref_g))
  assert jax.tree.structure(g) == jax.tree.structure(ref_g)
  for a, r in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
    assert a.dtype == r.dtype and a.shape == r.shape
    np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(r) / scale,
                               rtol=0, atol=RTOL)
  assert int(st.num_real) == int(ref_st.num_real) == int(mask.sum())
  assert float(st.frac_clipped) == pytest.approx(float(ref_st.frac_clipped),
                                                 abs=1e-7)
  assert int(st.num_nonfinite) == 0
  for a, r in zip(jax.tree.leaves(st.aux), jax.tree.leaves(ref_st.aux)):
    np.testing.assert_allclose(np.asarray(a)[mask], np.asarray(r)[mask],
                               rtol=1e-5, atol=1e-6)
  # The clipped sum is replicated (noise is then drawn once).
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(g))


def _assert_ghost_used(caplog):
  declined = [r for r in caplog.records if "ghost clipping declined" in
              r.getMessage()]
  assert not declined, declined[0].getMessage()


def _sharded_checks(loss_fn, params, batch, mask, caplog, *,
                    methods=("ghost", "auto"), microbatch_size=None):
  l2_clip, ref_g, ref_st = _reference(loss_fn, params, batch, mask)
  for method in methods:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trustjax.privacy.clipping"):
      cg = clipped_grad(loss_fn, l2_clip, method=method,
                        microbatch_size=microbatch_size)
      fn = make_dp_grad_fn(cg, _mesh())
      g, st = jax.jit(fn)(params, batch, mask, None)
    _assert_ghost_used(caplog)
    _assert_same(g, st, ref_g, ref_st, mask)


def _mask(b, seed, *, empty_shard=True):
  m = np.random.default_rng(seed).random(b) < 0.7
  m[:2] = True
  if empty_shard:
    m[2:4] = False         # device 1 (rows 2, 3 of 16) holds only padding
  return jnp.asarray(m)


class MLP(nnx.Module):

  def __init__(self, rngs, use_bias=True):
    self.l1 = nnx.Linear(12, 16, use_bias=use_bias, rngs=rngs)
    self.l2 = nnx.Linear(16, 3, use_bias=use_bias, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.relu(self.l1(x)))


def _feature_batch(b=16, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"x": 2.0 * jax.random.normal(k1, (b, 12)),
          "label": jax.random.randint(k2, (b,), 0, 3)}


def test_mlp_with_padding(caplog):
  loss_fn, params = _nnx_loss(MLP(nnx.Rngs(0)), lambda m, b: m(b["x"]))
  _sharded_checks(loss_fn, params, _feature_batch(), _mask(16, 1), caplog,
                  methods=("auto",))


def test_dense_only_mlp(caplog):
  """Dense layers only: the case that was silently wrong (no type error)."""
  loss_fn, params = _nnx_loss(MLP(nnx.Rngs(1), use_bias=False),
                              lambda m, b: m(b["x"]))
  _sharded_checks(loss_fn, params, _feature_batch(seed=2), _mask(16, 3),
                  caplog, methods=("ghost",))


def test_mlp_microbatched(caplog):
  loss_fn, params = _nnx_loss(MLP(nnx.Rngs(4)), lambda m, b: m(b["x"]))
  _sharded_checks(loss_fn, params, _feature_batch(b=32, seed=5),
                  _mask(32, 6), caplog, methods=("ghost",),
                  microbatch_size=2)


def _text_batch(b=16, t=6, vocab=23, seed=4):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  ids = jax.random.randint(k1, (b, t), 0, 7)  # small range: repeated ids
  lengths = jax.random.randint(k2, (b,), 2, t + 1)
  tok_mask = jnp.arange(t)[None] < lengths[:, None]    # padded sequences
  return {"ids": ids, "mask": tok_mask,
          "label": jax.random.randint(k3, (b,), 0, 3)}


def test_transformer_classifier(caplog):
  model = models.TransformerClassifier(23, 3, d_model=8, num_layers=1,
                                       num_heads=2, d_ff=16, max_len=6,
                                       rngs=nnx.Rngs(11))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = models.classifier_loss_fn(graphdef, rest=rest)
  # "auto" (what the training step uses) must pick ghost; "ghost" itself is
  # covered on the other models (each method costs one compilation).
  _sharded_checks(loss_fn, params, _text_batch(seed=12), _mask(16, 13),
                  caplog, methods=("auto",))


def test_mixed_supported_and_fallback(caplog):
  loss_fn, params = _nnx_loss(Mixed(nnx.Rngs(8)), lambda m, b: m(b["ids"]))
  k1, k2 = jax.random.split(jax.random.key(9))
  batch = {"ids": jax.random.randint(k1, (16, 4), 0, 11),
           "label": jax.random.randint(k2, (16,), 0, 3)}
  _sharded_checks(loss_fn, params, batch, _mask(16, 10), caplog,
                  methods=("auto",))


def test_invariant_params_inside_shard_map():
  """Ghost clipping called directly inside shard_map with params left
  device-invariant (no pcast, unlike make_dp_grad_fn): the per-device sums
  and norms are still those of the device's own examples."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  loss_fn, params = _nnx_loss(MLP(nnx.Rngs(3)), lambda m, b: m(b["x"]))
  batch, mask = _feature_batch(seed=7), _mask(16, 8, empty_shard=False)
  l2_clip, ref_g, ref_st = _reference(loss_fn, params, batch, mask)
  cg = clipped_grad(loss_fn, l2_clip, method="ghost")
  mesh = _mesh()

  def local(p, b, m):
    g, st = cg(p, b, m, None)
    return jax.lax.psum(g, "data"), st.per_example_norms

  fn = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data"),
                                                          P("data")),
                             out_specs=(P(), P("data"))))
  put = lambda t, s: jax.device_put(t, NamedSharding(mesh, s))
  g, norms = fn(put(params, P()), put(batch, P("data")), put(mask, P("data")))
  m = np.asarray(mask)
  np.testing.assert_allclose(np.asarray(norms)[m],
                             np.asarray(ref_st.per_example_norms)[m],
                             rtol=RTOL)
  for a, r in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
    np.testing.assert_allclose(a, r, rtol=RTOL, atol=1e-6)
