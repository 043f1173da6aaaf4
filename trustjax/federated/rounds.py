"""Vectorised, sharded execution of one federated round.

A round gathers the cohort's examples into fixed-shape padded buckets
(clients grouped by the power of two at or above their number of local
steps, so padding stays low and shapes repeat across rounds), runs
`vmap(client_update)` over the clients of a bucket and, given a mesh,
`jax.shard_map` over its "clients" axis with a `psum` of the aggregate.
Every random choice is a function of (seed, round, client): a rerun is
bit-identical and 1 device gives the result of 8 (up to float summation
order).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from trustjax.federated.algorithms import Algorithm
from trustjax.federated.data import FederatedData
from trustjax.federated.selection import Cohort

AXIS = "clients"


def local_steps(sizes: np.ndarray, batch_size: int, local_epochs: int
                ) -> np.ndarray:
  """Local SGD steps per client: local_epochs * ceil(n_k / batch_size)."""
  return local_epochs * np.ceil(np.asarray(sizes) / batch_size).astype(
      np.int64)


def client_batch_indices(data: FederatedData, client: int, *, steps: int,
                         batch_size: int, local_epochs: int, seed: int,
                         round: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices int64[steps, b], mask bool[steps, b]) of one client's batches.

  Each local epoch is a fresh permutation of the client's examples drawn
  from `default_rng([seed, round, client, epoch])`, cut into ceil(n/b)
  batches (the last one partial); steps beyond the client's own are empty.
  """
  own = data.client_indices(client)
  idx = np.zeros((steps, batch_size), np.int64)
  mask = np.zeros((steps, batch_size), bool)
  if len(own) == 0:
    return idx, mask
  per_epoch = math.ceil(len(own) / batch_size)
  s = 0
  for e in range(local_epochs):
    perm = own[np.random.default_rng([seed, round, client, e]).permutation(
        len(own))]
    for j in range(per_epoch):
      part = perm[j * batch_size:(j + 1) * batch_size]
      if s >= steps:
        return idx, mask
      idx[s, :len(part)] = part
      mask[s, :len(part)] = True
      s += 1
  return idx, mask


def _bucket(steps: int) -> int:
  return 1 if steps <= 1 else 1 << (int(steps) - 1).bit_length()


class Bucket(NamedTuple):
  """Clients of a cohort that share a padded number of local steps.

  `ids`, `weights`, `unit` have length `m_pad` (a power of two, a multiple
  of the device count); rows `size:` are padding clients with no data and
  weight 0. `steps` is the bucket's padded number of local steps.
  """
  steps: int
  size: int
  ids: np.ndarray
  weights: np.ndarray
  unit: np.ndarray
  batch_size: int
  local_epochs: int

  def batches(self, data: FederatedData, *, seed: int, round: int
              ) -> dict[str, np.ndarray]:
    """`{name: [m_pad, steps, b, ...]}` plus "example_mask" for `seed`."""
    m_pad = len(self.ids)
    idx = np.zeros((m_pad, self.steps, self.batch_size), np.int64)
    row_mask = np.zeros((m_pad, self.steps, self.batch_size), bool)
    for j in range(self.size):
      idx[j], row_mask[j] = client_batch_indices(
          data, int(self.ids[j]), steps=self.steps,
          batch_size=self.batch_size, local_epochs=self.local_epochs,
          seed=seed, round=round)
    out = {k: np.where(row_mask.reshape(row_mask.shape + (1,) * (
        np.ndim(v) - 1)), np.asarray(v)[idx], 0)
           for k, v in data.arrays.items()}
    out["example_mask"] = row_mask
    return out


