"""K stacked FL simulations equal K separate `run_round` simulations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trustjax import federated as fl
from trustjax import sweeps

D, C = 5, 3


def loss_fn(params, batch, rng):
  del rng
  logits = batch["x"] @ params["w"] + params["b"][None, :]
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["y"]), {}


def _make(hp):
  return fl.fedavg(loss_fn, client_lr=hp["client_lr"],
                   server_lr=hp["server_lr"], prox_mu=hp["mu"])


def _make_fedopt(hp):
  return fl.fedopt(loss_fn, client_lr=hp["client_lr"],
                   server_optimizer=optax.adam(hp["server_lr"]))


@pytest.mark.parametrize("make", [_make, _make_fedopt],
                         ids=["fedavg_prox", "fedopt_adam"])
def test_stacked_rounds_equal_separate_simulations(make):
  rng = np.random.default_rng(0)
  sizes = [1, 3, 7, 12, 0, 20, 5, 2]      # very different sizes, one empty
  n = sum(sizes)
  arrays = {"x": rng.normal(size=(n, D)).astype(np.float32),
            "y": rng.integers(0, C, n).astype(np.int32)}
  data = fl.FederatedData.from_assignment(
      arrays, np.repeat(np.arange(len(sizes)), sizes), len(sizes))
  k = 3
  hps = [{"client_lr": 0.1, "server_lr": 1.0, "mu": 0.0},
         {"client_lr": 0.3, "server_lr": 0.5, "mu": 0.1},
         {"client_lr": 0.05, "server_lr": 2.0, "mu": 1.0}]
  seeds = [0, 7, 3]
  inits = [{"w": jnp.asarray(rng.normal(size=(D, C)), jnp.float32) * 0.1,
            "b": jnp.zeros((C,), jnp.float32)} for _ in range(k)]
  states = sweeps.stack([make(hps[i]).server_init(inits[i])
                         for i in range(k)])
  hp = {name: np.array([h[name] for h in hps], np.float32) for name in hps[0]}
  separate = [make(h).server_init(p) for h, p in zip(hps, inits)]
  for rnd in range(3):
    cohort = fl.select_clients(data.client_sizes(), 5, round=rnd, seed=11)
    states, met = fl.run_round_stacked(
        make, hp, states, data, cohort, batch_size=4, local_epochs=2,
        seeds=seeds, round=rnd)
    for i in range(k):
      separate[i], _, m_i = fl.run_round(
          make(hps[i]), separate[i], data, cohort, batch_size=4,
          local_epochs=2, seed=seeds[i], round=rnd)
      np.testing.assert_allclose(met["client_loss"][i], m_i["client_loss"],
                                 rtol=1e-5)
  for i in range(k):
    for a, b in zip(jax.tree.leaves(separate[i]),
                    jax.tree.leaves(jax.tree.map(lambda x: x[i], states))):
      # Server Adam divides by sqrt(v) of small second moments, which
      # amplifies float-order differences between the two programs.
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # The models really differ (a test that cannot tell them apart is moot).
  assert not np.allclose(states["params"]["w"][0], states["params"]["w"][1])


def test_stacked_rounds_refuse_client_state_and_bad_sizes():
  data = fl.FederatedData.from_assignment(
      {"x": np.zeros((4, D), np.float32), "y": np.zeros(4, np.int32)},
      np.array([0, 0, 1, 1]), 2)
  cohort = fl.select_clients(data.client_sizes(), 2, round=0, seed=0)
  p = {"w": jnp.zeros((D, C)), "b": jnp.zeros((C,))}
  make = lambda hp: fl.scaffold(loss_fn, client_lr=hp["lr"],  # noqa: E731
                                num_clients=2)
  st = sweeps.stack([make({"lr": 0.1}).server_init(p)] * 2)
  with pytest.raises(ValueError, match="per-client state"):
    fl.run_round_stacked(make, {"lr": [0.1, 0.2]}, st, data, cohort,
                         batch_size=2, local_epochs=1, seeds=[0, 1], round=0)
  st = sweeps.stack([_make({"client_lr": 0.1, "server_lr": 1.0,
                            "mu": 0.0}).server_init(p)] * 2)
  with pytest.raises(ValueError, match="number of models"):
    fl.run_round_stacked(_make, {"client_lr": [0.1, 0.2], "server_lr": [1, 1],
                                 "mu": [0, 0]}, st, data, cohort,
                         batch_size=2, local_epochs=1, seeds=[0, 1, 2],
                         round=0)
