"""Vectorised, sharded execution of one federated round.

A round gathers the cohort's examples into fixed-shape padded buckets
(clients grouped by the power of two at or above their number of local
steps, so padding stays low and shapes repeat across rounds), runs
`vmap(client_update)` over the clients of a bucket and, given a mesh,
`jax.shard_map` over its "clients" axis with a `psum` of the aggregate.
Every random choice is a function of (seed, round, client): a rerun is
bit-identical and 1 device gives the result of 8 (up to float summation
order).

Host work per round is kept small, since it competes with the programs for
the CPU: a bucket's batches are laid out with one vectorised scatter (the
only per-client Python work is each client's shuffle), each program adds
its sums to the round's running total (one program launch per bucket), and
the host builds the next bucket while the previous one runs (dispatch is
asynchronous; nothing waits for a result before the end of the round).

Row-sparse embeddings (`run_round(..., row_sparse=RowSparse(...))`). A client
only touches the embedding rows of the token ids it holds: with the
FedAvg family (FedAvg, FedProx, FedOpt, DP-FedAvg) every other row has zero
gradient at every local step (FedProx's term mu (w - w_global) is zero
there too), so its update is exactly zero. Vectorised over clients, the
dense path still materialises, per client and per step, a full
[vocab, d] gradient and update: 128 clients x 8192 x 64 floats is 268 MB
per step, which leaves the cache and makes the vectorised round memory-bound
(measured slower than a per-client loop). With `row_sparse`, each client
trains on its own rows only: each client's distinct ids (and id 0, which
padding examples hold) and the ids renumbered to positions in that list are
computed once per population (`client_rows`), a bucket pads the lists to a
power of two U (`row_budget`), the program gathers the client's [U, d] rows
of the global table, runs the unchanged `client_update` on them, and the
weighted updates are scatter-added into the [vocab, d] aggregate. The
result equals the dense path up to float summation order (tests hold it to
1e-5). It is exact only when the parameter
is used solely through lookups by `batch[ids]` (not tied to an output
layer, no weight decay) and the algorithm leaves untouched rows unchanged;
`Algorithm.row_sparse_safe` says so and SCAFFOLD (whose control variates move
every row) is refused.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from trustjax.federated.algorithms import Algorithm
from trustjax.federated.data import FederatedData
from trustjax.federated.selection import Cohort
from trustjax.privacy.distributed import process_rows
from trustjax.privacy.distributed import shard_global
from trustjax.privacy.distributed import shard_process_local
from trustjax.privacy.distributed import to_host

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


class RowSparse(NamedTuple):
  """A parameter used only through row lookups by one integer batch input.

  `param`: its path in the params tree, e.g. `("token_embed", "embedding")`
  for `trustjax.models.BagOfEmbeddings` and `TransformerClassifier`; `ids`:
  the batch key holding the row ids (`int[..]`, padding rows included). See
  the module docstring for when this is exact.
  """
  param: tuple[str, ...]
  ids: str = "ids"


def _names(path) -> tuple[str, ...]:
  out = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        out.append(str(getattr(k, attr)))
        break
  while out and out[-1] == "value":   # nnx.Variable's payload
    out.pop()
  return tuple(out)


def _matches(path, param: tuple[str, ...]) -> bool:
  names = _names(path)
  return len(names) >= len(param) and names[-len(param):] == tuple(param)


def row_sparse_rows(params: Any, spec: RowSparse) -> int:
  """Number of rows of the row-sparse parameter; ValueError if it is not
  exactly one 2-D leaf of `params`."""
  found = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(
      params)[0] if _matches(path, spec.param)]
  if len(found) != 1 or jnp.ndim(found[0]) != 2:
    raise ValueError(
        f"row_sparse.param={spec.param}: expected exactly one 2-D parameter "
        f"at that path, found {[jnp.shape(f) for f in found]}")
  return int(jnp.shape(found[0])[0])


def _gather_rows(tree, spec: RowSparse, rows):
  """`tree` with the row-sparse leaf replaced by its rows `rows[U]`
  (out-of-range slots read zeros)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (jnp.take(x, rows, axis=0, mode="fill", fill_value=0)
                       if _matches(path, spec.param) else x), tree)


