"""EMA of parameters (`trustjax.privacy.ema_update`) against a numpy loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trustjax.privacy import ema_decay_at
from trustjax.privacy import ema_update


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_matches_python_loop(warmup):
  rng = np.random.default_rng(0)
  iterates = rng.normal(size=(30, 4, 3)).astype(np.float32)
  decay = 0.9
  want = iterates[0].copy()
  ema = {"w": jnp.asarray(iterates[0])}
  for t in range(1, 30):
    d = min(decay, (1 + (t - 1)) / (10 + (t - 1))) if warmup else decay
    want = d * want + (1 - d) * iterates[t]
    ema = ema_update(ema, {"w": jnp.asarray(iterates[t])}, jnp.asarray(t - 1),
                     decay, warmup)
  np.testing.assert_allclose(np.asarray(ema["w"]), want, rtol=1e-5,
                             atol=1e-6)


def test_warmup_decay_values():
  counts = jnp.arange(0, 2000, 7)
  got = np.asarray(jax.vmap(lambda c: ema_decay_at(0.999, c))(counts))
  want = np.minimum(0.999, (1 + np.arange(0, 2000, 7)) /
                    (10 + np.arange(0, 2000, 7)))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(ema_decay_at(0.999, 5, warmup=False)) == pytest.approx(0.999)


def test_ema_keeps_structure_and_dtype():
  ema = {"a": jnp.zeros((2,), jnp.bfloat16), "b": [jnp.zeros(3)]}
  out = ema_update(ema, {"a": jnp.ones((2,), jnp.bfloat16),
                         "b": [jnp.ones(3)]}, jnp.asarray(100), 0.5)
  assert jax.tree.structure(out) == jax.tree.structure(ema)
  assert out["a"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out["b"][0]), 0.5)
