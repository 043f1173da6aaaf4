"""clipped_grad against an independent Python loop (per-example jax.grad)."""


import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trustjax.privacy.clipping import check_finite
from trustjax.privacy.clipping import clipped_grad
from trustjax.privacy.clipping import total_l2_sensitivity
from trustjax.privacy.tree import uniform_per_layer_clip
from trustjax.privacy.tree import unflatten_clips

HSET = hypothesis.settings(max_examples=15, deadline=None, derandomize=True)


# --- tiny NNX models -------------------------------------------------------

class TinyMLP(nnx.Module):

  def __init__(self, din, dh, dout, *, rngs):
    self.l1 = nnx.Linear(din, dh, rngs=rngs)
    self.l2 = nnx.Linear(dh, dout, rngs=rngs)

  def __call__(self, x):
    return self.l2(jnp.tanh(self.l1(x)))


class TinyTransformer(nnx.Module):
  """Embedding, one attention block with nnx.Linear q/k/v/o, LayerNorm, head."""

  def __init__(self, vocab, d, ncls, *, rngs):
    self.embed = nnx.Embed(vocab, d, rngs=rngs)
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.q = nnx.Linear(d, d, rngs=rngs)
    self.k = nnx.Linear(d, d, rngs=rngs)
    self.v = nnx.Linear(d, d, rngs=rngs)
    self.o = nnx.Linear(d, d, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.head = nnx.Linear(d, ncls, rngs=rngs)

  def __call__(self, ids, mask, drop_key=None):
    x = self.embed(ids)
    h = self.ln1(x)
    q, k, v = self.q(h), self.k(h), self.v(h)
    att = jnp.einsum("btd,bsd->bts", q, k) / np.sqrt(q.shape[-1])
    att = jnp.where(mask[:, None, :], att, -1e9)
    x = x + self.o(jnp.einsum("bts,bsd->btd", jax.nn.softmax(att, -1), v))
    if drop_key is not None:  # dropout: exercises the per-example rng
      keep = jax.random.bernoulli(drop_key, 0.8, x.shape)
      x = jnp.where(keep, x / 0.8, 0.0)
    x = self.ln2(x)
    w = mask.astype(x.dtype)
    pooled = jnp.einsum("btd,bt->bd", x, w) / jnp.maximum(
        w.sum(1, keepdims=True), 1.0)
    return self.head(pooled)


def _mlp_setup(b=8):
  model = TinyMLP(5, 7, 3, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.normal(size=(b, 5)) * 3, jnp.float32),
           "label": jnp.asarray(rng.integers(0, 3, b), jnp.int32)}

  def loss_fn(p, bt, r):
    logits = nnx.merge(graphdef, p)(bt["x"])
    ce = -jax.nn.log_softmax(logits)[jnp.arange(logits.shape[0]),
                                     bt["label"]]
    return ce, {"logits": logits}
  return params, batch, loss_fn


def _transformer_setup(b=8, t=6):
  model = TinyTransformer(11, 8, 3, rngs=nnx.Rngs(1))
  graphdef, params = nnx.split(model, nnx.Param)
  rng = np.random.default_rng(1)
  lens = rng.integers(2, t + 1, b)
  batch = {"ids": jnp.asarray(rng.integers(0, 11, (b, t)), jnp.int32),
           "mask": jnp.asarray(np.arange(t)[None] < lens[:, None]),
           "label": jnp.asarray(rng.integers(0, 3, b), jnp.int32)}

  def loss_fn(p, bt, r):
    logits = nnx.merge(graphdef, p)(bt["ids"], bt["mask"], r)
    ce = -jax.nn.log_softmax(logits)[jnp.arange(logits.shape[0]),
                                     bt["label"]]
    return ce, {"logits": logits}
  return params, batch, loss_fn


