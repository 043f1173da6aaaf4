"""Row-sparse rounds (each client trains on its own embedding rows) equal
the dense rounds, for every algorithm that declares them safe."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from trustjax import federated as fl
from trustjax import models

V, T, NC = 200, 4, 5
SPEC = fl.RowSparse(("token_embed", "embedding"), "ids")
# Very different client sizes, one empty client, one client whose ids
# cover more than half the table (its bucket falls back to the dense path).
SIZES = [1, 2, 3, 0, 7, 12, 5, 30, 2, 1, 4, 9]


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  n = sum(SIZES)
  # Client i draws its tokens from its own window of the vocabulary, so
  # clients touch different (overlapping) rows, as real users do.
  owner = np.repeat(np.arange(len(SIZES)), SIZES)
  start = (owner * 13) % (V - 40)
  ids = (start[:, None] + rng.integers(0, 40, (n, T))).astype(np.int32)
  ids[owner == 7] = rng.integers(1, V, (SIZES[7], T))   # a broad client
  mask = rng.random((n, T)) < 0.8
  mask[:, 0] = True
  ids = np.where(mask, ids, 0)
  arrays = {"ids": ids, "mask": mask,
            "label": rng.integers(0, NC, n).astype(np.int32)}
  data = fl.FederatedData.from_assignment(arrays, owner, len(SIZES))
  model = models.BagOfEmbeddings(V, NC, d_embed=8, d_hidden=6,
                                 rngs=nnx.Rngs(seed))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  return data, params, models.classifier_loss_fn(graphdef, rest=rest)


def _algorithms(loss_fn):
  dp = fl.DPFedAvgConfig(l2_clip=0.05, noise_multiplier=0.5,
                         expected_cohort=6.0, num_clients=len(SIZES))
  return {
      "fedavg": fl.fedavg(loss_fn, client_lr=0.5),
      "fedprox": fl.fedprox(loss_fn, client_lr=0.5, mu=0.3),
      "fedopt_adam": fl.fedopt(loss_fn, client_lr=0.5,
                               server_optimizer=optax.adam(0.05)),
      "dp_fedavg": fl.dp_fedavg(loss_fn, dp, client_lr=0.5, seed=3),
  }


def _rounds(alg, params, data, mesh=None, row_sparse=None, rounds=2):
  state = alg.server_init(params)
  losses = []
  for rnd in range(rounds):
    cohort = fl.select_clients(data.client_sizes(), 8, round=rnd, seed=2)
    state, _, m = fl.run_round(alg, state, data, cohort, batch_size=4,
                               local_epochs=2, seed=1, round=rnd, mesh=mesh,
                               row_sparse=row_sparse)
    losses.append(m["client_loss"])
  return state, losses


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fedopt_adam",
                                  "dp_fedavg"])
def test_row_sparse_equals_dense(name):
  data, params, loss_fn = _problem()
  alg = _algorithms(loss_fn)[name]
  dense, l_dense = _rounds(alg, params, data)
  sparse, l_sparse = _rounds(alg, params, data, row_sparse=SPEC)
  np.testing.assert_allclose(l_sparse, l_dense, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(dense["params"]),
                  jax.tree.leaves(sparse["params"])):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  # The embedding really moved, and only on rows some client looked up.
  emb0 = params["token_embed"]["embedding"][...]
  emb = sparse["params"]["token_embed"]["embedding"]
  moved = np.any(np.abs(np.asarray(emb - emb0)) > 0, axis=1)
  assert moved.sum() > 20
  if name != "dp_fedavg":   # DP noise moves every row
    assert not moved[np.setdiff1d(np.arange(V),
                                  np.unique(data.arrays["ids"]))].any()


def test_row_sparse_on_eight_devices_equals_one():
  assert jax.device_count() >= 8
  data, params, loss_fn = _problem(seed=4)
  alg = fl.fedavg(loss_fn, client_lr=0.5)
  one, _ = _rounds(alg, params, data, row_sparse=SPEC, rounds=2)
  eight, _ = _rounds(alg, params, data, mesh=fl.make_client_mesh(8),
                     row_sparse=SPEC, rounds=2)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_compaction_renumbers_ids_and_pads_rows():
  batches = {"ids": np.array([[[5, 9, 5], [0, 0, 0]],
                              [[7, 7, 7], [7, 3, 0]]], np.int32),
             "example_mask": np.ones((2, 2, 3), bool)}
  out, rows = fl.rounds.compact_rows(batches, SPEC, num_rows=50)
  assert rows.shape == (2, 4)          # 3 distinct ids -> power of two 4
  for j in range(2):
    np.testing.assert_array_equal(rows[j][out["ids"][j]], batches["ids"][j])
    real = rows[j][rows[j] < 50]
    assert len(real) == len(np.unique(batches["ids"][j]))
    assert np.all(rows[j][len(real):] == 50)   # unused slots: out of range
  # Dense is as cheap once the rows would exceed half the table.
  same, none = fl.rounds.compact_rows(batches, SPEC, num_rows=10, budget=8)
  assert none is None and same is batches


def test_row_sparse_refusals():
  data, params, loss_fn = _problem()
  cohort = fl.select_clients(data.client_sizes(), 4, round=0, seed=0)
  kw = dict(batch_size=4, local_epochs=1, seed=0, round=0)
  sc = fl.scaffold(loss_fn, client_lr=0.1, num_clients=len(SIZES))
  controls = jax.tree.map(
      lambda x: jnp.zeros((len(SIZES),) + x.shape, x.dtype), params)
  with pytest.raises(ValueError, match="SCAFFOLD|scaffold"):
    fl.run_round(sc, sc.server_init(params), data, cohort,
                 client_states=controls, row_sparse=SPEC, **kw)
  alg = fl.fedavg(loss_fn, client_lr=0.1)
  with pytest.raises(ValueError, match="row_sparse.param"):
    fl.run_round(alg, alg.server_init(params), data, cohort,
                 row_sparse=fl.RowSparse(("nope", "embedding")), **kw)
  with pytest.raises(ValueError, match="outside"):
    fl.rounds.compact_rows({"ids": np.array([[[V + 1]]])}, SPEC, V)


def test_stacked_row_sparse_equals_separate_dense_runs():
  from trustjax import sweeps
  data, params, loss_fn = _problem(seed=6)

  def make(hp):
    return fl.fedavg(loss_fn, client_lr=hp["client_lr"], prox_mu=hp["mu"])
  hps = [{"client_lr": 0.5, "mu": 0.0}, {"client_lr": 0.2, "mu": 0.3}]
  seeds = [1, 5]
  states = sweeps.stack([make(h).server_init(params) for h in hps])
  hp = {k: np.array([h[k] for h in hps], np.float32) for k in hps[0]}
  separate = [make(h).server_init(params) for h in hps]
  for rnd in range(1):
    cohort = fl.select_clients(data.client_sizes(), 6, round=rnd, seed=2)
    states, _ = fl.run_round_stacked(make, hp, states, data, cohort,
                                     batch_size=4, local_epochs=2,
                                     seeds=seeds, round=rnd, row_sparse=SPEC)
    for i, h in enumerate(hps):
      separate[i], _, _ = fl.run_round(make(h), separate[i], data, cohort,
                                       batch_size=4, local_epochs=2,
                                       seed=seeds[i], round=rnd)
  for i in range(len(hps)):
    for a, b in zip(jax.tree.leaves(separate[i]),
                    jax.tree.leaves(jax.tree.map(lambda x: x[i], states))):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