def _scatter_sum(x, coef, rows, num_rows: int, into=None):
  """sum_i coef_i * x_i scattered to rows_i: x [m, U, d] -> [num_rows, d]
  (out-of-range slots dropped), added to `into` (default zeros)."""
  w = coef.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1)) * x
  if into is None:
    into = jnp.zeros((num_rows,) + x.shape[2:], x.dtype)
  return into.at[rows.reshape(-1)].add(w.reshape((-1,) + x.shape[2:]),
                                       mode="drop")


class Bucket(NamedTuple):
  """Clients of a cohort that share padded local steps and batch rows.

  `ids`, `weights`, `unit` have length `m_pad` (a power of two, a multiple
  of the device count); rows `size:` are padding clients with no data and
  weight 0. `steps` is the bucket's padded number of local steps and
  `rows` its batch rows: `batch_size`, or for clients with fewer than
  `batch_size` examples (whose every batch holds all of them) the power of
  4 at or above their size (at least 4). The masked-mean loss of a batch does not
  depend on its number of padding rows, so this changes nothing but the
  work (for heavy-tailed populations most clients are small).
  """
  steps: int
  size: int
  ids: np.ndarray
  weights: np.ndarray
  unit: np.ndarray
  batch_size: int
  local_epochs: int
  rows: int

  def batches(self, data: FederatedData, *, seed: int, round: int,
              slots: np.ndarray | None = None,
              renumbered: tuple[str, np.ndarray] | None = None
              ) -> dict[str, np.ndarray]:
    """`{name: [m_pad, steps, rows, ...]}` plus "example_mask" for `seed`.

    Client j's batches are those of `client_batch_indices` (its first
    `rows` columns, which hold all of them); padding rows and padding
    clients are zeros. `slots` (sorted client positions in [0, m_pad),
    default all): build only those clients, `[len(slots), steps, rows,
    ...]` (on many hosts: the clients of this process's devices,
    `process_rows(m_pad, mesh, AXIS)`). `renumbered=(name, values)` reads
    array `name` from `values` (same shape as `data.arrays[name]`) instead,
    e.g. ids renumbered per client by `client_rows`.
    """
    slots = np.arange(len(self.ids)) if slots is None else np.asarray(slots)
    clients = np.where(slots < self.size, self.ids[slots], -1)
    idx, row_mask = _bucket_indices(
        data, clients, steps=self.steps, rows=self.rows,
        batch_size=self.batch_size, local_epochs=self.local_epochs,
        seed=seed, round=round)
    arrays = dict(data.arrays)
    if renumbered is not None:
      arrays[renumbered[0]] = renumbered[1]
    out = {k: _gather_examples(np.asarray(v), idx, row_mask)
           for k, v in arrays.items()}
    out["example_mask"] = row_mask
    return out

  def row_table(self, table: "ClientRows", slots: np.ndarray | None,
                budget: int, num_rows: int) -> np.ndarray:
    """int32[len(slots), budget]: each client's rows of the row-sparse
    parameter (`table.rows` of the client, first row id 0; padding clients
    hold only id 0); unused slots hold `num_rows`, which the program reads
    as zeros and drops when aggregating."""
    slots = np.arange(len(self.ids)) if slots is None else np.asarray(slots)
    clients = np.where(slots < self.size, self.ids[slots], -1)
    out = np.full((len(slots), budget), num_rows, np.int32)
    out[:, 0] = 0
    real = clients >= 0
    start = table.offsets[clients[real]]
    lens = table.offsets[clients[real] + 1] - start
    seg, pos = _ragged_arange(lens)
    out[np.flatnonzero(real)[seg], pos] = table.rows[start[seg] + pos]
    return out


