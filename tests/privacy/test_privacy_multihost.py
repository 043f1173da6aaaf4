"""DP-SGD on 2 processes x 4 CPU devices (`jax.distributed`, gloo
collectives) equals 8 devices in one process and 1 device.

The test starts two local processes of one JAX job (this file run as a
script, coordinator on a free localhost port). Each process draws the same
Poisson batches (host numpy, a function of (seed, step)), loads ONLY the rows
of its own 4 devices, clips them, the clipped sums are psum-med across both
processes, and the Gaussian noise is added once to the replicated sum.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from trustjax.privacy import clipped_grad
from trustjax.privacy import dpsgd
from trustjax.privacy import PoissonSampler
from trustjax.privacy.distributed import make_dp_grad_fn
from trustjax.privacy.distributed import process_rows
from trustjax.privacy.distributed import shard_global
from trustjax.privacy.distributed import shard_process_local
from trustjax.privacy.distributed import to_host

N, D, H, K = 96, 5, 7, 3       # examples, features, hidden, classes
STEPS, Q, B = 2, 0.25, 32      # steps, sampling rate, padded batch size
L2_CLIP, SIGMA = 0.7, 1.3


def _data():
  rng = np.random.default_rng(0)
  return {"x": (rng.normal(size=(N, D)) * 2).astype(np.float32),
          "y": rng.integers(0, K, N).astype(np.int32)}


def _init_params():
  rng = np.random.default_rng(1)
  return {"w1": rng.normal(size=(D, H)).astype(np.float32),
          "b1": np.zeros((H,), np.float32),
          "w2": rng.normal(size=(H, K)).astype(np.float32)}


def _loss(p, b, r):
  h = jnp.tanh(b["x"] @ p["w1"] + p["b1"][None])
  keep = jax.random.bernoulli(r, 0.8, h.shape)   # dropout: per-example rng
  logits = jnp.where(keep, h / 0.8, 0.0) @ p["w2"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]), None


def train(mesh, sigma=SIGMA):
  """STEPS DP-SGD steps; `mesh=None` is the plain one-device program.

  Returns (params, per-step per-example norms [STEPS, B], per-step
  num_real, rows loaded by this process per step).
  """
  data = _data()
  sampler = PoissonSampler(N, Q, B, seed=3)
  cg = clipped_grad(_loss, L2_CLIP, method="vmap")
  fn = cg if mesh is None else make_dp_grad_fn(cg, mesh, axis="data")
  tx = dpsgd(optax.sgd(0.5), L2_CLIP, sigma, sampler.expected_batch_size,
             seed=11, allow_no_noise=sigma == 0)

  @jax.jit
  def step(params, opt_state, batch, mask, rng):
    g, stats = fn(params, batch, mask, rng)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, stats

  params = _init_params()
  if mesh is not None:   # laid out as the step returns them: one compile
    params = shard_global(params, mesh, P())
  opt_state = tx.init(params)
  if mesh is not None:
    opt_state = shard_global(opt_state, mesh, P())
  norms, num_real, loaded = [], [], []
  for t in range(STEPS):
    idx, mask = sampler.batch(t)               # the same on every process
    rng = jax.random.fold_in(jax.random.key(5), t)
    if mesh is None:
      batch = {k: v[idx] for k, v in data.items()}
    else:
      rows = process_rows(B, mesh, "data")     # this process's rows only
      batch = shard_process_local({k: v[idx[rows]] for k, v in data.items()},
                                  mesh, "data")
      mask = shard_process_local(mask[rows], mesh, "data")
      loaded.append(len(rows))
    params, opt_state, stats = step(params, opt_state, batch, mask, rng)
    norms.append(to_host(stats.per_example_norms))
    num_real.append(int(to_host(stats.num_real)))
  return params, np.stack(norms), np.asarray(num_real), loaded


def _worker(out_dir: str) -> None:
  from trustjax.experiment import multihost
  assert multihost.initialize(cpu_devices_per_process=4, timeout_s=60)
  assert jax.process_count() == 2 and jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",))
  params, norms, num_real, loaded = train(mesh)
  # Every device's copy of the (replicated) parameters, to check that all 8
  # devices of both processes hold the same noisy update.
  copies = {k: np.stack([np.asarray(s.data) for s in v.addressable_shards])
            for k, v in params.items()}
  assert all(v.shape[0] == 4 for v in copies.values())
  np.savez(os.path.join(out_dir, f"process{jax.process_index()}.npz"),
           norms=norms, num_real=num_real, loaded=np.asarray(loaded),
           **{f"param_{k}": v for k, v in copies.items()})


def test_two_processes_equal_eight_devices_and_one(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices; tests/conftest.py sets them")
  from conftest import run_local_processes
  outs = run_local_processes(__file__, tmp_path)

  one_params, one_norms, one_real, _ = train(None)
  eight_params, eight_norms, eight_real, _ = train(
      jax.make_mesh((8,), ("data",)))
  for k in one_params:
    np.testing.assert_allclose(eight_params[k], one_params[k], rtol=1e-5,
                               atol=1e-6)
    for o in outs:
      for copy in o[f"param_{k}"]:
        np.testing.assert_allclose(copy, one_params[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(copy, np.asarray(eight_params[k]),
                                   rtol=1e-5, atol=1e-6)
    # Noise drawn once: all 8 device copies on both processes are identical.
    allc = np.concatenate([o[f"param_{k}"] for o in outs])
    assert np.all(allc == allc[0])
  # Noise was really added: the noise-free run ends elsewhere.
  clean, _, _, _ = train(None, sigma=0.0)
  assert float(jnp.max(jnp.abs(clean["w1"] - one_params["w1"]))) > 0.05
  for o in outs:
    np.testing.assert_allclose(o["norms"], one_norms, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(o["num_real"], one_real)
    # Each process loaded only its half of every padded batch.
    np.testing.assert_array_equal(o["loaded"], [B // 2] * STEPS)
  np.testing.assert_allclose(eight_norms, one_norms, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(eight_real, one_real)
  assert np.all(one_real > 0) and np.all(one_real < B)


def test_single_process_helpers():
  """On one process: process_rows is everything, placement keeps values."""
  if jax.device_count() < 8:
    pytest.skip("needs 8 (simulated) devices")
  mesh = jax.make_mesh((8,), ("data",))
  np.testing.assert_array_equal(process_rows(16, mesh), np.arange(16))
  x = np.arange(32.0, dtype=np.float32).reshape(16, 2)
  for put in (shard_process_local(x, mesh),
              shard_global(x, mesh, P("data"))):
    assert put.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 2)
    np.testing.assert_array_equal(to_host(put), x)
  key = jax.random.key(3)
  placed = shard_global({"k": key, "w": x}, mesh, P())
  assert jax.dtypes.issubdtype(placed["k"].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(placed["k"]),
                                jax.random.key_data(key))
  assert placed["w"].sharding.is_fully_replicated
  assert shard_global(placed, mesh, P())["w"] is placed["w"]
  with pytest.raises(ValueError, match="divisible"):
    process_rows(12, mesh)
  with pytest.raises(ValueError, match="axis"):
    process_rows(16, mesh, "model")


def test_initialize_arguments(monkeypatch):
  from trustjax.experiment import multihost
  for name in (multihost.ENV_COORDINATOR, multihost.ENV_NUM_PROCESSES,
               multihost.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  assert multihost.initialize() is False           # single process: no-op
  with pytest.raises(ValueError, match="num_processes"):
    multihost.initialize("localhost:1234")
  with pytest.raises(ValueError, match="process_id=2"):
    multihost.initialize("localhost:1234", 2, 2)
  monkeypatch.setenv(multihost.ENV_NUM_PROCESSES, "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
    multihost.initialize("localhost:1234", process_id=0)


def test_spawn_local_stops_peers_of_a_failed_process():
  """A dead process must not leave its peer waiting on a collective."""
  from trustjax.experiment import multihost
  script = ("import os, sys, time\n"
            "if os.environ['JAX_PROCESS_ID'] == '0': sys.exit(3)\n"
            "time.sleep(60)\n")
  results = multihost.spawn_local([sys.executable, "-c", script], 2,
                                  timeout_s=30)
  assert results[0].returncode == 3 and results[1].returncode != 0


if __name__ == "__main__":
  _worker(sys.argv[1])
