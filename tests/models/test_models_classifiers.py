"""Shapes, masking, inputs_embeds and dropout of the text classifiers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trustjax import models

V, C, B, T = 50, 5, 3, 8


def _transformer(dropout=0.0, **kw):
  return models.TransformerClassifier(
      V, C, d_model=16, num_layers=2, num_heads=2, d_ff=32, max_len=T,
      dropout=dropout, rngs=nnx.Rngs(0), **kw)


def _bag(dropout=0.0):
  return models.BagOfEmbeddings(V, C, d_embed=16, d_hidden=32,
                                dropout=dropout, rngs=nnx.Rngs(0))


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  ids = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
  lens = np.array([T, 3, 1])
  mask = jnp.asarray(np.arange(T)[None] < lens[:, None])
  return ids, mask


MAKERS = [_transformer, _bag]


@functools.partial(nnx.jit, static_argnames=("deterministic",))
def _call(model, ids, mask, inputs_embeds=None, deterministic=True,
          rngs=None):
  # Jitted: one compile per test instead of one per eager op (test speed).
  return model(ids, mask, inputs_embeds=inputs_embeds,
               deterministic=deterministic, rngs=rngs)


@pytest.mark.parametrize("make", MAKERS)
def test_output_shape_and_dtype(make):
  ids, mask = _inputs()
  logits = _call(make(), ids, mask)
  assert logits.shape == (B, C) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("make", MAKERS)
def test_padded_ids_are_irrelevant(make):
  model = make()
  ids, mask = _inputs()
  other = jnp.where(mask, ids, (ids * 7 + 3) % V)
  assert not np.array_equal(other, ids)
  np.testing.assert_allclose(_call(model, ids, mask), _call(model, other, mask),
                             atol=1e-6)
  # ...but changing a real token does change the logits.
  changed = ids.at[1, 0].set((ids[1, 0] + 1) % V)
  assert not np.allclose(_call(model, ids, mask)[1],
                         _call(model, changed, mask)[1])


def test_shorter_sequence_with_padding_equals_unpadded():
  """Padding to a longer T (transformer) gives the logits of the short input."""
  model = _transformer()
  ids, _ = _inputs()
  short = ids[:, :3]
  full_mask = jnp.arange(T)[None].repeat(B, 0) < 3
  np.testing.assert_allclose(_call(model, short, jnp.ones((B, 3), bool)),
                             _call(model, ids, full_mask), atol=1e-5)


def test_attention_reference():
  """SelfAttention matches a per-head numpy loop with explicit masking."""
  attn = models.SelfAttention(8, 2, rngs=nnx.Rngs(1))
  x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  got = attn(jnp.asarray(x), models.attention_bias(jnp.asarray(mask)))
  w = {n: (np.asarray(getattr(attn, n).kernel[...]),
           np.asarray(getattr(attn, n).bias[...]))
       for n in ("query", "key", "value", "out")}
  lin = lambda n, a: a @ w[n][0] + w[n][1]
  ref = np.zeros_like(x)
  for b in range(2):
    q, k, v = lin("query", x[b]), lin("key", x[b]), lin("value", x[b])
    ctx = np.zeros((5, 8), np.float32)
    for h in range(2):
      sl = slice(4 * h, 4 * h + 4)
      s = q[:, sl] @ k[:, sl].T / 2.0
      s = np.where(mask[b][None], s, -np.inf)
      p = np.exp(s - s.max(-1, keepdims=True))
      p /= p.sum(-1, keepdims=True)
      ctx[:, sl] = p @ v[:, sl]
    ref[b] = lin("out", ctx)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", MAKERS)
def test_inputs_embeds_equals_ids_path(make):
  model = make()
  ids, mask = _inputs()
  np.testing.assert_allclose(
      _call(model, None, mask, inputs_embeds=model.embed(ids)),
      _call(model, ids, mask),
      rtol=1e-6, atol=1e-6)
  # Gradients w.r.t. input embeddings exist and vanish at padded positions.
  graphdef, state = nnx.split(model)
  g = jax.jit(jax.grad(lambda e: nnx.merge(graphdef, state)(
      None, mask, inputs_embeds=e).sum()))(model.embed(ids))
  assert g.shape == (B, T, model.embed(ids).shape[-1])
  assert np.abs(np.asarray(g)[~np.asarray(mask)]).max() == 0.0
  assert np.abs(np.asarray(g)[np.asarray(mask)]).max() > 0.0


@pytest.mark.parametrize("make", MAKERS)
def test_dropout_keyed(make):
  model = make(dropout=0.5)
  ids, mask = _inputs()
  det = _call(model, ids, mask)
  np.testing.assert_array_equal(det, _call(model, ids, mask, deterministic=True,
                                           rngs=jax.random.key(0)))
  k0, k1 = jax.random.key(0), jax.random.key(1)
  a = _call(model, ids, mask, deterministic=False, rngs=k0)
  np.testing.assert_array_equal(a, _call(model, ids, mask, deterministic=False,
                                         rngs=k0))
  assert not np.allclose(a, _call(model, ids, mask, deterministic=False,
                                rngs=k1))
  assert not np.allclose(a, det)
  with pytest.raises(ValueError, match="rngs"):
    model(ids, mask, deterministic=False)


def test_bf16_activations_keep_f32_params():
  model = _transformer(dtype=jnp.bfloat16)
  ids, mask = _inputs()
  ref = _transformer()
  params = nnx.state(model, nnx.Param)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  out = _call(model, ids, mask)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, _call(ref, ids, mask), atol=0.1)


def test_mlp_shapes_and_validation():
  mlp = models.MLP(6, [8, 4], 3, rngs=nnx.Rngs(0))
  assert mlp(jnp.ones((2, 6))).shape == (2, 3)
  with pytest.raises(ValueError, match="hidden"):
    models.MLP(6, [0], 3, rngs=nnx.Rngs(0))


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="num_heads"):
    models.TransformerClassifier(V, C, d_model=10, num_heads=3,
                                 rngs=nnx.Rngs(0))
  model = _transformer()
  with pytest.raises(ValueError, match="max_len"):
    model(jnp.zeros((1, T + 1), jnp.int32), jnp.ones((1, T + 1), bool))


def test_split_merge_round_trip():
  model = _transformer()
  ids, mask = _inputs()
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params2 = jax.tree.map(lambda x: x + 0.01, params)
  merged = nnx.merge(graphdef, params, rest)
  np.testing.assert_array_equal(merged(ids, mask), model(ids, mask))
  moved = nnx.merge(graphdef, params2, rest)
  assert not np.allclose(moved(ids, mask), model(ids, mask))
  _, params3, _ = nnx.split(moved, nnx.Param, ...)
  for a, b in zip(jax.tree.leaves(params3), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(a, b)
