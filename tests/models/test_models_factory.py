"""build_model from ConfigDicts."""

import jax.numpy as jnp
import ml_collections
import pytest
from flax import nnx

from trustjax import models


def _cfg(**kw):
  return ml_collections.ConfigDict(kw)


def test_builds_each_model():
  t = models.build_model(
      _cfg(name="transformer", d_model=16, num_layers=1, num_heads=2, d_ff=32,
           dropout=0.1), vocab_size=30, num_classes=4, max_len=12,
      rngs=nnx.Rngs(0))
  assert isinstance(t, models.TransformerClassifier)
  assert t.max_len == 12 and len(t.layers) == 1 and t.dropout_rate == 0.1
  ids = jnp.zeros((2, 12), jnp.int32)
  assert t(ids, jnp.ones((2, 12), bool)).shape == (2, 4)
  b = models.build_model(_cfg(name="bag", d_embed=8, d_hidden=16),
                         vocab_size=30, num_classes=4, rngs=nnx.Rngs(0))
  assert isinstance(b, models.BagOfEmbeddings)
  assert b(ids, jnp.ones((2, 12), bool)).shape == (2, 4)
  m = models.build_model(_cfg(name="mlp", in_dim=7, hidden=(5, 5)),
                         vocab_size=30, num_classes=4, rngs=nnx.Rngs(0))
  assert m(jnp.ones((2, 7))).shape == (2, 4)


def test_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match="transformer, bag, mlp"):
    models.build_model(_cfg(name="cnn"), vocab_size=3, num_classes=2,
                       rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="dtype"):
    models.build_model(_cfg(name="bag", dtype="int8"), vocab_size=3,
                       num_classes=2, rngs=nnx.Rngs(0))
