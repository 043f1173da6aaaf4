"""classifier_loss_fn, accuracy, evaluate, and a tiny model learning a task."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from trustjax import models

V, C, B, T = 40, 3, 6, 8


def _batch(seed=0, n=B):
  rng = np.random.default_rng(seed)
  lens = rng.integers(1, T + 1, n)
  return {"ids": jnp.asarray(rng.integers(0, V, (n, T)), jnp.int32),
          "mask": jnp.asarray(np.arange(T)[None] < lens[:, None]),
          "label": jnp.asarray(rng.integers(0, C, n), jnp.int32)}


def _split(dropout=0.0):
  model = models.TransformerClassifier(V, C, d_model=16, num_layers=1,
                                       num_heads=2, d_ff=32, max_len=T,
                                       dropout=dropout, rngs=nnx.Rngs(0))
  return model, nnx.split(model, nnx.Param, ...)


def test_loss_is_per_example_cross_entropy():
  model, (graphdef, params, rest) = _split()
  batch = _batch()
  ce, aux = models.classifier_loss_fn(graphdef, rest=rest)(params, batch, None)
  logits = np.asarray(model(batch["ids"], batch["mask"]), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ref = -logp[np.arange(B), np.asarray(batch["label"])]
  assert ce.shape == (B,)
  np.testing.assert_allclose(ce, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux["logits"], logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("train", [False, True])
def test_vmap_over_single_examples_matches_batch(train):
  _, (graphdef, params, rest) = _split(dropout=0.3 if train else 0.0)
  loss_fn = models.classifier_loss_fn(graphdef, rest=rest, train=train)
  batch = _batch()
  single = jax.tree.map(lambda x: x[:, None], batch)     # [B, 1, ...]
  keys = jax.random.split(jax.random.key(0), B)
  per_ex = jax.jit(jax.vmap(lambda b, k: loss_fn(params, b, k)[0][0]))(
      single, keys)
  jit_loss = jax.jit(loss_fn)
  if train:   # dropout drawn per example from its own key: loop reference.
    ref = [jit_loss(params, jax.tree.map(lambda x: x[i:i + 1], batch),
                    keys[i])[0][0] for i in range(B)]
  else:
    ref = jit_loss(params, batch, None)[0]
  np.testing.assert_allclose(per_ex, ref, rtol=1e-5, atol=1e-6)
  # Per-example gradients: the mean of vmapped grads is the batch grad.
  if not train:
    g_ex = jax.jit(jax.vmap(jax.grad(lambda p, b: loss_fn(p, b, None)[0][0]),
                            in_axes=(None, 0)))(params, single)
    g = jax.jit(jax.grad(lambda p: loss_fn(p, batch, None)[0].mean()))(params)
    for a, b in zip(jax.tree.leaves(g_ex), jax.tree.leaves(g)):
      np.testing.assert_allclose(a.mean(0), b, rtol=1e-4, atol=1e-6)


def test_train_flag_controls_dropout():
  _, (graphdef, params, rest) = _split(dropout=0.5)
  batch = _batch()
  k0, k1 = jax.random.key(0), jax.random.key(1)
  ev = models.classifier_loss_fn(graphdef, rest=rest)
  tr = models.classifier_loss_fn(graphdef, rest=rest, train=True)
  np.testing.assert_array_equal(ev(params, batch, k0)[0],
                                ev(params, batch, k1)[0])
  np.testing.assert_array_equal(tr(params, batch, k0)[0],
                                tr(params, batch, k0)[0])
  assert not np.allclose(tr(params, batch, k0)[0], tr(params, batch, k1)[0])


def test_accuracy_matches_python_loop():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(20, 4))
  labels = rng.integers(0, 4, 20)
  m = rng.random(20) < 0.6
  ref = sum(int(np.argmax(logits[i]) == labels[i]) for i in range(20) if m[i])
  np.testing.assert_allclose(models.accuracy(logits, labels, m), ref / m.sum(),
                             rtol=1e-6)
  assert np.isnan(models.accuracy(logits, labels, np.zeros(20, bool)))
  jitted = jax.jit(models.accuracy)(logits, labels, m)
  np.testing.assert_allclose(jitted, ref / m.sum(), rtol=1e-6)


def test_evaluate_matches_full_batch():
  model, (graphdef, params, rest) = _split()
  data = {k: np.asarray(v) for k, v in _batch(seed=3, n=23).items()}
  out = models.evaluate(graphdef, params, data, rest=rest, batch_size=8,
                        return_logits=True)
  logits = np.asarray(model(data["ids"], data["mask"]))
  np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-6)
  assert out["num_examples"] == 23
  assert out["accuracy"] == pytest.approx(
      np.mean(logits.argmax(-1) == data["label"]))
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, data["label"])
  assert out["loss"] == pytest.approx(float(np.mean(ce)), rel=1e-5)


@pytest.mark.parametrize("name", ["transformer", "bag"])
def test_tiny_model_learns_keyword_task(name):
  """Label = which of three keyword tokens occurs in the (padded) text."""
  rng = np.random.default_rng(0)
  n, t = 256, 8
  lens = rng.integers(2, t + 1, n)
  ids = rng.integers(3, V, (n, t))
  labels = rng.integers(0, 3, n)
  pos = (rng.random(n) * lens).astype(int)
  ids[np.arange(n), pos] = labels          # keyword ids 0, 1, 2
  mask = np.arange(t)[None] < lens[:, None]
  ids = np.where(mask, ids, rng.integers(0, 3, (n, t)))   # noisy padding
  data = {"ids": ids.astype(np.int32), "mask": mask,
          "label": labels.astype(np.int32)}
  cfg = {"name": name, "d_model": 32, "num_layers": 1, "num_heads": 2,
         "d_ff": 64, "d_embed": 32, "d_hidden": 32}
  import ml_collections
  model = models.build_model(ml_collections.ConfigDict(cfg), vocab_size=V,
                             num_classes=3, max_len=t, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = models.classifier_loss_fn(graphdef, rest=rest)
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, batch):
    loss, g = jax.value_and_grad(lambda p: loss_fn(p, batch, None)[0].mean())(
        params)
    u, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, u), opt, loss

  for s in range(300):
    idx = np.random.default_rng([0, s]).choice(n, 32, replace=False)
    params, opt, _ = step(params, opt, {k: v[idx] for k, v in data.items()})
  acc = models.evaluate(graphdef, params, data, rest=rest, batch_size=128)
  assert acc["accuracy"] > 0.95, acc


def test_feature_batches_for_mlp_without_rest():
  """An MLP batch carries "x"; params-only split (no rest) also works."""
  mlp = models.MLP(5, [4], 3, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(mlp, nnx.Param)
  rng = np.random.default_rng(0)
  data = {"x": rng.normal(size=(10, 5)).astype(np.float32),
          "label": rng.integers(0, 3, 10).astype(np.int32)}
  ce, aux = models.classifier_loss_fn(graphdef)(params, data, None)
  np.testing.assert_allclose(aux["logits"], mlp(data["x"]), rtol=1e-6)
  out = models.evaluate(graphdef, params, data, batch_size=4)
  assert out["loss"] == pytest.approx(float(np.mean(ce)), rel=1e-5)
  with pytest.raises(ValueError, match="'ids' and 'mask'"):
    models.classifier_loss_fn(graphdef)(params, {"label": data["label"]}, None)
