"""Ghost clipping through dense layers applied to folded token rows.

`trustjax.models.dense(layer, x)` applies a layer to x[B, T, d] reshaped to
[B*T, d] (faster to differentiate on XLA:CPU). The batch-locality analysis
follows the folded rows (`_ghost_trace.Folded`): the per-example norms and
clipped sums must equal the per-example Python loop of
test_privacy_ghost.py, with no vmap fallback, and a folded value used in a
way that mixes examples must still be refused.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from test_privacy_ghost import _check  # the per-example loop reference
from test_privacy_ghost import _nnx_loss
from test_privacy_ghost import _text_batch
from trustjax import models
from trustjax.models.dense import dense
from trustjax.privacy.ghost import ghost_clipped_grad


class FoldedNet(nnx.Module):
  """Embedding, two folded dense layers (biases, GELU), LayerNorm on the
  unfolded rows, a residual, masked mean-pool and an unfolded head."""

  def __init__(self, rngs, vocab=23, d=8):
    self.embed = nnx.Embed(vocab, d, rngs=rngs)
    self.l1 = nnx.Linear(d, 12, rngs=rngs)
    self.ln = nnx.LayerNorm(12, rngs=rngs)
    self.l2 = nnx.Linear(12, d, rngs=rngs)
    self.head = nnx.Linear(d, 3, rngs=rngs)

  def __call__(self, ids, mask):
    x = self.embed(ids)
    h = self.ln(jax.nn.gelu(dense(self.l1, x)))
    h = dense(self.l2, h) + x
    m = mask[..., None].astype(h.dtype)
    return self.head((h * m).sum(1) / jnp.maximum(m.sum(1), 1.0))


def test_folded_dense_layers_equal_the_per_example_loop():
  loss_fn, params = _nnx_loss(FoldedNet(nnx.Rngs(0)),
                              lambda m, b: m(b["ids"], b["mask"]))
  mask = np.array([1, 1, 0, 1, 1], bool)
  for strategy in ("auto", "gram", "direct"):
    _check(loss_fn, params, _text_batch(), mask, expect_fallback=False,
           norm_strategy=strategy)


def test_library_transformer_classifier_has_no_fallback():
  model = models.TransformerClassifier(23, 3, d_model=8, num_layers=2,
                                       num_heads=2, d_ff=16, max_len=6,
                                       rngs=nnx.Rngs(3))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = models.classifier_loss_fn(graphdef, rest=rest)
  _check(loss_fn, params, _text_batch(), np.array([1, 0, 1, 1, 1], bool),
         expect_fallback=False)


class MixesFoldedRows(nnx.Module):
  """Subtracts the mean over ALL folded rows: example i's output depends on
  the other examples, so there is no per-example gradient to clip."""

  def __init__(self, rngs):
    self.l1 = nnx.Linear(4, 5, rngs=rngs)
    self.head = nnx.Linear(5, 3, rngs=rngs)

  def __call__(self, x):
    b, t, d = x.shape
    h = self.l1(x.reshape(b * t, d))
    h = h - h.mean(axis=0, keepdims=True)
    return self.head(h.reshape(b, t, -1).mean(1))


class RegroupsFoldedRows(nnx.Module):
  """Unfolds [B*T, d] as [T, B, d]: rows of different examples end up in
  one 'example'."""

  def __init__(self, rngs):
    self.l1 = nnx.Linear(4, 5, rngs=rngs)

  def __call__(self, x):
    b, t, d = x.shape
    h = self.l1(x.reshape(b * t, d)).reshape(t, b, -1)
    return jnp.transpose(h, (1, 0, 2)).mean(1)[:, :3]


@pytest.mark.parametrize("model", [MixesFoldedRows, RegroupsFoldedRows])
def test_folded_rows_that_mix_examples_are_refused(model):
  loss_fn, params = _nnx_loss(model(nnx.Rngs(1)), lambda m, b: m(b["x"]))
  batch = {"x": jax.random.normal(jax.random.key(0), (4, 3, 4)),
           "label": jnp.array([0, 1, 2, 0])}
  with pytest.raises(ValueError, match="cannot prove"):
    ghost_clipped_grad(loss_fn, 1.0)(params, batch, jnp.ones(4, bool), None)
