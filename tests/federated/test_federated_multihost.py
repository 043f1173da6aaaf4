"""Federated rounds on 2 processes x 4 CPU devices (`jax.distributed`, gloo
collectives) equal the same rounds on 8 devices in one process.

The test starts two local processes of one JAX job (this file run as a
script). Both select the same cohort (a function of (seed, round)); each
builds the padded batches of only the clients its own devices hold, and the
weighted aggregate is psum-med across the two processes.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trustjax import federated as fl
from trustjax.privacy.distributed import process_rows

D, C = 5, 3
SIZES = [3, 7, 0, 8, 5, 6, 2, 8, 7, 4, 1, 6]   # uneven, one empty
COHORT, ROUNDS = 8, 2


def loss_fn(params, batch, rng):
  del rng
  logits = batch["x"] @ params["w"] + params["b"][None, :]
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["y"]), {}


def _problem():
  rng = np.random.default_rng(0)
  n = sum(SIZES)
  arrays = {"x": rng.normal(size=(n, D)).astype(np.float32),
            "y": rng.integers(0, C, n).astype(np.int32)}
  data = fl.FederatedData.from_assignment(
      arrays, np.repeat(np.arange(len(SIZES)), SIZES), len(SIZES))
  params = {"w": rng.normal(size=(D, C)).astype(np.float32) * 0.1,
            "b": np.zeros((C,), np.float32)}
  return data, params


def simulate(mesh):
  """ROUNDS FedAvg rounds and one SCAFFOLD round (client state) on the same
  cohorts; returns numpy results and metrics."""
  data, params = _problem()
  out = {}
  alg = fl.fedavg(loss_fn, client_lr=0.2)
  state = alg.server_init(params)
  for r in range(ROUNDS):
    cohort = fl.select_clients(data.client_sizes(), COHORT, round=r, seed=1,
                               method="activity")
    state, _, met = fl.run_round(alg, state, data, cohort, batch_size=4,
                                 local_epochs=1, seed=1, round=r, mesh=mesh)
    out[f"loss{r}"] = met["client_loss"]
    out[f"eff{r}"] = met["padding_efficiency"]
  for k, v in state["params"].items():
    out[f"fedavg_{k}"] = np.asarray(v.addressable_data(0))
  sc = fl.scaffold(loss_fn, client_lr=0.1, num_clients=len(SIZES))
  cs = jax.tree.map(lambda p: np.zeros((len(SIZES),) + p.shape, p.dtype),
                    params)
  cohort = fl.select_clients(data.client_sizes(), COHORT, round=0, seed=2)
  st, cs, _ = fl.run_round(sc, sc.server_init(params), data, cohort,
                           batch_size=4, local_epochs=1, seed=2, round=0,
                           client_states=cs, mesh=mesh)
  for k in params:
    out[f"scaffold_{k}"] = np.asarray(st["params"][k].addressable_data(0))
    out[f"control_{k}"] = np.asarray(st["control"][k].addressable_data(0))
    out[f"client_control_{k}"] = np.asarray(cs[k])
  return out


def _worker(out_dir: str) -> None:
  from trustjax.experiment import multihost
  assert multihost.initialize(cpu_devices_per_process=4, timeout_s=60)
  assert jax.process_count() == 2 and jax.device_count() == 8
  mesh = fl.make_client_mesh()
  out = simulate(mesh)
  out["slots"] = process_rows(COHORT, mesh, fl.rounds.AXIS)
  np.savez(os.path.join(out_dir, f"process{jax.process_index()}.npz"), **out)


def test_two_processes_equal_one_process(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices; tests/conftest.py sets them")
  from conftest import run_local_processes
  outs = run_local_processes(__file__, tmp_path)
  # Each process held (and built the batches of) half of the cohort.
  np.testing.assert_array_equal(outs[0].pop("slots"), np.arange(4))
  np.testing.assert_array_equal(outs[1].pop("slots"), np.arange(4, 8))

  # The single-process reference: the same mesh shape in one process
  # (tests/federated/test_federated_rounds.py holds 8 devices equal to 1
  # and to a sequential per-client loop).
  one = simulate(fl.make_client_mesh(8))
  assert set(one) == set(outs[0]) == set(outs[1])
  for k in one:
    for got in outs:
      np.testing.assert_allclose(got[k], one[k], rtol=1e-5, atol=1e-6,
                                 err_msg=k)
  # The rounds trained something (not a trivially equal no-op).
  _, params = _problem()
  assert np.max(np.abs(one["fedavg_w"] - params["w"])) > 1e-2
  assert np.max(np.abs(one["client_control_w"])) > 1e-3


if __name__ == "__main__":
  _worker(sys.argv[1])
