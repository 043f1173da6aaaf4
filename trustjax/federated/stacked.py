"""K federated simulations side by side: one program per bucket, `vmap` over
a leading model axis.

A sweep over FL hyperparameters (client or server learning rate, FedProx mu,
model initialisation, data-order seed) runs K simulations that share the
population and, here, the cohort of each round. `run_round_stacked` runs
the round of all K at once: the cohort's buckets are built once, each model
gets its own batches (its own `seed` for the local data order) and RNG keys,
and `vmap` over the model axis runs the K models' vectorised cohorts in one
jitted call per bucket, then the K server updates.

Model k's result equals `run_round(make_algorithm(hparams[k]), ...)` with
`seed=seeds[k]` on the same cohort (tests hold it to 1e-5): hyperparameters
enter `make_algorithm` as traced scalars, so the algorithm must only use
them arithmetically (learning rates, mu), not in Python control flow.
Algorithms with per-client state (SCAFFOLD) are not stacked.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from trustjax.federated.algorithms import Algorithm
from trustjax.federated.data import FederatedData
from trustjax.federated.rounds import client_rows
from trustjax.federated.rounds import cohort_aggregate
from trustjax.federated.rounds import cohort_buckets
from trustjax.federated.rounds import cohort_members
from trustjax.federated.rounds import row_budget
from trustjax.federated.rounds import row_sparse_rows
from trustjax.federated.rounds import RowSparse
from trustjax.federated.selection import Cohort

@functools.lru_cache(maxsize=64)
def _programs(make_algorithm: Callable, row_sparse: RowSparse | None = None):
  """Jitted `(bucket step, server update)` over the model axis; with
  `row_sparse` the bucket step takes the clients' rows (shared by the K
  models: the same clients hold the same ids) as a last argument."""

  def bucket(hp, server_state, batches, weights, unit, rngs, rows=None):
    alg = make_algorithm(hp)
    cs = jnp.zeros((weights.shape[0],))
    agg, _, metrics = cohort_aggregate(alg, server_state, cs, batches,
                                       weights, unit, rngs, rows, row_sparse)
    return agg, jnp.dot(metrics["loss"], weights)

  def server(hp, server_state, total, num_clients):
    return make_algorithm(hp).server_update(server_state, total, num_clients)

  axes = (0, 0, 0, None, None, 0) + ((None,) if row_sparse else ())
  return (jax.jit(jax.vmap(bucket, in_axes=axes)),
          jax.jit(jax.vmap(server, in_axes=(0, 0, 0, None)),
                  static_argnums=(3,)))


def run_round_stacked(make_algorithm: Callable[[Mapping[str, Any]],
                                               Algorithm],
                      hparams: Mapping[str, Any], server_states: Any,
                      data: FederatedData, cohort: Cohort, *,
                      batch_size: int, local_epochs: int,
                      seeds: Sequence[int], round: int,
                      row_sparse: RowSparse | None = None):
  """One round of K stacked simulations on a shared cohort.

  Args:
    make_algorithm: `hparams -> Algorithm` (e.g. `lambda hp: fedavg(loss_fn,
      client_lr=hp["client_lr"], server_lr=hp["server_lr"])`); called with
      traced scalars inside the program. Pass the same function object every
      round (programs are cached per function).
    hparams: `{name: [K]}` per-model hyperparameters.
    server_states: the K server states stacked (leading axis K), e.g.
      `sweeps.stack([alg.server_init(p) for p in inits])`.
    data, cohort, batch_size, local_epochs, round: as in `run_round`.
    seeds: one per model: local data order and client RNG keys, as `seed` of
      `run_round`.
    row_sparse: as in `run_round` (each client trains on its own embedding
      rows); the algorithm must be `row_sparse_safe`.

  Returns:
    `(server_states [K, ...], metrics)`; metrics["client_loss"] is float[K]
    (each model's weighted mean client loss).
  """
  hp = {k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}
  sizes = {int(jnp.shape(v)[0]) for v in hp.values()}
  leaves = jax.tree.leaves(server_states)
  sizes |= {int(jnp.shape(x)[0]) for x in leaves}
  if len(sizes) != 1 or len(seeds) not in sizes:
    raise ValueError(f"hparams, server_states and seeds disagree on the "
                     f"number of models: {sorted(sizes)} vs {len(seeds)}")
  k = len(seeds)
  clients, weights = cohort_members(cohort, round)
  probe = make_algorithm({n: 1.0 for n in hp})
  if probe.uses_client_state:
    raise ValueError(f"{probe.name} keeps per-client state and cannot be "
                     "stacked; run its simulations separately")
  if row_sparse is not None:
    if not probe.row_sparse_safe:
      raise ValueError(f"row_sparse: {probe.name} is not row_sparse_safe")
    num_rows = row_sparse_rows(
        jax.tree.map(lambda x: x[0], server_states["params"]), row_sparse)
    budget = row_budget(data, row_sparse, batch_size=batch_size,
                        local_epochs=local_epochs)
    table = client_rows(data, row_sparse.ids, num_rows)
  total = None
  loss = np.zeros(k)
  for bucket in cohort_buckets(data, clients, weights, ndev=1,
                               batch_size=batch_size,
                               local_epochs=local_epochs):
    # As in `run_round`: row-sparse unless the rows exceed half the table.
    u = budget[(bucket.steps, bucket.rows)] if row_sparse else None
    rows = renumbered = None
    if u is not None and 2 * u <= num_rows:
      # A client's rows depend on its data only: shared by the K models.
      rows = bucket.row_table(table, None, u, num_rows)
      renumbered = (row_sparse.ids, table.local)
    per_model = [bucket.batches(data, seed=s, round=round,
                                renumbered=renumbered) for s in seeds]
    batches = {name: np.stack([b[name] for b in per_model])
               for name in per_model[0]}
    ids = jnp.asarray(bucket.ids)
    rngs = jnp.stack([
        jax.vmap(lambda c, b=jax.random.fold_in(jax.random.key(s), round):
                 jax.random.fold_in(b, c))(ids) for s in seeds])
    bucket_fn = _programs(make_algorithm,
                          row_sparse if rows is not None else None)[0]
    extra = (rows,) if rows is not None else ()
    agg, lsum = bucket_fn(hp, server_states, batches, bucket.weights,
                          bucket.unit, rngs, *extra)
    loss += np.asarray(lsum, np.float64)
    total = agg if total is None else jax.tree.map(jnp.add, total, agg)
  server_fn = _programs(make_algorithm)[1]
  server_states = server_fn(hp, server_states, total, int(len(clients)))
  return server_states, {"client_loss": loss / float(weights.sum()),
                         "clients": int(len(clients))}
