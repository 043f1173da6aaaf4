"""Ghost / book-keeping clipping equals per-example jax.grad + clip + sum.

References are independent of trustjax: a Python loop of `jax.grad` on
single-example batches (and `jax.vmap(jax.grad)` for the norms).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trustjax.privacy.ghost import ghost_clipped_grad

RTOL = 1e-5


def _ce(logits, labels):
  logp = jax.nn.log_softmax(logits)
  return -jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]


def _nnx_loss(model, apply):
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(p, batch, rng):
    del rng
    logits = apply(nnx.merge(graphdef, p), batch)
    return _ce(logits, batch["label"]), {"logits": logits}

  return loss_fn, params


def _reference(loss_fn, params, batch, mask):
  """Python loop: per-example grad on a batch of one; returns norms, grads.

  The clip norm is the median real norm, so some examples are clipped and
  some are not.
  """
  b = len(mask)
  grad1 = jax.jit(jax.grad(lambda p, b1: loss_fn(p, b1, None)[0][0]))
  norms, grads = [], []
  for i in range(b):
    gi = grad1(params, jax.tree.map(lambda x: x[i:i + 1], batch))
    n = float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                          for x in jax.tree.leaves(gi))))
    norms.append(n if mask[i] else 0.0)
    grads.append(gi)
  l2_clip = float(np.median(np.array(norms)[mask]))
  total = jax.tree.map(jnp.zeros_like, params)
  for i in range(b):
    if mask[i]:
      total = jax.tree.map(lambda t, g: t + g * min(1.0, l2_clip / norms[i]),
                           total, grads[i])
  # vmap(grad) cross-check of the norms (a second independent reference).
  vg = jax.vmap(lambda b1: jax.grad(lambda p: loss_fn(
      p, jax.tree.map(lambda x: x[None], b1), None)[0][0])(params))(batch)
  vn = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)).reshape(b, -1),
                          1) for x in jax.tree.leaves(vg)))
  np.testing.assert_allclose(np.where(mask, vn, 0), norms, rtol=1e-4)
  return np.array(norms), total, l2_clip


def _check(loss_fn, params, batch, mask, *, expect_fallback=None, ref=None,
           **kw):
  ref = _reference(loss_fn, params, batch, mask) if ref is None else ref
  ref_norms, ref_sum, l2_clip = ref
  fn = jax.jit(ghost_clipped_grad(loss_fn, l2_clip, **kw))
  gsum, stats = fn(params, batch, jnp.asarray(mask), None)
  np.testing.assert_allclose(np.asarray(stats.per_example_norms), ref_norms,
                             rtol=RTOL, atol=1e-6)
  assert 0 < np.sum(mask & (ref_norms > l2_clip)) < np.sum(mask), (
      "test must clip some but not all examples", ref_norms)
  # One scale for all leaves: some leaves (e.g. the key bias, to which
  # softmax is invariant) have an exactly-zero gradient up to rounding.
  scale = max(float(np.max(np.abs(r))) for r in jax.tree.leaves(ref_sum))
  for a, r in zip(jax.tree.leaves(gsum), jax.tree.leaves(ref_sum)):
    np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(r) / scale,
                               rtol=0, atol=RTOL)
  assert int(stats.num_real) == int(np.sum(mask))
  np.testing.assert_allclose(
      float(stats.frac_clipped),
      np.sum(mask & (ref_norms > l2_clip)) / np.sum(mask), rtol=1e-6)
  if expect_fallback is not None:
    assert (stats.num_fallback_params > 0) == expect_fallback
  return stats


class MLP(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(12, 16, rngs=rngs)
    self.l2 = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.relu(self.l1(x)))


def test_dense_2d_with_mask():
  loss_fn, params = _nnx_loss(MLP(nnx.Rngs(0)), lambda m, b: m(b["x"]))
  k1, k2 = jax.random.split(jax.random.key(1))
  batch = {"x": jax.random.normal(k1, (6, 12)) * 3,
           "label": jax.random.randint(k2, (6,), 0, 3)}
  mask = np.array([1, 1, 0, 1, 1, 0], bool)
  _check(loss_fn, params, batch, mask, expect_fallback=False)


class SeqDense(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(6, 10, rngs=rngs)
    self.head = nnx.Linear(10, 3, rngs=rngs)
    self.gain = nnx.Param(1.0 + 0.1 * jnp.arange(12, dtype=jnp.float32))

  def __call__(self, x):
    # A parameter sliced and scaled by a constant before a broadcast multiply:
    # a linear view, still a ghost layer.
    gain = 0.5 * self.gain[...][:10]
    return self.head((jnp.tanh(self.l1(x)) * gain[None, None]).mean(axis=1))


def test_dense_sequence_gram_and_direct():
  loss_fn, params = _nnx_loss(SeqDense(nnx.Rngs(2)), lambda m, b: m(b["x"]))
  k1, k2 = jax.random.split(jax.random.key(3))
  batch = {"x": jax.random.normal(k1, (5, 7, 6)) * 2,
           "label": jax.random.randint(k2, (5,), 0, 3)}
  mask = np.array([1, 1, 1, 1, 0], bool)
  ref = _reference(loss_fn, params, batch, mask)
  for strategy in ("auto", "gram", "direct"):
    _check(loss_fn, params, batch, mask, norm_strategy=strategy,
           expect_fallback=False, ref=ref)


class TinyTransformer(nnx.Module):
  """Embed + learned positions, LayerNorm, q/k/v/o attention, MLP, pool."""

  def __init__(self, rngs, vocab=23, d=8, heads=2, t=6, classes=3):
    self.heads = heads
    self.embed = nnx.Embed(vocab, d, rngs=rngs)
    self.pos = nnx.Embed(t, d, rngs=rngs)  # learned positions
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.q = nnx.Linear(d, d, rngs=rngs)
    self.k = nnx.Linear(d, d, rngs=rngs)
    self.v = nnx.Linear(d, d, rngs=rngs)
    self.o = nnx.Linear(d, d, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.ff = nnx.Linear(d, 2 * d, rngs=rngs)
    self.head = nnx.Linear(2 * d, classes, rngs=rngs)

  def __call__(self, ids, tok_mask):
    b, t = ids.shape
    x = self.embed(ids) + self.pos(jnp.arange(t))[None]
    h = self.ln1(x)
    split = lambda y: y.reshape(b, t, self.heads, -1)
    q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    s = jnp.where(tok_mask[:, None, None, :], s, -1e9)
    a = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
    x = x + self.o(a.reshape(b, t, -1))
    y = jax.nn.gelu(self.ff(self.ln2(x)))
    m = tok_mask.astype(y.dtype)[..., None]
    pooled = jnp.sum(y * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    return self.head(pooled)


def _text_batch(b=5, t=6, vocab=23, seed=4):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  ids = jax.random.randint(k1, (b, t), 0, 5)  # small range: repeated ids
  lengths = jax.random.randint(k2, (b,), 2, t + 1)
  tok_mask = jnp.arange(t)[None] < lengths[:, None]
  return {"ids": ids, "mask": tok_mask,
          "label": jax.random.randint(k3, (b,), 0, 3)}


def test_transformer_embed_layernorm_attention():
  model = TinyTransformer(nnx.Rngs(5))
  loss_fn, params = _nnx_loss(model, lambda m, b: m(b["ids"], b["mask"]))
  mask = np.array([1, 1, 0, 1, 1], bool)
  _check(loss_fn, params, _text_batch(), mask, expect_fallback=False)


def test_microbatched_matches():
  model = TinyTransformer(nnx.Rngs(6))
  loss_fn, params = _nnx_loss(model, lambda m, b: m(b["ids"], b["mask"]))
  batch = _text_batch(b=6, seed=7)
  mask = jnp.array([1, 0, 1, 1, 1, 1], bool)
  full = jax.jit(ghost_clipped_grad(loss_fn, 1.0))(params, batch, mask, None)
  micro = jax.jit(ghost_clipped_grad(loss_fn, 1.0, microbatch_size=2))(
      params, batch, mask, None)
  np.testing.assert_allclose(micro[1].per_example_norms,
                             full[1].per_example_norms, rtol=RTOL)
  for a, r in zip(jax.tree.leaves(micro[0]), jax.tree.leaves(full[0])):
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6)
  assert micro[1].aux["logits"].shape == (6, 3)


class Mixed(nnx.Module):
  """Supported layers next to a conv, a tied embedding and a reparametrised
  weight (exp of a parameter), which must fall back to vmap."""

  def __init__(self, rngs, vocab=11, d=6):
    self.embed = nnx.Embed(vocab, d, rngs=rngs)  # tied: lookup + output
    self.conv = nnx.Conv(d, d, kernel_size=(3,), rngs=rngs)
    self.log_scale = nnx.Param(0.1 * jnp.arange(d, dtype=jnp.float32))
    self.dense = nnx.Linear(d, d, rngs=rngs)
    self.head = nnx.Linear(vocab, 3, rngs=rngs)

  def __call__(self, ids):
    x = self.embed(ids)
    x = jax.nn.relu(self.conv(x)) * jnp.exp(self.log_scale[...])[None, None]
    x = self.dense(x).mean(axis=1)
    return self.head(self.embed.attend(x))


def test_mixed_supported_and_fallback():
  loss_fn, params = _nnx_loss(Mixed(nnx.Rngs(8)), lambda m, b: m(b["ids"]))
  k1, k2 = jax.random.split(jax.random.key(9))
  batch = {"ids": jax.random.randint(k1, (5, 4), 0, 11),
           "label": jax.random.randint(k2, (5,), 0, 3)}
  mask = np.array([1, 1, 1, 0, 1], bool)
  stats = _check(loss_fn, params, batch, mask, expect_fallback=True)
  # embed (tied), conv kernel and log_scale fall back; the conv bias (a
  # broadcast add), dense and head are ghost layers.
  assert int(stats.num_fallback_params) == 3


def test_plain_function_model_weight_shared():
  """A params-dict model (no NNX) using one matrix twice: falls back."""
  k = jax.random.split(jax.random.key(10), 4)
  params = {"w": jax.random.normal(k[0], (5, 5)) * 0.5,
            "b": jnp.zeros((5,)),
            "out": jax.random.normal(k[1], (5, 2))}

  def loss_fn(p, batch, rng):
    del rng
    h = jnp.tanh(batch["x"] @ p["w"] + p["b"][None])
    h = jnp.tanh(h @ p["w"])
    return _ce(h @ p["out"], batch["label"]), None

  batch = {"x": jax.random.normal(k[2], (4, 5)) * 2,
           "label": jax.random.randint(k[3], (4,), 0, 2)}
  _check(loss_fn, params, batch, np.ones(4, bool), expect_fallback=True)


def test_batch_mixing_model_refused():
  params = {"w": jnp.ones((4, 2))}

  def loss_fn(p, batch, rng):
    del rng
    x = batch["x"]
    x = (x - x.mean(axis=0, keepdims=True)) / (
        x.std(axis=0, keepdims=True) + 1e-5)  # batch statistics
    return _ce(x @ p["w"], batch["label"]), None

  batch = {"x": jnp.arange(12.0).reshape(3, 4),
           "label": jnp.zeros((3,), jnp.int32)}
  fn = ghost_clipped_grad(loss_fn, 1.0)
  with pytest.raises(ValueError, match="depends only on example i"):
    fn(params, batch, jnp.ones(3, bool), None)


def test_bad_arguments():
  with pytest.raises(ValueError, match="l2_clip"):
    ghost_clipped_grad(lambda *a: None, -1.0)
  with pytest.raises(ValueError, match="microbatch_size"):
    ghost_clipped_grad(lambda *a: None, 1.0, microbatch_size=0)


def test_trustjax_transformer_classifier():
  from trustjax import models
  model = models.TransformerClassifier(23, 3, d_model=8, num_layers=1,
                                       num_heads=2, d_ff=16, max_len=6,
                                       rngs=nnx.Rngs(11))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = models.classifier_loss_fn(graphdef, rest=rest)
  mask = np.array([1, 1, 1, 1, 0], bool)
  _check(loss_fn, params, _text_batch(seed=12), mask,
         expect_fallback=False)


def test_rng_with_fallback_uses_vmap_for_all():
  """A loss that uses its rng, with a shared weight: everything via vmap."""
  k = jax.random.split(jax.random.key(13), 3)
  params = {"w": jax.random.normal(k[0], (4, 4)), "out": jnp.ones((4, 2))}

  def loss_fn(p, batch, rng):
    h = jnp.tanh(jnp.tanh(batch["x"] @ p["w"]) @ p["w"])
    noise = jax.random.normal(rng, h.shape) if rng is not None else 0.0
    h = h + 0.0 * noise  # rng is used but does not change the value
    return _ce(h @ p["out"], batch["label"])

  batch = {"x": jax.random.normal(k[1], (4, 4)),
           "label": jax.random.randint(k[2], (4,), 0, 2)}
  mask = np.array([1, 1, 1, 0], bool)
  ref_norms, ref_sum, l2_clip = _reference(
      lambda p, b, r: (loss_fn(p, b, None), None), params, batch, mask)
  fn = ghost_clipped_grad(loss_fn, l2_clip, has_aux=False)
  with pytest.warns(UserWarning, match="fall back to vmap"):
    gsum, stats = fn(params, batch, jnp.asarray(mask), jax.random.key(0))
  np.testing.assert_allclose(stats.per_example_norms, ref_norms, rtol=RTOL)
  for a, r in zip(jax.tree.leaves(gsum), jax.tree.leaves(ref_sum)):
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6)
  assert stats.num_fallback_params == 2


def test_traced_clip_under_vmap_over_models():
  """One clip norm per stacked model (traced under vmap) on the ghost path
  equals the Python-loop reference at each model's own clip norm."""
  from trustjax.privacy import clipped_grad
  model = TinyTransformer(nnx.Rngs(5))
  loss_fn, params = _nnx_loss(model, lambda m, b: m(b["ids"], b["mask"]))
  batch = _text_batch()
  mask = np.array([1, 1, 0, 1, 1], bool)
  norms, _, median = _reference(loss_fn, params, batch, mask)
  clips = np.array([0.5 * median, median, 2.0 * median], np.float32)

  def one(c):
    g, st = clipped_grad(loss_fn, c, method="ghost")(params, batch, mask,
                                                      None)
    return g, st.frac_clipped
  gs, fracs = jax.jit(jax.vmap(one))(clips)
  grad1 = jax.jit(jax.grad(lambda p, b1: loss_fn(p, b1, None)[0][0]))
  per_ex = [grad1(params, jax.tree.map(lambda x: x[i:i + 1], batch))
            for i in range(len(mask))]
  for k, c in enumerate(clips):
    ref = jax.tree.map(jnp.zeros_like, params)
    for i in np.flatnonzero(mask):
      ref = jax.tree.map(lambda t, g: t + g * min(1.0, c / norms[i]), ref,
                         per_ex[i])
    scale = max(float(np.max(np.abs(r))) for r in jax.tree.leaves(ref))
    for a, r in zip(jax.tree.leaves(gs), jax.tree.leaves(ref)):
      np.testing.assert_allclose(np.asarray(a[k]) / scale,
                                 np.asarray(r) / scale, rtol=0, atol=RTOL)
    np.testing.assert_allclose(
        fracs[k], np.sum(mask & (norms > c)) / mask.sum(), rtol=1e-6)
