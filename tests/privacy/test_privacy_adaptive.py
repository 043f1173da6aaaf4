"""Adaptive (quantile) clipping and private per-layer quantiles."""

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trustjax.privacy.adaptive import count_noise_multiplier
from trustjax.privacy.adaptive import gradient_noise_multiplier
from trustjax.privacy.adaptive import private_layer_quantiles
from trustjax.privacy.adaptive import quantile_clip_update


def _run(c0, target, norms_fn, steps=300, b=256, lr=0.2):
  """Runs the update on fresh draws of a fixed norm distribution."""
  kw = dict(target_quantile=target, learning_rate=lr,
            clip_count_stddev=b / 20, expected_batch_size=float(b))

  @jax.jit
  def run(c0, key):
    def body(c, k):
      k1, k2 = jax.random.split(k)
      norms = norms_fn(k1, b)
      c, frac = quantile_clip_update(c, norms, None, k2, **kw)
      return c, c
    return jax.lax.scan(body, c0, jax.random.split(key, steps))[1]
  return np.asarray(run(jnp.asarray(c0, jnp.float32), jax.random.key(0)))


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_converges_to_target_quantile(target):
  # norms ~ LogNormal(0, 1): the true quantile is exp(Phi^-1(target))
  lognormal = lambda k, b: jnp.exp(jax.random.normal(k, (b,)))
  cs = _run(0.01, target, lognormal)
  true_q = math.exp(jax.scipy.stats.norm.ppf(target))
  tail = cs[-100:]
  # mass below the average late clip norm is close to the target
  frac_below = float(jax.scipy.stats.norm.cdf(np.log(tail.mean())))
  assert abs(frac_below - target) < 0.05, (tail.mean(), true_q)
  assert cs[0] < 0.05 < true_q   # it did have to move (geometrically)


def test_per_layer_vector_update_converges():
  scales = jnp.asarray([0.1, 1.0, 10.0])
  norms_fn = lambda k, b: scales[None] * jnp.exp(
      jax.random.normal(k, (b, 3)))
  cs = _run(jnp.ones((3,)), 0.5, norms_fn)
  np.testing.assert_allclose(cs[-100:].mean(0), np.asarray(scales),
                             rtol=0.2)


def test_noiseless_fraction_is_exact_and_masked():
  norms = jnp.asarray([0.5, 1.0, 1.5, 2.0, 9.0])   # 1.0 == C counts as below
  mask = jnp.asarray([1, 1, 1, 1, 0], bool)
  new_c, frac = quantile_clip_update(
      1.0, norms, mask, jax.random.key(0), target_quantile=0.5,
      learning_rate=0.3, clip_count_stddev=0.0, expected_batch_size=4.0)
  # centred count (+1/2,+1/2,-1/2,-1/2) = 0 -> frac = 0/4 + 1/2
  assert float(frac) == pytest.approx(0.5)
  assert float(new_c) == pytest.approx(1.0)
  _, frac = quantile_clip_update(
      1.0, norms, None, jax.random.key(0), target_quantile=0.5,
      learning_rate=0.3, clip_count_stddev=0.0, expected_batch_size=4.0)
  assert float(frac) == pytest.approx((2 - 3) / 2 / 4 + 0.5)


def test_sigma_split_formula_and_accounting():
  sigma, b = 1.1, 256
  sigma_b = b / 20
  sg = gradient_noise_multiplier(sigma, sigma_b)
  # Andrew et al. 2021, Thm. 1, written out independently
  assert sg == pytest.approx((sigma ** -2 - (2 * sigma_b) ** -2) ** -0.5)
  assert sg > sigma
  assert (sg ** -2 + count_noise_multiplier(sigma_b) ** -2) ** -0.5 == \
      pytest.approx(sigma)
  try:  # the accounting side's joint multiplier agrees
    from trustjax.privacy.mechanism import effective_noise_multiplier
  except ImportError:
    pass
  else:
    assert effective_noise_multiplier(
        sg, [count_noise_multiplier(sigma_b)]) == pytest.approx(sigma)
  assert count_noise_multiplier(sigma_b) == pytest.approx(2 * sigma_b)
  # RDP of Gaussians adds exactly: the pair costs what one sigma-Gaussian does
  q, steps, delta = 0.01, 1000, 1e-5
  def eps(event):
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, event), steps)
    return acc.get_epsilon(delta)
  pair = dp_accounting.ComposedDpEvent([
      dp_accounting.GaussianDpEvent(sg),
      dp_accounting.GaussianDpEvent(2 * sigma_b)])
  # compare unsampled (exact for RDP) and sampled with the one-Gaussian event
  acc1 = dp_accounting.rdp.RdpAccountant()
  acc1.compose(pair, 10)
  acc2 = dp_accounting.rdp.RdpAccountant()
  acc2.compose(dp_accounting.GaussianDpEvent(sigma), 10)
  assert acc1.get_epsilon(delta) == pytest.approx(acc2.get_epsilon(delta),
                                                  rel=1e-6)
  assert eps(dp_accounting.GaussianDpEvent(sigma)) > 0
  # per-layer: L counts jointly have sensitivity sqrt(L)/2
  sg3 = gradient_noise_multiplier(sigma, sigma_b, num_groups=3)
  assert sg3 == pytest.approx(
      (sigma ** -2 - (2 * sigma_b / math.sqrt(3)) ** -2) ** -0.5)


