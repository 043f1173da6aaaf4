"""DP-FedAvg: clipping bound, noise scale on the sum, accounting, adaptive C."""

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trustjax import federated as fl
from trustjax.privacy import noise_normal
from trustjax.privacy.accounting import epsilon_from_event

from test_federated_rounds import _problem, loss_fn  # noqa: E402


def _round(alg, params, data, cohort, seed=0):
  state = alg.server_init(params)
  return fl.run_round(alg, state, data, cohort, batch_size=4, local_epochs=1,
                      seed=seed, round=0)


def test_single_client_update_is_clipped_delta_over_expected_cohort():
  data, params = _problem([10, 10, 10, 10], seed=0)
  cfg = fl.DPFedAvgConfig(l2_clip=0.05, noise_multiplier=1e-9, num_clients=4,
                          expected_cohort=2.0)
  alg = fl.dp_fedavg(loss_fn, cfg, client_lr=0.5, seed=0)
  cohort = fl.Cohort(np.array([2, 0]), np.array([1.0, 0.0]),
                     np.array([True, False]), np.array([0.5, 0.0]))
  state, _, _ = _round(alg, params, data, cohort)
  # Reference: the same client's FedAvg delta, clipped by hand.
  avg = fl.fedavg(loss_fn, client_lr=0.5)
  ref, _, _ = _round(avg, params, data, fl.Cohort(
      np.array([2]), np.array([1.0]), np.array([True]), np.array([1.0])))
  delta = jax.tree.map(jnp.subtract, ref["params"], params)
  norm = float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(delta))))
  assert norm > 0.05  # the clip is active
  for k in params:
    np.testing.assert_allclose(
        state["params"][k] - params[k], delta[k] * (0.05 / norm) / 2.0,
        rtol=1e-4, atol=1e-7)


def test_noise_std_is_sigma_c_over_expected_cohort():
  data, params = _problem([4, 4], seed=1)
  params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros((3,)),
            "big": jnp.zeros((20000,))}

  def lf(p, batch, rng):
    return loss_fn({"w": p["w"], "b": p["b"]}, batch, rng)
  cfg = fl.DPFedAvgConfig(l2_clip=2.0, noise_multiplier=1.5, num_clients=2,
                          expected_cohort=1.0)
  alg = fl.dp_fedavg(lf, cfg, client_lr=0.0, seed=3)  # zero deltas
  cohort = fl.select_clients(data.client_sizes(), 2, round=0, seed=0)
  state, _, _ = _round(alg, params, data, cohort)
  noise = np.asarray(state["params"]["big"])
  # std of 20000 N(0, 3^2) samples: 3 +- 3 * 4/sqrt(2*20000) at 4 sigma.
  assert abs(noise.std() - 3.0) < 3.0 * 4 / np.sqrt(40000)
  assert abs(noise.mean()) < 4 * 3.0 / np.sqrt(20000)


def _zero_delta_rounds(mesh=None, rounds=2, adaptive=False):
  """DP-FedAvg rounds whose client deltas are exactly 0 (client_lr=0): the
  parameter change of a round is the server noise / expected_cohort."""
  data, _ = _problem([4, 4, 4, 4], seed=5)
  params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros((3,)),
            "big": jnp.zeros((70000,))}   # >= 65536: the chunked draw

  def lf(p, batch, rng):
    return loss_fn({"w": p["w"], "b": p["b"]}, batch, rng)
  cfg = fl.DPFedAvgConfig(l2_clip=2.0, noise_multiplier=1.5, num_clients=4,
                          expected_cohort=2.0,
                          clipped_count_stddev=4.0 if adaptive else None)
  alg = fl.dp_fedavg(lf, cfg, client_lr=0.0, seed=7)
  st = alg.server_init(params)
  states = [st]
  for r in range(rounds):
    cohort = fl.select_clients(data.client_sizes(), 4, round=r, seed=0)
    st, _, _ = fl.run_round(alg, st, data, cohort, batch_size=4,
                            local_epochs=1, seed=0, round=r, mesh=mesh)
    states.append(jax.tree.map(np.asarray, st))
  return cfg, states


