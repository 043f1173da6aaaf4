"""Federated algorithms as pure function triples.

An `Algorithm` is `(server_init, client_update, server_update)`:

* `server_init(params) -> server_state` (a pytree holding at least "params").
* `client_update(server_state, client_state, batches, rng) ->
  (update, new_client_state, metrics)`: runs local training on one client's
  batches `{name: [S, b, ...]}` plus `"example_mask"` `[S, b]`; steps whose
  batch has no real row leave the model unchanged, so clients of different
  sizes can share one padded shape. `update` is a pytree the server
  aggregates (a weighted sum over the cohort).
* `server_update(server_state, aggregate, num_clients) -> server_state`
  (jitted by `run_round`: `num_clients`, the cohort's number of real
  clients, arrives as a traced int32 scalar).

Client-side optimisation is plain SGD with `client_lr` on the masked mean of
per-example losses (`loss_fn(params, batch, rng) -> (per_example[B], aux)`).

References: FedAvg (McMahan et al. 2017), FedProx (Li et al. 2020), FedOpt
(Reddi et al. 2021, "Adaptive Federated Optimization"), SCAFFOLD
(Karimireddy et al. 2020, option II control variates).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class Algorithm(NamedTuple):
  server_init: Callable
  client_update: Callable
  server_update: Callable
  uses_client_state: bool = False
  name: str = ""
  # True when a parameter row no example looks up is left unchanged by
  # client_update and contributes a zero update (FedAvg family): then the
  # round may train each client on its own embedding rows (rounds.RowSparse).
  row_sparse_safe: bool = False


def _traced(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def _zeros_like(tree):
  return jax.tree.map(jnp.zeros_like, tree)


def _local_sgd(loss_fn, params, batches, rng, lr, grad_correction=None,
               prox_center=None, mu=0.0):
  """S masked SGD steps; returns (params, real_steps, mean_loss)."""
  mask = batches["example_mask"]

  def step(carry, xs):
    p, n_steps, loss_sum = carry
    batch, m, i = xs
    key = jax.random.fold_in(rng, i)
    w = m.astype(jnp.float32)
    count = w.sum()

    def objective(q):
      per_ex, _ = loss_fn(q, batch, key)
      loss = jnp.dot(per_ex.astype(jnp.float32), w) / jnp.maximum(count, 1.0)
      if prox_center is not None and (_traced(mu) or mu):
        sq = sum(jnp.vdot(a - b, a - b) for a, b in zip(
            jax.tree.leaves(q), jax.tree.leaves(prox_center)))
        loss = loss + 0.5 * mu * sq
      return loss

    loss, g = jax.value_and_grad(objective)(p)
    if grad_correction is not None:
      g = jax.tree.map(jnp.add, g, grad_correction)
    real = count > 0
    new = jax.tree.map(lambda a, b: jnp.where(real, a - lr * b, a), p, g)
    return (new, n_steps + real.astype(jnp.int32),
            loss_sum + jnp.where(real, loss, 0.0)), None

  data = {k: v for k, v in batches.items() if k != "example_mask"}
  xs = (data, mask, jnp.arange(mask.shape[0]))
  carry = (params, jnp.zeros((), jnp.int32), jnp.zeros(()))
  if mask.shape[0] == 1:
    # One step (most clients of heavy-tailed populations) runs without a
    # scan: under `vmap` over clients its parameters are then the shared
    # server ones and its matmuls one product for all clients, where a scan
    # carry is batched (a copy of the weights per client) from the start.
    carry, _ = step(carry, jax.tree.map(lambda x: x[0], xs))
  else:
    carry, _ = jax.lax.scan(step, carry, xs)
  params, n, loss_sum = carry
  return params, n, loss_sum / jnp.maximum(n, 1)


def fedavg(loss_fn, *, client_lr: float, server_lr: float = 1.0,
           prox_mu: float = 0.0) -> Algorithm:
  """FedAvg; with `prox_mu > 0`, FedProx (mu/2 ||w - w_global||^2 locally).

  The update is the model delta `w_local - w_global`; the server adds
  `server_lr` times the aggregate (weighted sum) of deltas.
  """
  def server_init(params):
    return {"params": params}

  def client_update(server_state, client_state, batches, rng):
    g = server_state["params"]
    # A traced mu (stacked simulations) keeps the proximal term; mu = 0 then
    # adds exactly 0 to the loss and its gradient.
    prox = _traced(prox_mu) or prox_mu
    p, n, loss = _local_sgd(loss_fn, g, batches, rng, client_lr,
                            prox_center=g if prox else None, mu=prox_mu)
    return {"weighted": jax.tree.map(jnp.subtract, p, g)}, client_state, {
        "loss": loss, "steps": n}

  def server_update(server_state, aggregate, num_clients):
    del num_clients
    return {"params": jax.tree.map(lambda p, d: p + server_lr * d,
                                   server_state["params"],
                                   aggregate["weighted"])}

  return Algorithm(server_init, client_update, server_update,
                   name="fedprox" if _traced(prox_mu) or prox_mu else "fedavg",
                   row_sparse_safe=True)


def fedprox(loss_fn, *, client_lr: float, mu: float,
            server_lr: float = 1.0) -> Algorithm:
  return fedavg(loss_fn, client_lr=client_lr, server_lr=server_lr,
                prox_mu=mu)


def fedopt(loss_fn, *, client_lr: float,
           server_optimizer: optax.GradientTransformation) -> Algorithm:
  """FedOpt: the server treats minus the aggregated delta as a gradient and
  applies `server_optimizer` (e.g. optax.adam / optax.yogi / optax.adagrad /
  optax.sgd(momentum=...))."""
  base = fedavg(loss_fn, client_lr=client_lr)

  def server_init(params):
    return {"params": params, "opt_state": server_optimizer.init(params)}

  def server_update(server_state, aggregate, num_clients):
    del num_clients
    grad = jax.tree.map(jnp.negative, aggregate["weighted"])
    updates, opt_state = server_optimizer.update(
        grad, server_state["opt_state"], server_state["params"])
    return {"params": optax.apply_updates(server_state["params"], updates),
            "opt_state": opt_state}

  return Algorithm(server_init, base.client_update, server_update,
                   name="fedopt", row_sparse_safe=True)


def scaffold(loss_fn, *, client_lr: float, server_lr: float = 1.0,
             num_clients: int) -> Algorithm:
  """SCAFFOLD with option-II control variates.

  Client i corrects each local gradient by `c - c_i`; after K_i real steps,
  `c_i+ = c_i - c + (x - y_i) / (K_i * client_lr)`. The update aggregated
  by the server is `{"weighted": y_i - x, "summed": c_i+ - c_i}`; the server
  sets `x += server_lr * sum_i w_i (y_i - x)` and
  `c += (1/num_clients) sum_{i in cohort} (c_i+ - c_i)`.
  Client state: each client's control variate c_i (zeros initially).
  """
  def server_init(params):
    return {"params": params, "control": _zeros_like(params)}

  def client_update(server_state, client_state, batches, rng):
    x, c = server_state["params"], server_state["control"]
    ci = client_state
    corr = jax.tree.map(jnp.subtract, c, ci)
    y, n, loss = _local_sgd(loss_fn, x, batches, rng, client_lr,
                            grad_correction=corr)
    k = jnp.maximum(n, 1).astype(jnp.float32)
    ci_new = jax.tree.map(
        lambda ci_, c_, x_, y_: jnp.where(n > 0, ci_ - c_ + (x_ - y_) /
                                          (k * client_lr), ci_),
        ci, c, x, y)
    update = {"weighted": jax.tree.map(jnp.subtract, y, x),
              "summed": jax.tree.map(jnp.subtract, ci_new, ci)}
    return update, ci_new, {"loss": loss, "steps": n}

  def server_update(server_state, aggregate, cohort_size):
    del cohort_size
    return {"params": jax.tree.map(lambda p, d: p + server_lr * d,
                                   server_state["params"],
                                   aggregate["weighted"]),
            "control": jax.tree.map(lambda c, d: c + d / num_clients,
                                    server_state["control"],
                                    aggregate["summed"])}

  return Algorithm(server_init, client_update, server_update,
                   uses_client_state=True, name="scaffold")