def _reference(loss_fn, params, batch, mask, rng, l2_clip):
  """Python loop: per-example jax.grad, clip each group, sum real rows."""
  @jax.jit
  def one(p, ex, r):
    return jax.grad(lambda q: jnp.sum(loss_fn(q, ex, r)[0]))(p)

  b = int(np.asarray(mask).shape[0])
  treedef = jax.tree.structure(l2_clip)
  clips = [float(c) for c in jax.tree.leaves(l2_clip)]
  total = jax.tree.map(lambda x: np.zeros(x.shape, np.float64), params)
  norms = []
  for i in range(b):
    ex = jax.tree.map(lambda x: x[i:i + 1], batch)
    r = None if rng is None else jax.random.fold_in(rng, i)
    g = one(params, ex, r)
    norms.append(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                             for x in jax.tree.leaves(g))))
    if not mask[i]:
      continue
    groups = treedef.flatten_up_to(g)
    scaled = []
    for c, sub in zip(clips, groups):
      n = np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                      for x in jax.tree.leaves(sub)))
      f = min(1.0, c / n) if n > 0 else 1.0
      scaled.append(jax.tree.map(lambda x, f=f: np.asarray(x, np.float64) * f,
                                 sub))
    total = jax.tree.map(np.add, total, treedef.unflatten(scaled))
  return total, np.asarray(norms)


def _assert_tree_close(got, ref, rel=1e-5):
  gl, rl = jax.tree.leaves(got), jax.tree.leaves(ref)
  assert len(gl) == len(rl)
  diff = np.sqrt(sum(np.sum(np.square(np.asarray(a, np.float64) - b))
                     for a, b in zip(gl, rl)))
  scale = np.sqrt(sum(np.sum(np.square(b)) for b in rl))
  assert diff <= rel * scale, (diff, scale)


MASK = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)


@pytest.mark.parametrize("setup", [_mlp_setup, _transformer_setup],
                         ids=["mlp", "transformer"])
@pytest.mark.parametrize("microbatch_size", [None, 2])
def test_matches_python_loop(setup, microbatch_size):
  params, batch, loss_fn = setup()
  rng = jax.random.key(3)
  c = 0.5
  fn = jax.jit(clipped_grad(loss_fn, c, method="vmap",
                            microbatch_size=microbatch_size))
  got, stats = fn(params, batch, jnp.asarray(MASK), rng)
  ref, norms = _reference(loss_fn, params, batch, MASK, rng, c)
  _assert_tree_close(got, ref)
  np.testing.assert_allclose(stats.per_example_norms, norms, rtol=1e-5)
  assert int(stats.num_real) == MASK.sum()
  assert float(stats.frac_clipped) == pytest.approx(
      np.mean(norms[MASK] > c))
  assert stats.aux["logits"].shape == (8, 3)
  assert int(stats.num_nonfinite) == 0
  assert stats.per_layer_norms is None
  # the check is not vacuous: some rows clipped, some not, padding mattered
  assert 0 < float(stats.frac_clipped) <= 1


def test_per_layer_matches_loop_and_sensitivity():
  params, batch, loss_fn = _transformer_setup()
  l2_clip = jax.tree.map(lambda _: 0.0, params)
  clips = np.linspace(0.05, 0.3, len(jax.tree.leaves(l2_clip)))
  l2_clip = unflatten_clips(l2_clip, [float(c) for c in clips])
  rng = jax.random.key(4)
  fn = clipped_grad(loss_fn, l2_clip, method="vmap", microbatch_size=4)
  assert fn.sensitivity == pytest.approx(np.sqrt(np.sum(clips ** 2)))
  assert total_l2_sensitivity(l2_clip) == pytest.approx(fn.sensitivity)
  got, stats = jax.jit(fn)(params, batch, jnp.asarray(MASK), rng)
  ref, norms = _reference(loss_fn, params, batch, MASK, rng, l2_clip)
  _assert_tree_close(got, ref)
  assert stats.per_layer_norms.shape == (8, len(clips))
  np.testing.assert_allclose(
      np.sqrt(np.sum(np.square(stats.per_layer_norms), 1)), norms, rtol=1e-5)