def test_sigma_b_too_small_raises():
  with pytest.raises(ValueError, match="clip_count_stddev"):
    gradient_noise_multiplier(1.0, 0.5)     # 2 * 0.5 == 1.0: nothing left
  with pytest.raises(ValueError, match="clip_count_stddev"):
    gradient_noise_multiplier(1.0, 0.0)
  with pytest.raises(ValueError, match="noise_multiplier"):
    gradient_noise_multiplier(0.0, 10.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(target_quantile=1.5), "target_quantile"),
    (dict(learning_rate=0.0), "learning_rate"),
    (dict(expected_batch_size=0.0), "expected_batch_size"),
])
def test_update_validation(kwargs, match):
  base = dict(target_quantile=0.5, learning_rate=0.2, clip_count_stddev=1.0,
              expected_batch_size=10.0)
  base.update(kwargs)
  with pytest.raises(ValueError, match=match):
    quantile_clip_update(1.0, jnp.ones((4,)), None, jax.random.key(0),
                         **base)


def test_private_layer_quantiles():
  rng = np.random.default_rng(0)
  b, layers = 2000, 3
  scales = np.asarray([0.05, 0.5, 5.0])
  norms = scales[None] * np.exp(rng.normal(size=(b, layers)))
  mask = np.ones(b, bool)
  mask[-200:] = False
  norms[-200:] = 1e6          # padding must not count
  grid = np.geomspace(1e-3, 1e3, 121)
  thr, query = private_layer_quantiles(
      jnp.asarray(norms, jnp.float32), jnp.asarray(mask), 0.75, grid,
      noise_std=5.0, key=jax.random.key(1))
  true = np.quantile(norms[mask], 0.75, axis=0)
  step = grid[1] / grid[0]
  assert np.all(np.asarray(thr) >= true / step ** 2)
  assert np.all(np.asarray(thr) <= true * step ** 2)
  assert set(np.asarray(thr).tolist()) <= set(np.float32(grid).tolist())
  assert query.l2_sensitivity == pytest.approx(math.sqrt(layers))
  assert query.noise_multiplier == pytest.approx(5.0 / math.sqrt(layers))


@pytest.mark.parametrize("kwargs,match", [
    (dict(candidate_grid=[1.0, 0.5]), "candidate_grid"),
    (dict(candidate_grid=[0.0, 1.0]), "candidate_grid"),
    (dict(quantile=-0.1), "quantile"),
    (dict(noise_std=0.0), "noise_std"),
])
def test_private_layer_quantiles_validation(kwargs, match):
  base = dict(quantile=0.5, candidate_grid=[0.1, 1.0], noise_std=1.0)
  base.update(kwargs)
  with pytest.raises(ValueError, match=match):
    private_layer_quantiles(jnp.ones((4, 2)), None, key=jax.random.key(0),
                            **base)


def test_adaptive_step_end_to_end_in_jit():
  """Traced clip norm through clipped_grad, noise and the quantile update."""
  import optax
  from trustjax.privacy.clipping import clipped_grad
  from trustjax.privacy.noise import gaussian_noise

  def loss_fn(p, b, r):
    return jnp.sum((b["x"] @ p["w"]) ** 2, -1), None
  params = {"w": jnp.ones((3, 2), jnp.float32)}
  batch = {"x": jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)),
                            jnp.float32)}
  sigma, sigma_b, ebs = 1.0, 16 / 20, 16.0
  tx = gaussian_noise(None, gradient_noise_multiplier(sigma, sigma_b), ebs, 0)
  opt_state = tx.init(params)

  @jax.jit
  def step(c, opt_state, key):
    fn = clipped_grad(loss_fn, c, method="auto")
    g, stats = fn(params, batch, None, None)
    upd, opt_state = tx.update(g, opt_state, l2_clip=c)
    new_c, _ = quantile_clip_update(
        c, stats.per_example_norms, None, key, target_quantile=0.5,
        learning_rate=0.5, clip_count_stddev=sigma_b, expected_batch_size=ebs)
    return new_c, opt_state, upd

  c = jnp.float32(0.01)
  for i in range(30):
    c, opt_state, upd = step(c, opt_state, jax.random.key(i))
  assert np.isfinite(np.asarray(upd["w"])).all()
  assert float(c) > 0.01   # moved up towards the median of the norms