def test_noise_is_the_dp_sgd_draw_of_seed_and_round():
  """Round r adds sigma C z / E[cohort] with z drawn, leaf by leaf, by
  `noise_normal.normal` from split(split(fold_in(key(seed), r))[0], L):
  the same noise function and seeding as DP-SGD's `add_gaussian_noise`."""
  cfg, states = _zero_delta_rounds()
  names = sorted(states[0]["params"])        # dict leaves: sorted keys
  for r in range(2):
    k_delta, _ = jax.random.split(jax.random.fold_in(jax.random.key(7), r))
    keys = jax.random.split(k_delta, len(names))
    for name, k in zip(names, keys):
      shape = states[0]["params"][name].shape
      z = np.asarray(noise_normal.normal(k, shape), np.float64)
      # f32 rounding only (|params| < 9); jax.random.normal's draws differ
      # from these by up to 2e-5 per standard normal, which this rejects.
      np.testing.assert_allclose(
          states[r + 1]["params"][name],
          states[r]["params"][name] + 1.5 * 2.0 * z / 2.0, rtol=1e-6,
          atol=1e-6, err_msg=f"{name} round {r}")
      # Same Threefry bits as jax.random.normal; only the inverse CDF is the
      # more accurate one (within 2.5e-5 per standard normal).
      zj = np.asarray(jax.random.normal(k, shape), np.float64)
      assert np.max(np.abs(z - zj)) < 2.5e-5
  # Rounds draw different noise.
  d0 = states[1]["params"]["big"] - states[0]["params"]["big"]
  d1 = states[2]["params"]["big"] - states[1]["params"]["big"]
  assert abs(np.corrcoef(d0, d1)[0, 1]) < 0.02


def test_noise_identical_on_8_devices_and_1():
  """The noise is drawn once from (seed, round), not per device: a round
  sharded over 8 devices equals the same round on one device."""
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices; tests/conftest.py sets them")
  _, one = _zero_delta_rounds(rounds=1, adaptive=True)
  _, eight = _zero_delta_rounds(fl.make_client_mesh(8), rounds=1,
                                adaptive=True)
  for k in one[1]["params"]:
    np.testing.assert_allclose(eight[1]["params"][k], one[1]["params"][k],
                               rtol=1e-6, atol=1e-7, err_msg=k)
  np.testing.assert_allclose(eight[1]["l2_clip"], one[1]["l2_clip"],
                             rtol=1e-6)
  assert float(one[1]["l2_clip"]) != 2.0   # adaptive clipping moved C


def test_accounting_is_poisson_sampled_gaussian_per_round():
  cfg = fl.DPFedAvgConfig(l2_clip=1.0, noise_multiplier=1.1,
                          num_clients=1000, expected_cohort=50.0)
  ref = dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(
          0.05, dp_accounting.GaussianDpEvent(1.1)), 200)
  acc = dp_accounting.pld.PLDAccountant()
  acc.compose(ref)
  assert epsilon_from_event(cfg.dp_event(200), 1e-6) == pytest.approx(
      acc.get_epsilon(1e-6), rel=1e-9)


def test_adaptive_clip_moves_toward_quantile_and_splits_noise():
  data, params = _problem([6, 6, 6, 6], seed=2)
  cfg = fl.DPFedAvgConfig(l2_clip=100.0, noise_multiplier=1.0,
                          num_clients=4, expected_cohort=4.0,
                          clipped_count_stddev=4.0,
                          target_quantile=0.5, clip_lr=0.2)
  # sigma_delta = (1 - 1/64)^-1/2.
  assert cfg.delta_noise_multiplier == pytest.approx((1 - 1 / 64) ** -0.5)
  alg = fl.dp_fedavg(loss_fn, cfg, client_lr=0.1, seed=0)
  cohort = fl.select_clients(data.client_sizes(), 4, round=0, seed=0)
  # Every client is unclipped at C=100, so the noisy unclipped fraction is
  # ~1 > 0.5 and C shrinks geometrically toward the median delta norm.
  st = alg.server_init(params)
  for r in range(30):
    st, _, _ = fl.run_round(alg, st, data, cohort, batch_size=4,
                            local_epochs=1, seed=0, round=r)
  assert float(st["l2_clip"]) < 20.0  # drifted down toward the median norm
  with pytest.raises(ValueError, match="too small"):
    fl.DPFedAvgConfig(l2_clip=1.0, noise_multiplier=1.0, num_clients=4,
                      expected_cohort=2.0, clipped_count_stddev=0.4)


def test_poisson_cohort_and_bad_config():
  c = fl.poisson_cohort(1000, 0.05, round=3, seed=0, max_cohort_size=100)
  assert c.clients.shape == (100,) and 20 < c.size < 80
  with pytest.raises(ValueError, match="max_cohort_size"):
    fl.poisson_cohort(1000, 0.5, round=0, seed=0, max_cohort_size=10)
  with pytest.raises(ValueError, match="noise_multiplier"):
    fl.DPFedAvgConfig(l2_clip=1.0, noise_multiplier=0.0, num_clients=4,
                      expected_cohort=2.0)
  with pytest.raises(ValueError, match="expected_cohort"):
    fl.DPFedAvgConfig(l2_clip=1.0, noise_multiplier=1.0, num_clients=4,
                      expected_cohort=5.0)