def test_uniform_per_layer_clip_keeps_total():
  params, _, _ = _mlp_setup()
  clips = uniform_per_layer_clip(params, 2.0)
  assert total_l2_sensitivity(clips) == pytest.approx(2.0)


def test_prefix_per_layer_groups():
  """A dict prefix groups whole sub-trees (here: one threshold per layer)."""
  def loss_fn(p, b, r):
    h = jnp.tanh(b["x"] @ p["l1"]["w"])
    out = h @ p["l2"]["w"] + p["l2"]["b"][None]
    return jnp.sum(out ** 2, -1), None
  rng = np.random.default_rng(0)
  params = {"l1": {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)},
            "l2": {"w": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32),
                   "b": jnp.ones((2,), jnp.float32)}}
  batch = {"x": jnp.asarray(rng.normal(size=(6, 3)) * 2, jnp.float32)}
  mask = np.ones(6, bool)
  l2_clip = {"l1": 0.3, "l2": 0.2}
  got, stats = clipped_grad(loss_fn, l2_clip, method="vmap")(
      params, batch, mask, None)
  ref, _ = _reference(loss_fn, params, batch, mask, None, l2_clip)
  _assert_tree_close(got, ref)
  assert stats.per_layer_norms.shape == (6, 2)
  with pytest.raises(ValueError, match="prefix"):
    clipped_grad(loss_fn, {"l1": 0.3, "zz": 1.0})(params, batch, mask, None)


def test_auto_method_matches_loop():
  """Whatever path "auto" picks (ghost or vmap), it must match the loop."""
  params, batch, loss_fn = _mlp_setup()
  fn = clipped_grad(loss_fn, 0.5)
  assert fn.method in ("auto", "vmap")
  got, _ = jax.jit(fn)(params, batch, jnp.asarray(MASK), jax.random.key(0))
  ref, _ = _reference(loss_fn, params, batch, MASK, jax.random.key(0), 0.5)
  _assert_tree_close(got, ref, rel=1e-4)


@pytest.mark.parametrize("nan_policy", ["raise", "drop"])
def test_ghost_method_through_clipped_grad(nan_policy):
  """method="ghost" keeps clipped_grad's contract."""
  loss_fn, params, batch, mask = _nan_setup()
  def smooth(p, b, r):
    return jnp.sum(jnp.tanh(b["x"] @ p["w"]) ** 2 + b["x"] @ p["w"], -1), None
  fn = jax.jit(clipped_grad(smooth, 0.5, method="ghost", nan_policy=nan_policy))
  got, stats = fn(params, batch, mask, None)
  ref, _ = _reference(smooth, params, batch, mask, None, 0.5)
  _assert_tree_close(got, ref, rel=1e-4)
  assert isinstance(stats, type(clipped_grad(smooth, 1.0, method="vmap")(
      params, batch, mask, None)[1]))
  # non-finite rows: NaN sum under "raise", weight 0 under "drop"
  got, stats = jax.jit(clipped_grad(loss_fn, 0.5, method="ghost",
                                    nan_policy=nan_policy))(
                                        params, batch, mask, None)
  assert int(stats.num_nonfinite) == 1
  assert np.all(np.isfinite(np.asarray(got["w"]))) == (nan_policy == "drop")


