"""Prediction sensitivity: analytic reference, zero when the classifier
ignores the protected features, growth with reliance on them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trustjax.fairness import sensitivity as S
from trustjax.models import BagOfEmbeddings
from trustjax.models import TransformerClassifier

B, T, D, C, K = 6, 5, 8, 3, 3      # K: dims the protected model reads


def pooled(e, m):
  m = m.astype(jnp.float32)
  return (e * m[..., None]).sum(1) / m.sum(1, keepdims=True)


def linear_classifier(w):
  return lambda e, m: pooled(e, m) @ w                  # logits [B, C]


def protected_model(u):
  return lambda e, m: pooled(e, m) @ u                  # one logit [B]


def data(seed=0):
  rng = np.random.default_rng(seed)
  e = rng.normal(size=(B, T, D)).astype(np.float32)
  m = np.ones((B, T), np.int32)
  m[1, 3:] = 0
  m[4, 1:] = 0
  return e, m


def reference_ps(e, m, w, u, v, features):
  """Closed-form gradients of softmax(W^T pool) and sigmoid(u^T pool)."""
  out = []
  for b in range(B):
    n = m[b].sum()
    h = (e[b] * m[b][:, None]).sum(0) / n
    z = h @ w
    p = np.exp(z - z.max())
    p /= p.sum()
    dp_dh = p[:, None] * (w.T - p @ w.T)                 # [C, D]
    g = 1 / (1 + np.exp(-(h @ u)))
    dq_dh = g * (1 - g) * u                              # [D]
    tok = m[b][:, None] / n                              # [T, 1]
    vv = np.full(C, 1 / C) if v == "uniform" else np.eye(C)[p.argmax()]
    a = np.einsum("c,ctd->td", vv,
                  np.abs(dp_dh[:, None, :] * tok[None]))
    uu = np.abs(dq_dh[None, :] * tok)
    if features == "token":
      a, uu = a.sum(1), uu.sum(1)
    out.append(np.sum(a * uu / uu.sum()))
  return np.array(out)


@pytest.mark.parametrize("v", ["uniform", "predicted"])
@pytest.mark.parametrize("features", ["embedding", "token"])
def test_matches_closed_form(v, features):
  e, m = data()
  rng = np.random.default_rng(1)
  w = rng.normal(size=(D, C)).astype(np.float32)
  u = np.r_[rng.normal(size=K), np.zeros(D - K)].astype(np.float32)
  ps = S.prediction_sensitivity(linear_classifier(w), protected_model(u),
                                e, m, class_weights=v, features=features,
                                batch_size=4)
  np.testing.assert_allclose(ps, reference_ps(e, m, w, u, v, features),
                             rtol=2e-4, atol=1e-7)


def test_zero_when_classifier_ignores_protected_features_and_grows():
  e, m = data(2)
  rng = np.random.default_rng(3)
  u = np.r_[rng.normal(size=K), np.zeros(D - K)].astype(np.float32)
  w0 = np.r_[np.zeros((K, C)), rng.normal(size=(D - K, C))].astype(
      np.float32)
  leak = np.r_[rng.normal(size=(K, C)), np.zeros((D - K, C))].astype(
      np.float32)

  def mlp(alpha):   # nonlinear classifier; alpha: reliance on dims < K
    wa = w0 + alpha * leak
    return lambda x, mm: jnp.tanh(pooled(x, mm) @ wa) @ jnp.eye(C) * 3

  aps = [S.accumulated_prediction_sensitivity(
      mlp(a), protected_model(u), e, m).aps for a in (0.0, 0.5, 1.0, 2.0)]
  ps0 = S.prediction_sensitivity(mlp(0.0), protected_model(u), e, m)
  assert np.all(ps0 == 0.0)
  assert aps[0] == 0.0
  assert aps[1] > 0 and np.all(np.diff(aps) > 0), aps
  # token-level features can't separate dims: both read every token
  tok = S.prediction_sensitivity(mlp(0.0), protected_model(u), e, m,
                                 features="token")
  assert np.all(tok > 0)


def test_nnx_classifiers_batched_equals_one_by_one_and_ignores_padding():
  clf = TransformerClassifier(50, 4, d_model=16, num_layers=1, num_heads=2,
                              d_ff=32, max_len=8, rngs=nnx.Rngs(0))
  prot = BagOfEmbeddings(50, 2, d_embed=12, d_hidden=8, rngs=nnx.Rngs(1))
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 50, (5, 8)).astype(np.int32)
  mask = np.ones((5, 8), np.int32)
  mask[2, 5:] = 0
  cm, pm = S.from_nnx(clf), S.from_nnx(prot)
  ps = S.prediction_sensitivity(cm, pm, ids, mask, features="token",
                                batch_size=2)
  one = [S.prediction_sensitivity(cm, pm, ids[i:i + 1], mask[i:i + 1],
                                  features="token")[0] for i in (0, 2)]
  np.testing.assert_allclose(ps[[0, 2]], one, rtol=1e-5)
  # >= 0; 0 where every ReLU unit of the protected bag model is off (its
  # output then depends on no token locally, so w = 0)
  assert np.all(ps >= 0) and np.sum(ps > 0) >= 4 and np.all(np.isfinite(ps))
  ids2 = ids.copy()
  ids2[2, 5:] = 7                                    # padded ids changed
  ps2 = S.prediction_sensitivity(cm, pm, ids2, mask, features="token",
                                 batch_size=2)
  assert ps2[2] == pytest.approx(ps[2], rel=1e-5)
  with pytest.raises(ValueError, match="same embeddings"):
    S.prediction_sensitivity(cm, pm, ids, mask, features="embedding")


def test_bad_arguments():
  e, m = data()
  f = linear_classifier(np.ones((D, C), np.float32))
  g = protected_model(np.ones(D, np.float32))
  with pytest.raises(ValueError, match="features"):
    S.prediction_sensitivity(f, g, e, m, features="dims")
  with pytest.raises(ValueError, match="class_weights"):
    S.prediction_sensitivity(f, g, e, m, class_weights="max")
  with pytest.raises(ValueError, match="mask shape"):
    S.prediction_sensitivity(f, g, e, m[:, :3])