def cohort_buckets(data: FederatedData, clients: np.ndarray,
                   weights: np.ndarray, *, ndev: int, batch_size: int,
                   local_epochs: int) -> list[Bucket]:
  """The cohort's clients grouped by padded local steps (ascending)."""
  sizes = data.client_sizes()[clients]
  steps = local_steps(sizes, batch_size, local_epochs)
  groups = {}
  for pos, s in enumerate(steps):
    groups.setdefault(_bucket(max(int(s), 1)), []).append(pos)
  out = []
  for s_b, members in sorted(groups.items()):
    m = len(members)
    # Client counts are padded to a power of two (and a multiple of the
    # device count) so that shapes, and thus compilations, repeat across
    # rounds; padded clients have no data and weight 0.
    m_pad = -(-_bucket(m) // ndev) * ndev
    ids = np.zeros(m_pad, np.int64)
    w = np.zeros(m_pad, np.float32)
    unit = np.zeros(m_pad, np.float32)
    for j, pos in enumerate(members):
      ids[j], w[j], unit[j] = int(clients[pos]), weights[pos], 1.0
    out.append(Bucket(s_b, m, ids, w, unit, batch_size, local_epochs))
  return out


def cohort_members(cohort: Cohort, round: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """The cohort's real clients and their weights; ValueError if unusable."""
  clients = cohort.clients[cohort.mask]
  weights = cohort.weights[cohort.mask]
  if len(clients) == 0:
    raise ValueError(f"round {round}: the cohort is empty")
  if not np.all(np.isfinite(weights)) or weights.sum() <= 0:
    raise ValueError(f"round {round}: aggregation weights must be finite "
                     f"and sum to > 0, got {weights}")
  return clients, weights


def cohort_aggregate(algorithm: Algorithm, server_state, client_states,
                     batches, weights, unit, rngs):
  """`vmap(client_update)` over a bucket's clients and their aggregate.

  Returns `({"weighted": sum_i w_i u_i, "summed": sum_i unit_i s_i},
  new_client_states, metrics)`; sums are contractions over the client axis.
  """
  upd, new_cs, metrics = jax.vmap(
      algorithm.client_update, in_axes=(None, 0, 0, 0))(
          server_state, client_states, batches, rngs)
  agg = {}
  if "weighted" in upd:
    agg["weighted"] = jax.tree.map(
        lambda x: jnp.tensordot(weights.astype(x.dtype), x, axes=1),
        upd["weighted"])
  if "summed" in upd:
    agg["summed"] = jax.tree.map(
        lambda x: jnp.tensordot(unit.astype(x.dtype), x, axes=1),
        upd["summed"])
  return agg, new_cs, metrics


@functools.lru_cache(maxsize=64)
def _cohort_program(algorithm: Algorithm, mesh: Any):
  """jit(vmap(client_update) + weighted aggregation), optionally sharded."""

  def local(server_state, client_states, batches, weights, unit, rngs):
    agg, new_cs, metrics = cohort_aggregate(
        algorithm, server_state, client_states, batches, weights, unit, rngs)
    if mesh is not None:
      agg = jax.lax.psum(agg, AXIS)
    return agg, new_cs, metrics

  if mesh is None:
    return jax.jit(local)
  sharded = jax.shard_map(
      local, mesh=mesh,
      in_specs=(P(), P(AXIS), P(AXIS), P(AXIS), P(AXIS), P(AXIS)),
      out_specs=(P(), P(AXIS), P(AXIS)),
      # Client code is written for one device (scan carries start
      # replicated); the psum above makes the aggregate replicated.
      check_vma=False)
  return jax.jit(sharded)


def run_round(algorithm: Algorithm, server_state: Any, data: FederatedData,
              cohort: Cohort, *, batch_size: int, local_epochs: int,
              seed: int, round: int, client_states: Any = None,
              mesh: jax.sharding.Mesh | None = None):
  """One round: local training of the cohort, aggregation, server update.

  Args:
    algorithm: from `algorithms.py`.
    server_state: from `algorithm.server_init`.
    data: the population's FederatedData (arrays used as model inputs).
    cohort: from `selection.select_clients`; its weights are the
      aggregation weights of the "weighted" update.
    client_states: for algorithms with client state (SCAFFOLD), a pytree
      with leading axis num_clients; returned updated for the cohort.
    mesh: a 1-D mesh with axis "clients" to shard the cohort over devices.

  Returns:
    (server_state, client_states, metrics) where metrics holds the
    weighted mean client loss, the number of client updates and the padding
    efficiency (real example-steps / padded example-steps).
  """
  clients, weights = cohort_members(cohort, round)
  if algorithm.uses_client_state and client_states is None:
    raise ValueError(f"{algorithm.name} needs client_states (one per "
                     "client)")
  if client_states is not None:
    client_states = jax.tree.map(jnp.asarray, client_states)
  ndev = mesh.devices.size if mesh is not None else 1
  base = jax.random.fold_in(jax.random.key(seed), round)
  total = None
  real_rows = padded_rows = 0
  loss_sum = 0.0
  new_states = client_states
  for bucket in cohort_buckets(data, clients, weights, ndev=ndev,
                               batch_size=batch_size,
                               local_epochs=local_epochs):
    m, ids, w, unit = bucket.size, bucket.ids, bucket.weights, bucket.unit
    batches = bucket.batches(data, seed=seed, round=round)
    real_rows += int(batches["example_mask"].sum())
    padded_rows += batches["example_mask"].size
    rngs = jax.vmap(lambda c: jax.random.fold_in(base, c))(jnp.asarray(ids))
    if client_states is not None:
      cs = jax.tree.map(lambda x: x[ids], client_states)
    else:
      cs = jnp.zeros((len(ids),))
    args = (server_state, cs, batches, w, unit, rngs)
    if mesh is not None:
      shard = jax.sharding.NamedSharding(mesh, P(AXIS))
      args = (jax.device_put(server_state,
                             jax.sharding.NamedSharding(mesh, P())),
              *jax.device_put(args[1:], shard))
    agg, cs_new, metrics = _cohort_program(algorithm, mesh)(*args)
    loss_sum += float(np.dot(np.asarray(metrics["loss"]), w))
    total = agg if total is None else jax.tree.map(jnp.add, total, agg)
    if client_states is not None:
      real = ids[:m]
      new_states = jax.tree.map(
          lambda all_, new: all_.at[real].set(new[:m]), new_states, cs_new)
  server_state = algorithm.server_update(server_state, total, len(clients))
  metrics = {"client_loss": loss_sum / float(weights.sum()),
             "clients": int(len(clients)),
             "padding_efficiency": real_rows / max(padded_rows, 1)}
  return server_state, new_states, metrics


def make_client_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices, axis "clients"."""
  n = num_devices or jax.device_count()
  return jax.make_mesh((n,), (AXIS,), devices=jax.devices()[:n])