def test_trustjax_transformer_classifier():
  from trustjax import models
  model = models.TransformerClassifier(13, 3, d_model=8, num_layers=1,
                                       num_heads=2, d_ff=16, max_len=6,
                                       rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = models.classifier_loss_fn(graphdef, rest=rest)
  rng = np.random.default_rng(2)
  batch = {"ids": jnp.asarray(rng.integers(0, 13, (8, 6)), jnp.int32),
           "mask": jnp.asarray(rng.random((8, 6)) < 0.8),
           "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32)}
  fn = jax.jit(clipped_grad(loss_fn, 0.3, method="vmap"))
  got, _ = fn(params, batch, jnp.asarray(MASK), jax.random.key(0))
  ref, _ = _reference(loss_fn, params, batch, MASK, jax.random.key(0), 0.3)
  _assert_tree_close(got, ref)


def test_has_aux_false_and_no_mask():
  params, batch, loss_fn = _mlp_setup()
  fn = clipped_grad(lambda p, b, r: loss_fn(p, b, r)[0], 1.0, method="vmap",
                    has_aux=False)
  got, stats = jax.jit(fn)(params, batch)
  ref, _ = _reference(loss_fn, params, batch, np.ones(8, bool), None, 1.0)
  _assert_tree_close(got, ref)
  assert stats.aux is None and int(stats.num_real) == 8


# --- invariants (hypothesis) ----------------------------------------------

def _linear_loss(p, b, r):
  return jnp.sum((b["x"] @ p["w"] + p["b"][None] - b["y"]) ** 2, -1), None


_LIN_PARAMS = {"w": jnp.full((4, 2), 0.3, jnp.float32),
               "b": jnp.zeros((2,), jnp.float32)}


@jax.jit
def _lin_clipped(c, x, y, mask):
  return clipped_grad(_linear_loss, c, method="vmap")(
      _LIN_PARAMS, {"x": x, "y": y}, mask, None)[0]


def _tree_norm(t):
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                           for x in jax.tree.leaves(t))))


_arr = lambda shape: st.lists(
    st.floats(-50, 50, allow_nan=False, width=32),
    min_size=int(np.prod(shape)), max_size=int(np.prod(shape))).map(
        lambda v: np.asarray(v, np.float32).reshape(shape))


@HSET
@hypothesis.given(x=_arr((1, 4)), y=_arr((1, 2)),
                  c=st.floats(1e-3, 10.0))
def test_clipped_norm_at_most_c(x, y, c):
  # a one-example sum is that example's clipped gradient
  g = _lin_clipped(jnp.float32(c), x, y, jnp.ones((1,), bool))
  assert _tree_norm(g) <= c * (1 + 1e-6)


@HSET
@hypothesis.given(x=_arr((5, 4)), y=_arr((5, 2)),
                  scale=st.floats(-1e3, 1e3, width=32),
                  j=st.integers(0, 4), c=st.floats(1e-2, 10.0))
def test_one_example_moves_sum_by_at_most(x, y, scale, j, c):
  """Replace-one (rescale example j's input): <= 2C; add/remove: <= C."""
  mask = jnp.ones((5,), bool)
  cc = jnp.float32(c)
  base = _lin_clipped(cc, x, y, mask)
  x2 = x.copy()
  x2[j] *= scale
  replaced = _lin_clipped(cc, x2, y, mask)
  removed = _lin_clipped(cc, x, y, mask.at[j].set(False))
  diff = lambda a, b: _tree_norm(jax.tree.map(
      lambda u, v: np.asarray(u, np.float64) - np.asarray(v, np.float64),
      a, b))
  assert diff(base, removed) <= c * (1 + 1e-5) + 1e-5
  assert diff(base, replaced) <= 2 * c * (1 + 1e-5) + 1e-5


@jax.jit
def _lin_per_layer(cw, cb, x, y):
  return clipped_grad(_linear_loss, {"b": cb, "w": cw}, method="vmap")(
      _LIN_PARAMS, {"x": x, "y": y}, None, None)


@HSET
@hypothesis.given(x=_arr((1, 4)), y=_arr((1, 2)),
                  cw=st.floats(1e-3, 5.0),
                  cb=st.floats(1e-3, 5.0))
