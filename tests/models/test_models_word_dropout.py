"""Word dropout of the bag-of-embeddings classifier (Iyyer et al. 2015)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

from trustjax import models

V, C = 40, 4


def _lengths_mask(lengths, t):
  return jnp.asarray(np.arange(t)[None] < np.asarray(lengths)[:, None])


def test_rate_and_rows_never_emptied():
  rate, b, t = 0.3, 4000, 12
  lengths = np.random.default_rng(0).integers(0, t + 1, b)
  mask = _lengths_mask(lengths, t)
  kept = np.asarray(models.word_dropout_mask(jax.random.key(0), mask, rate))
  m = np.asarray(mask)
  assert not (kept & ~m).any(), "a padding position was switched on"
  assert (kept.sum(1) > 0).tolist() == (lengths > 0).tolist()
  # Rows that kept something were thinned at `rate`; only the rows where the
  # draw dropped every token (probability rate^len) were restored.
  frac = kept[m].mean()
  expected = np.mean([(1 - rate) * n + n * rate ** n for n in lengths
                      if n]) / lengths[lengths > 0].mean()
  # ~40k positions: the standard error of the kept fraction is ~0.003.
  assert abs(frac - expected) < 0.015, (frac, expected)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=6),
       st.integers(0, 2 ** 31 - 1), st.floats(0.0, 0.95))
def test_row_depends_only_on_its_mask(lengths, seed, rate):
  """A row's draw is a function of (key, row position, its own mask)."""
  key = jax.random.key(seed)
  mask = _lengths_mask(lengths, 6)
  kept = np.asarray(models.word_dropout_mask(key, mask, rate))
  other = ~np.asarray(mask)        # every other row's mask changes ...
  other[0] = np.asarray(mask)[0]   # ... row 0's does not
  kept2 = np.asarray(models.word_dropout_mask(key, jnp.asarray(other), rate))
  np.testing.assert_array_equal(kept[0], kept2[0])
  assert not (kept & ~np.asarray(mask)).any()


def test_bag_word_dropout_in_training_only():
  model = models.BagOfEmbeddings(V, C, d_embed=8, d_hidden=16,
                                 word_dropout=0.5, rngs=nnx.Rngs(0))
  plain = models.BagOfEmbeddings(V, C, d_embed=8, d_hidden=16,
                                 rngs=nnx.Rngs(0))
  ids = jnp.asarray(np.random.default_rng(1).integers(0, V, (64, 10)))
  mask = _lengths_mask(np.full(64, 10), 10)
  det = model(ids, mask)
  np.testing.assert_array_equal(det, plain(ids, mask))
  key = jax.random.key(3)
  train = model(ids, mask, deterministic=False, rngs=key)
  assert not np.allclose(train, det)
  # Training output == the deterministic model on the thinned mask.
  word_key, _ = jax.random.split(key)
  thinned = models.word_dropout_mask(word_key, mask, 0.5)
  np.testing.assert_allclose(train, model(ids, thinned), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="rngs"):
    model(ids, mask, deterministic=False)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_bad_rate(rate):
  with pytest.raises(ValueError, match="word_dropout"):
    models.BagOfEmbeddings(V, C, word_dropout=rate, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="rate"):
    models.word_dropout_mask(jax.random.key(0), jnp.ones((2, 3), bool), rate)
