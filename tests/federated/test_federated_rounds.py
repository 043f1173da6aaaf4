"""Federated rounds: exact references for FedAvg/FedProx/SCAFFOLD, and
vectorised + sharded execution equal to a sequential per-client loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trustjax import federated as fl

D, C = 5, 3


def loss_fn(params, batch, rng):
  del rng
  logits = batch["x"] @ params["w"] + params["b"][None, :]
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["y"]), {}


def _problem(sizes, seed=0):
  rng = np.random.default_rng(seed)
  n = int(sum(sizes))
  arrays = {"x": rng.normal(size=(n, D)).astype(np.float32),
            "y": rng.integers(0, C, n).astype(np.int32)}
  assign = np.repeat(np.arange(len(sizes)), sizes)
  data = fl.FederatedData.from_assignment(arrays, assign, len(sizes))
  params = {"w": jnp.asarray(rng.normal(size=(D, C)), jnp.float32) * 0.1,
            "b": jnp.zeros((C,), jnp.float32)}
  return data, params


def _full_cohort(data):
  return fl.select_clients(data.client_sizes(), data.num_clients, round=0,
                           seed=0)


def test_fedavg_one_step_equals_centralized_sgd():
  data, params = _problem([8, 8, 8, 8])
  alg = fl.fedavg(loss_fn, client_lr=0.3)
  state, _, _ = fl.run_round(alg, alg.server_init(params), data,
                             _full_cohort(data), batch_size=8,
                             local_epochs=1, seed=0, round=0)

  def mean_loss(p):
    return loss_fn(p, data.arrays, None)[0].mean()
  g = jax.grad(mean_loss)(params)
  expect = jax.tree.map(lambda p, d: p - 0.3 * d, params, g)
  for k in params:
    np.testing.assert_allclose(state["params"][k], expect[k], rtol=1e-5,
                               atol=1e-6)


def _sequential(data, params, cohort, lr, batch_size, epochs, seed, rnd,
                mu=0.0, controls=None, server_control=None):
  """Per-client Python loop: the reference the vectorised code must match."""
  agg = jax.tree.map(jnp.zeros_like, params)
  dc_sum = jax.tree.map(jnp.zeros_like, params)
  new_controls = dict(controls or {})
  for c, w in zip(cohort.clients[cohort.mask], cohort.weights[cohort.mask]):
    c = int(c)
    n = data.client_sizes()[c]
    steps = int(fl.local_steps(np.array([n]), batch_size, epochs)[0])
    idx, mask = fl.client_batch_indices(
        data, c, steps=max(steps, 1), batch_size=batch_size,
        local_epochs=epochs, seed=seed, round=rnd)
    p = params
    k_real = 0
    for s in range(steps):
      rows = idx[s][mask[s]]
      batch = {k: v[rows] for k, v in data.arrays.items()}

      def obj(q):
        loss = loss_fn(q, batch, None)[0].mean()
        if mu:
          loss += 0.5 * mu * sum(jnp.sum((a - b) ** 2) for a, b in zip(
              jax.tree.leaves(q), jax.tree.leaves(params)))
        return loss
      g = jax.grad(obj)(p)
      if controls is not None:
        g = jax.tree.map(lambda g_, c_, ci: g_ + c_ - ci, g, server_control,
                         controls[c])
      p = jax.tree.map(lambda a, b: a - lr * b, p, g)
      k_real += 1
    agg = jax.tree.map(lambda a, x, y: a + w * (x - y), agg, p, params)
    if controls is not None and k_real:
      ci_new = jax.tree.map(lambda ci, c_, x, y: ci - c_ + (x - y) /
                            (k_real * lr), controls[c], server_control,
                            params, p)
      dc_sum = jax.tree.map(lambda a, x, y: a + x - y, dc_sum, ci_new,
                            controls[c])
      new_controls[c] = ci_new
  return agg, dc_sum, new_controls


SIZES = [1, 37, 0, 5, 12, 64, 3, 9, 20, 2]


@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_vectorised_equals_sequential_loop(mu):
  data, params = _problem(SIZES, seed=1)
  cohort = fl.select_clients(data.client_sizes(), 7, round=3, seed=2,
                             method="uniform")
  alg = fl.fedprox(loss_fn, client_lr=0.1, mu=mu) if mu else \
      fl.fedavg(loss_fn, client_lr=0.1)
  state, _, metrics = fl.run_round(alg, alg.server_init(params), data, cohort,
                                   batch_size=4, local_epochs=2, seed=5,
                                   round=3)
  agg, _, _ = _sequential(data, params, cohort, 0.1, 4, 2, 5, 3, mu=mu)
  for k in params:
    np.testing.assert_allclose(state["params"][k], params[k] + agg[k],
                               rtol=1e-5, atol=1e-6)
  assert 0 < metrics["padding_efficiency"] <= 1


def test_fedprox_mu_zero_is_fedavg():
  data, params = _problem(SIZES, seed=2)
  cohort = _full_cohort(data)
  kw = dict(batch_size=4, local_epochs=1, seed=0, round=0)
  a = fl.fedavg(loss_fn, client_lr=0.1)
  b = fl.fedprox(loss_fn, client_lr=0.1, mu=0.0)
  sa, _, _ = fl.run_round(a, a.server_init(params), data, cohort, **kw)
  sb, _, _ = fl.run_round(b, b.server_init(params), data, cohort, **kw)
  for k in params:
    np.testing.assert_array_equal(sa["params"][k], sb["params"][k])


def test_scaffold_matches_sequential_reference():
  data, params = _problem(SIZES, seed=3)
  k = data.num_clients
  alg = fl.scaffold(loss_fn, client_lr=0.1, num_clients=k)
  state = alg.server_init(params)
  rng = np.random.default_rng(0)
  state["control"] = jax.tree.map(
      lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.01, jnp.float32),
      params)
  cs = jax.tree.map(lambda x: jnp.asarray(
      rng.normal(size=(k,) + x.shape) * 0.01, jnp.float32), params)
  cohort = fl.select_clients(data.client_sizes(), 6, round=1, seed=4)
  new_state, new_cs, _ = fl.run_round(alg, state, data, cohort, batch_size=4,
                                      local_epochs=1, seed=1, round=1,
                                      client_states=cs)
  controls = {c: jax.tree.map(lambda x: x[c], cs) for c in range(k)}
  agg, dc, ref_controls = _sequential(
      data, params, cohort, 0.1, 4, 1, 1, 1, controls=controls,
      server_control=state["control"])
  for name in params:
    np.testing.assert_allclose(new_state["params"][name],
                               params[name] + agg[name], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(new_state["control"][name],
                               state["control"][name] + dc[name] / k,
                               rtol=1e-5, atol=1e-6)
    for c in range(k):
      np.testing.assert_allclose(new_cs[name][c], ref_controls[c][name],
                                 rtol=1e-5, atol=1e-6)


def test_fedopt_adam_server_step():
  data, params = _problem([6, 6], seed=4)
  alg = fl.fedopt(loss_fn, client_lr=0.1, server_optimizer=optax.adam(0.01))
  state = alg.server_init(params)
  new, _, _ = fl.run_round(alg, state, data, _full_cohort(data),
                           batch_size=6, local_epochs=1, seed=0, round=0)
  avg = fl.fedavg(loss_fn, client_lr=0.1)
  ref, _, _ = fl.run_round(avg, avg.server_init(params), data,
                           _full_cohort(data), batch_size=6, local_epochs=1,
                           seed=0, round=0)
  delta = jax.tree.map(jnp.subtract, ref["params"], params)
  upd, _ = optax.adam(0.01).update(jax.tree.map(jnp.negative, delta),
                                   optax.adam(0.01).init(params), params)
  for k in params:
    np.testing.assert_allclose(new["params"][k], params[k] + upd[k],
                               rtol=1e-5, atol=1e-7)


def test_eight_devices_equal_one():
  assert jax.device_count() >= 8
  data, params = _problem(SIZES, seed=5)
  cohort = fl.select_clients(data.client_sizes(), 9, round=0, seed=0,
                             method="activity")
  alg = fl.fedavg(loss_fn, client_lr=0.1)
  kw = dict(batch_size=4, local_epochs=1, seed=0, round=0)
  one, _, _ = fl.run_round(alg, alg.server_init(params), data, cohort, **kw)
  eight, _, _ = fl.run_round(alg, alg.server_init(params), data, cohort,
                             mesh=fl.make_client_mesh(8), **kw)
  for k in params:
    np.testing.assert_allclose(one["params"][k], eight["params"][k],
                               rtol=1e-5, atol=1e-6)


def test_bad_rounds():
  data, params = _problem([3, 0], seed=6)
  alg = fl.fedavg(loss_fn, client_lr=0.1)
  empty = fl.Cohort(np.zeros(2, np.int64), np.zeros(2), np.zeros(2, bool),
                    np.zeros(2))
  with pytest.raises(ValueError, match="empty"):
    fl.run_round(alg, alg.server_init(params), data, empty, batch_size=2,
                 local_epochs=1, seed=0, round=0)
  zero = fl.Cohort(np.array([1]), np.array([0.0]), np.array([True]),
                   np.array([1.0]))
  with pytest.raises(ValueError, match="sum to > 0"):
    fl.run_round(alg, alg.server_init(params), data, zero, batch_size=2,
                 local_epochs=1, seed=0, round=0)
  sc = fl.scaffold(loss_fn, client_lr=0.1, num_clients=2)
  with pytest.raises(ValueError, match="client_states"):
    fl.run_round(sc, sc.server_init(params), data, _full_cohort(data),
                 batch_size=2, local_epochs=1, seed=0, round=0)