def test_per_layer_threshold_bounds_each_layer(x, y, cw, cb):
  g, stats = _lin_per_layer(jnp.float32(cw), jnp.float32(cb), x, y)
  assert _tree_norm(g["w"]) <= cw * (1 + 1e-6)
  assert _tree_norm(g["b"]) <= cb * (1 + 1e-6)
  assert stats.per_layer_norms.shape == (1, 2)


# --- non-finite gradients --------------------------------------------------

def _nan_setup():
  def loss_fn(p, b, r):
    # sqrt of a negative number -> NaN loss and gradient for that row
    return jnp.sqrt(b["x"] @ p["w"]).sum(-1), None
  params = {"w": jnp.ones((3, 1), jnp.float32)}
  x = np.abs(np.random.default_rng(0).normal(size=(6, 3))).astype(np.float32)
  x[2] = -x[2]   # real row with NaN
  x[5] = -x[5]   # padding row with NaN
  mask = np.array([1, 1, 1, 1, 1, 0], bool)
  return loss_fn, params, {"x": jnp.asarray(x)}, mask


def test_nan_drop_gives_zero_weight():
  loss_fn, params, batch, mask = _nan_setup()
  got, stats = jax.jit(clipped_grad(loss_fn, 0.7, method="vmap",
                                    nan_policy="drop"))(
                                        params, batch, mask, None)
  ok = mask.copy()
  ok[2] = False
  ref, _ = _reference(loss_fn, params, batch, ok, None, 0.7)
  _assert_tree_close(got, ref)
  assert int(stats.num_nonfinite) == 1 and int(stats.num_real) == 5
  with pytest.raises(FloatingPointError):
    check_finite(stats)


def test_nan_raise_poisons_and_flags():
  loss_fn, params, batch, mask = _nan_setup()
  fn = jax.jit(clipped_grad(loss_fn, 0.7, method="vmap", microbatch_size=3))
  got, stats = fn(params, batch, mask, None)
  assert not np.all(np.isfinite(np.asarray(got["w"])))
  assert int(stats.num_nonfinite) == 1
  with pytest.raises(FloatingPointError, match="rows"):
    check_finite(stats)
  # no NaN padding row: the (cheaper) weighted-backward path must poison too
  got1, _ = fn(params, jax.tree.map(lambda x: x[:3], batch), mask[:3], None)
  assert not np.all(np.isfinite(np.asarray(got1["w"])))
  # the NaN padding row alone is harmless
  mask2 = mask.copy()
  mask2[2] = False
  got2, stats2 = fn(params, batch, mask2, None)
  assert np.all(np.isfinite(np.asarray(got2["w"])))
  assert int(stats2.num_nonfinite) == 0
  check_finite(stats2)


# --- argument validation ---------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(l2_clip=0.0), "l2_clip"),
    (dict(l2_clip=-1.0), "l2_clip"),
    (dict(l2_clip=float("inf")), "l2_clip"),
    (dict(l2_clip={"w": 1.0, "b": 0.0}), "l2_clip"),
    (dict(l2_clip=1.0, method="pmap"), "method"),
    (dict(l2_clip=1.0, nan_policy="ignore"), "nan_policy"),
    (dict(l2_clip=1.0, microbatch_size=0), "microbatch_size"),
])
def test_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    clipped_grad(_linear_loss, **kwargs)


def test_microbatch_must_divide_batch():
  fn = clipped_grad(_linear_loss, 1.0, method="vmap", microbatch_size=4)
  with pytest.raises(ValueError, match="divisible"):
    fn(_LIN_PARAMS, {"x": jnp.ones((6, 4)), "y": jnp.ones((6, 2))})


def test_mask_shape_checked():
  fn = clipped_grad(_linear_loss, 1.0, method="vmap")
  with pytest.raises(ValueError, match="mask"):
    fn(_LIN_PARAMS, {"x": jnp.ones((6, 4)), "y": jnp.ones((6, 2))},
       jnp.ones((5,), bool))