def _ragged_arange(lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(segment, position) of every element of segments of lengths `lens`:
  for lens [2, 0, 3], segment [0, 0, 2, 2, 2] and position [0, 1, 0, 1, 2]."""
  lens = np.asarray(lens, np.int64)
  seg = np.repeat(np.arange(len(lens)), lens)
  start = np.cumsum(lens) - lens
  return seg, np.arange(int(lens.sum())) - start[seg]


def _epoch_orders(data: FederatedData, clients: np.ndarray, *,
                  local_epochs: int, seed: int, round: int) -> np.ndarray:
  """int64: for each client of `clients` (in order, -1 for none) and each
  local epoch, its examples in the order `client_batch_indices` visits
  them (a permutation from `default_rng([seed, round, client, epoch])`)."""
  parts = []
  for c in clients[clients >= 0].tolist():
    own = data.order[data.offsets[c]:data.offsets[c + 1]]
    if len(own) <= 1:
      # One order only: skip the draw (each client and epoch has its own
      # generator, so nothing else depends on it).
      parts += [own] * local_epochs
      continue
    for e in range(local_epochs):
      parts.append(own[np.random.default_rng([seed, round, c, e]).permutation(
          len(own))])
  return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _bucket_indices(data: FederatedData, clients: np.ndarray, *, steps: int,
                    rows: int, batch_size: int, local_epochs: int, seed: int,
                    round: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices int64[m, steps, rows], mask bool[m, steps, rows]) of clients
  `clients` (-1: a padding client): `client_batch_indices` of each, cut to
  `rows` columns, laid out with one vectorised scatter.

  In a client's visiting order (`_epoch_orders`), element p of epoch e sits
  at step `e * ceil(n / batch_size) + p // batch_size`, column
  `p % batch_size`.
  """
  sizes = np.where(clients >= 0, np.diff(data.offsets)[clients], 0)
  order = _epoch_orders(data, clients, local_epochs=local_epochs, seed=seed,
                        round=round)
  client, p = _ragged_arange(sizes * local_epochs)
  n = sizes[client]
  epoch, q = np.divmod(p, np.maximum(n, 1))
  step = epoch * -(-n // batch_size) + q // batch_size
  col = q % batch_size
  keep = (step < steps) & (col < rows)
  flat = ((client * steps + step) * rows + col)[keep]
  m = len(clients)
  idx = np.zeros(m * steps * rows, np.int64)
  mask = np.zeros(m * steps * rows, bool)
  idx[flat] = order[keep]
  mask[flat] = True
  return idx.reshape(m, steps, rows), mask.reshape(m, steps, rows)


def _gather_examples(values: np.ndarray, idx: np.ndarray,
                     mask: np.ndarray) -> np.ndarray:
  """`values[idx]` with the rows where `mask` is False set to zero."""
  out = values[idx]
  out[~mask] = 0
  return out


def _bucket_key(size: int, batch_size: int, local_epochs: int
                ) -> tuple[int, int]:
  """(padded local steps, batch rows) of a client with `size` examples."""
  steps = int(local_steps(np.array([size]), batch_size, local_epochs)[0])
  # Powers of 4 (1-4 -> 4, 5-16 -> 16, ...): few buckets, little padding.
  rows = batch_size if size >= batch_size else min(
      4 ** max(1, math.ceil(math.log(max(size, 1), 4))), batch_size)
  return _bucket(max(steps, 1)), rows


def distinct_ids(data: FederatedData, key: str) -> np.ndarray:
  """int64[num_clients]: distinct values of `data.arrays[key]` per client
  (cached on `data`, a frozen dataclass whose arrays do not change; the
  cache is written to its __dict__ directly)."""
  cache = data.__dict__.setdefault("_distinct_ids", {})
  if key not in cache:
    arr = np.asarray(data.arrays[key])
    cache[key] = np.array(
        [len(np.unique(arr[data.client_indices(c)]))
         for c in range(data.num_clients)], np.int64)
  return cache[key]


def row_budget(data: FederatedData, spec: RowSparse, *, batch_size: int,
               local_epochs: int) -> dict[tuple[int, int], int]:
  """{(steps, rows): U}: embedding rows per client for each bucket, the
  power of two at or above the most distinct ids (+1 for padding id 0) of
  any client of the population in that bucket, so that a bucket's shape is
  the same in every round (fewer compilations). Cached on `data`."""
  cache = data.__dict__.setdefault("_row_budget", {})
  ck = (spec.ids, batch_size, local_epochs)
  if ck not in cache:
    count = distinct_ids(data, spec.ids) + 1
    out, keys = {}, {}
    for size, c in zip(data.client_sizes().tolist(), count.tolist()):
      if size not in keys:
        keys[size] = _bucket_key(size, batch_size, local_epochs)
      out[keys[size]] = max(out.get(keys[size], 1), c)
    cache[ck] = {k: _bucket(v) for k, v in out.items()}
  return cache[ck]


class ClientRows(NamedTuple):
  """Each client's rows of a row-sparse parameter, fixed by its data.

  `rows`: int32, client by client, the sorted distinct values of the
  client's `data.arrays[key]` together with 0 (the id padding examples
  hold), so client c's rows are `rows[offsets[c]:offsets[c + 1]]`, first
  0; `local`: `data.arrays[key]` renumbered, each value replaced by its
  index in its client's rows (`rows[offsets[c] + local[i]] ==
  arrays[key][i]` for example i of client c; a padding example's 0 reads
  row 0, id 0); `max_id`: the largest value (-1 without any).
  """
  rows: np.ndarray
  offsets: np.ndarray
  local: np.ndarray
  max_id: int


def client_rows(data: FederatedData, key: str,
                num_rows: int | None = None) -> ClientRows:
  """`ClientRows` of `data.arrays[key]` (non-negative integers), computed
  once with one `np.unique` over (client, value) pairs and cached on
  `data` like `distinct_ids`. Row 0 in every client's rows costs at most
  one row of budget (`row_budget` counts it) and changes no result: a row
  a client never looks up gets a zero update. ValueError if a value is
  negative or, given `num_rows` (the parameter's rows), >= num_rows."""
  cache = data.__dict__.setdefault("_client_rows", {})
  if key not in cache:
    values = np.asarray(data.arrays[key])
    if values.size and values.min() < 0:
      raise ValueError(f"data.arrays[{key!r}] holds negative ids "
                       f"({values.min()}); row ids must be >= 0")
    per = values.reshape(len(values), -1)
    k = data.num_clients
    span = int(values.max(initial=0)) + 1
    owner = np.repeat(data.client_of_example(), per.shape[1])
    pairs = np.concatenate([owner * span + per.reshape(-1),
                            np.arange(k) * span])   # every client has 0
    uniq, inv = np.unique(pairs, return_inverse=True)
    offsets = np.searchsorted(uniq // span, np.arange(k + 1))
    local = inv[:per.size] - offsets[owner]
    cache[key] = ClientRows(
        rows=(uniq % span).astype(np.int32), offsets=offsets.astype(np.int64),
        local=local.reshape(values.shape).astype(np.int32),
        max_id=int(values.max(initial=-1)))
  if num_rows is not None and cache[key].max_id >= num_rows:
    raise ValueError(
        f"data.arrays[{key!r}] holds ids outside [0, {num_rows}) of the "
        f"row-sparse parameter (largest {cache[key].max_id})")
  return cache[key]


def compact_rows(batches: dict[str, np.ndarray], spec: RowSparse,
                 num_rows: int, budget: int | None = None
                 ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
  """Renumbers each client's ids to its own distinct rows.

  Returns `(batches', rows int32[m, U])` where `batches'[spec.ids]` holds,
  per client, indices into its `rows`. U is `budget` (see `row_budget`)
  or else the power of two at or above the largest number of distinct ids
  of a client; unused slots hold `num_rows`, which the program reads as
  zeros and drops when aggregating. Returns `(batches, None)` when U would
  exceed num_rows / 2, where the dense path is as cheap.
  """
  ids = np.asarray(batches[spec.ids])
  if ids.size and (ids.min() < 0 or ids.max() >= num_rows):
    raise ValueError(f"batch[{spec.ids!r}] holds ids outside [0, {num_rows}) "
                     f"of the row-sparse parameter {spec.param}")
  m = ids.shape[0]
  zero = np.zeros(1, ids.dtype)
  # Padding clients hold only id 0.
  uniq = [np.unique(ids[j]) if ids[j].any() else zero for j in range(m)]
  need = max(len(x) for x in uniq)
  u = _bucket(need) if budget is None or budget < need else int(budget)
  if 2 * u > num_rows:
    return batches, None
  rows = np.full((m, u), num_rows, np.int32)
  local = np.empty(ids.shape, np.int32)
  for j in range(m):
    rows[j, :len(uniq[j])] = uniq[j]
    local[j] = np.searchsorted(uniq[j], ids[j])
  return {**batches, spec.ids: local}, rows


def cohort_buckets(data: FederatedData, clients: np.ndarray,
                   weights: np.ndarray, *, ndev: int, batch_size: int,
                   local_epochs: int, min_client_steps: int = 1,
                   max_clients: int | None = None) -> list[Bucket]:
  """The cohort's clients grouped by (padded local steps, batch rows),
  ascending. A bucket of S padded steps is padded to at least
  `min_client_steps // S` clients (fewer distinct shapes, hence fewer
  compilations, while a padding client, which runs all S steps, costs at
  most that many client-steps), and a group of more than `max_clients` is
  cut into buckets of at most that many (one program's working set stays
  in cache and memory is bounded)."""
  sizes = data.client_sizes()[clients]
  groups = {}
  keys = {}
  for pos, n in enumerate(sizes):
    n = int(n)
    if n not in keys:
      keys[n] = _bucket_key(n, batch_size, local_epochs)
    groups.setdefault(keys[n], []).append(pos)
  out = []
  chunks = []
  for key, members in sorted(groups.items()):
    step = max_clients or len(members)
    chunks += [(key, members[i:i + step])
               for i in range(0, len(members), step)]
  for (s_b, rows), members in chunks:
    m = len(members)
    # Client counts are padded to a power of two (and a multiple of the
    # device count) so that shapes, and thus compilations, repeat across
    # rounds; padded clients have no data and weight 0.
    m_pad = -(-max(_bucket(m), min_client_steps // s_b) // ndev) * ndev
    ids = np.zeros(m_pad, np.int64)
    w = np.zeros(m_pad, np.float32)
    unit = np.zeros(m_pad, np.float32)
    for j, pos in enumerate(members):
      ids[j], w[j], unit[j] = int(clients[pos]), weights[pos], 1.0
    out.append(Bucket(s_b, m, ids, w, unit, batch_size, local_epochs, rows))
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
                     batches, weights, unit, rngs, rows=None,
                     row_sparse: RowSparse | None = None, into=None):
  """`vmap(client_update)` over a bucket's clients and their aggregate.

  Returns `({"weighted": sum_i w_i u_i, "summed": sum_i unit_i s_i},
  new_client_states, metrics)`; sums are contractions over the client axis.
  With `rows` (int[m, U], from `compact_rows` or `Bucket.row_table`) and
  `row_sparse`, client i trains on rows `rows[i]` of the row-sparse
  parameter and its updates to that parameter are scatter-added into the
  full table. `into` (an aggregate of the same structure, e.g. the sum over
  earlier buckets): the result is `into` plus this bucket's sums, the
  row-sparse table scatter-added in place (no [num_rows, d] zeros).
  """
  if rows is None:
    upd, new_cs, metrics = jax.vmap(
        algorithm.client_update, in_axes=(None, 0, 0, 0))(
            server_state, client_states, batches, rngs)
  else:
    def one(cs, batch, rng, rows_i):
      state = dict(server_state)
      state["params"] = _gather_rows(server_state["params"], row_sparse,
                                     rows_i)
      return algorithm.client_update(state, cs, batch, rng)
    upd, new_cs, metrics = jax.vmap(one)(client_states, batches, rngs, rows)
    num_rows = row_sparse_rows(server_state["params"], row_sparse)

  def reduce(coef):
    def f(path, x, base=None):
      if rows is not None and _matches(path, row_sparse.param):
        return _scatter_sum(x, coef, rows, num_rows, into=base)
      out = jnp.tensordot(coef.astype(x.dtype), x, axes=1)
      return out if base is None else base + out
    return f

  agg = {}
  for name, coef in (("weighted", weights), ("summed", unit)):
    if name in upd:
      agg[name] = jax.tree_util.tree_map_with_path(
          reduce(coef), upd[name], *(() if into is None else (into[name],)))
  return agg, new_cs, metrics


def _bucket_sums(algorithm: Algorithm, row_sparse: RowSparse | None,
                 total, server_state, client_states, batches, weights, unit,
                 ids, key, rows=None):
  """`((aggregate, sum_i w_i loss_i), new_client_states)` of one bucket on
  one device, added to `total` (same structure) unless it is None; client
  i's key is `fold_in(key, ids[i])`."""
  rngs = jax.vmap(lambda c: jax.random.fold_in(key, c))(ids)
  agg, new_cs, metrics = cohort_aggregate(
      algorithm, server_state, client_states, batches, weights, unit, rngs,
      rows, row_sparse, into=None if total is None else total[0])
  loss = jnp.dot(metrics["loss"].astype(jnp.float32), weights)
  return (agg, loss if total is None else total[1] + loss), new_cs


@functools.lru_cache(maxsize=64)
def _cohort_program(algorithm: Algorithm, mesh: Any,
                    row_sparse: RowSparse | None = None):
  """jit(vmap(client_update) + weighted aggregation), optionally sharded.

  `(total, server_state, client_states, batches, weights, unit, ids,
  key[, rows]) -> (total + (aggregate, sum_i w_i loss_i),
  new_client_states)`: each bucket adds its sums to the running total of
  the round's earlier buckets (`total`, donated: one program per bucket,
  no separate additions). With `row_sparse`, the clients' rows come last.
  """
  if mesh is None:
    return jax.jit(functools.partial(_bucket_sums, algorithm, row_sparse),
                   donate_argnums=0)

  def local(total, *args):
    sums, new_cs = _bucket_sums(algorithm, row_sparse, None, *args)
    # Each device holds a part of the clients: sum the parts, then add the
    # (replicated) total.
    sums = jax.lax.psum(sums, AXIS)
    return jax.tree.map(jnp.add, total, sums), new_cs

  specs = (P(), P(), P(AXIS), P(AXIS), P(AXIS), P(AXIS), P(AXIS), P())
  if row_sparse is not None:
    specs += (P(AXIS),)
  sharded = jax.shard_map(
      local, mesh=mesh, in_specs=specs, out_specs=(P(), P(AXIS)),
      # Client code is written for one device (scan carries start
      # replicated); the psum above makes the aggregate replicated.
      check_vma=False)
  return jax.jit(sharded, donate_argnums=0)


@functools.lru_cache(maxsize=256)
def _zeros_program(algorithm: Algorithm, row_sparse: RowSparse | None,
                   mesh: Any, treedef: Any, avals: tuple):
  """jit `() -> zeros` shaped like a bucket's `(aggregate, loss)` for
  arguments of shapes `avals` (replicated over `mesh` if given)."""
  shapes = jax.eval_shape(
      functools.partial(_bucket_sums, algorithm, row_sparse, None),
      *jax.tree.unflatten(treedef, avals))[0]
  return jax.jit(
      lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
      out_shardings=None if mesh is None else NamedSharding(mesh, P()))


def _zero_sums(algorithm: Algorithm, row_sparse: RowSparse | None, args,
               mesh: jax.sharding.Mesh | None):
  """The zero total a round starts from: zeros shaped like a bucket's
  `(aggregate, loss)` for `args` (the program's arguments after `total`);
  one cached program per argument shapes."""
  leaves, treedef = jax.tree.flatten(args)
  # Shapes only (no shardings): the same trace on one device or many.
  avals = tuple(jax.ShapeDtypeStruct(np.shape(x), x.dtype) for x in leaves)
  return _zeros_program(algorithm, row_sparse, mesh, treedef, avals)()


@functools.lru_cache(maxsize=64)
def _server_program(algorithm: Algorithm):
  return jax.jit(algorithm.server_update)


def run_round(algorithm: Algorithm, server_state: Any, data: FederatedData,
              cohort: Cohort, *, batch_size: int, local_epochs: int,
              seed: int, round: int, client_states: Any = None,
              mesh: jax.sharding.Mesh | None = None,
              row_sparse: RowSparse | None = None,
              max_clients_per_program: int | None = 64):
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
    row_sparse: train each client on the embedding rows of its own ids
      only (see the module docstring; same result, much less memory
      traffic for large embedding tables). Refused for algorithms whose
      `row_sparse_safe` is False.
    max_clients_per_program: larger groups of same-shaped clients run as
      several programs of at most this many clients (bounds memory and keeps
      the working set in cache; None: one program per group).

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
  num_rows = None
  if row_sparse is not None:
    if not algorithm.row_sparse_safe:
      raise ValueError(
          f"row_sparse: {algorithm.name or 'this algorithm'} may change "
          "embedding rows a client never looks up (e.g. SCAFFOLD's control "
          "variates), so training on the client's rows only would differ; "
          "run it with row_sparse=None")
    num_rows = row_sparse_rows(server_state["params"], row_sparse)
    budget = row_budget(data, row_sparse, batch_size=batch_size,
                        local_epochs=local_epochs)
    table = client_rows(data, row_sparse.ids, num_rows)
  sizes = data.client_sizes()
  ndev = mesh.devices.size if mesh is not None else 1
  base = jax.random.fold_in(jax.random.key(seed), round)
  total = None
  real_rows = padded_rows = 0
  new_states = client_states
  # With row_sparse a padding client costs little, so small buckets are
  # padded to 8 client-steps: fewer distinct shapes, fewer compilations.
  for bucket in cohort_buckets(data, clients, weights, ndev=ndev,
                               batch_size=batch_size,
                               local_epochs=local_epochs,
                               min_client_steps=8 if row_sparse else 1,
                               max_clients=max_clients_per_program):
    m, ids, w, unit = bucket.size, bucket.ids, bucket.weights, bucket.unit
    # On many hosts each process builds only its own devices' clients.
    slots = None if mesh is None else process_rows(len(ids), mesh, AXIS)
    # Each local epoch visits each of a client's examples once.
    real_rows += local_epochs * int(sizes[ids[:m]].sum())
    padded_rows += len(ids) * bucket.steps * bucket.rows
    # Row-sparse unless the client's rows would exceed half the table, where
    # the dense path is as cheap (as `compact_rows`).
    u = budget[(bucket.steps, bucket.rows)] if row_sparse else None
    if u is not None and 2 * u <= num_rows:
      batches = bucket.batches(data, seed=seed, round=round, slots=slots,
                               renumbered=(row_sparse.ids, table.local))
      rows = bucket.row_table(table, slots, u, num_rows)
    else:
      batches = bucket.batches(data, seed=seed, round=round, slots=slots)
      rows = None
    if client_states is not None:
      cs = jax.tree.map(lambda x: x[ids], client_states)
    else:
      cs = np.zeros((len(ids),), np.float32)
    args = (server_state, cs, batches, w, unit, ids.astype(np.int32), base)
    if rows is not None:
      args += (rows,)
    if mesh is not None:
      # Values every process holds in full (server state, client states,
      # weights, ids, key) are cut per device on each host; the batches (and
      # rows) are this process's part only. One or many processes alike.
      local = shard_process_local((batches,) + args[7:], mesh, AXIS)
      args = (shard_global(server_state, mesh, P()),
              shard_global(cs, mesh, P(AXIS)), local[0],
              *shard_global(args[3:6], mesh, P(AXIS)),
              shard_global(base, mesh, P()), *local[1:])
    spec = row_sparse if rows is not None else None
    if total is None:
      total = _zero_sums(algorithm, spec, args, mesh)
    # Dispatch is asynchronous: the host builds the next bucket while this
    # one runs.
    total, cs_new = _cohort_program(algorithm, mesh, spec)(total, *args)
    if client_states is not None:
      real = ids[:m]
      new_states = jax.tree.map(
          lambda all_, new: all_.at[real].set(jnp.asarray(new[:m])),
          new_states, to_host(cs_new))
  total, loss_sum = total
  server_state = _server_program(algorithm)(
      server_state, total, jnp.asarray(len(clients), jnp.int32))
  metrics = {"client_loss": float(loss_sum) / float(weights.sum()),
             "clients": int(len(clients)),
             "padding_efficiency": real_rows / max(padded_rows, 1)}
  return server_state, new_states, metrics


def make_client_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices, axis "clients"."""
  n = num_devices or jax.device_count()
  return jax.make_mesh((n,), (AXIS,), devices=jax.devices()[:n])
