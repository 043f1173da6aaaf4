"""Continual setting: arrivals, storage caps and deletion policies."""

import numpy as np
import pytest

from trustjax import federated as fl


def test_static_setting_is_the_special_case():
  owners = np.random.default_rng(0).integers(0, 5, 200)
  store = fl.ContinualStore(owners, np.zeros(200, int), 5)
  store.advance_to(0)
  assert np.array_equal(store.held_assignment(), owners)
  data = store.federated_data({"x": np.arange(200)})
  assert data.client_sizes().tolist() == np.bincount(owners, minlength=5
                                                     ).tolist()


def test_fifo_keeps_the_newest_and_respects_cap():
  owners = np.zeros(10, int)
  arrivals = np.arange(10)             # one example per round
  store = fl.ContinualStore(owners, arrivals, 1, cap=3, policy="fifo")
  store.advance_to(9)
  assert sorted(store.held[0]) == [7, 8, 9]


@pytest.mark.parametrize("policy", ["random", "reservoir"])
def test_cap_and_determinism(policy):
  rng = np.random.default_rng(1)
  owners = rng.integers(0, 4, 500)
  arrivals = rng.integers(0, 20, 500)
  a = fl.ContinualStore(owners, arrivals, 4, cap=10, policy=policy, seed=3)
  b = fl.ContinualStore(owners, arrivals, 4, cap=10, policy=policy, seed=3)
  for r in range(20):
    a.advance_to(r)
    assert max(len(h) for h in a.held) <= 10
  b.advance_to(7)
  state = b.state_dict()
  c = fl.ContinualStore(owners, arrivals, 4, cap=10, policy=policy, seed=3)
  c.load_state_dict(state)
  c.advance_to(19)
  assert c.held == a.held        # resumed store equals uninterrupted one
  for k in range(4):             # held examples are the client's own
    assert np.all(owners[a.held[k]] == k)
    assert np.all(arrivals[a.held[k]] <= 19)


def test_reservoir_keeps_a_uniform_sample_of_the_stream():
  """Each of 50 streamed examples survives with probability cap/50 = 0.2."""
  owners = np.zeros(50, int)
  arrivals = np.arange(50)
  kept = np.zeros(50)
  trials = 2000
  for seed in range(trials):
    s = fl.ContinualStore(owners, arrivals, 1, cap=10, policy="reservoir",
                          seed=seed)
    s.advance_to(49)
    kept[s.held[0]] += 1
  freq = kept / trials
  # binomial sd = sqrt(0.2*0.8/2000) = 0.009: 5 sd bound on every example,
  # and FIFO-like bias (old examples never kept) would fail it.
  assert np.all(np.abs(freq - 0.2) < 0.045)


def test_empty_clients_and_rounds_train_without_nans():
  """Clients that hold nothing yet have size 0; a round with them runs."""
  import jax.numpy as jnp
  import optax
  rng = np.random.default_rng(2)
  owners = rng.integers(0, 6, 60)
  arrivals = np.where(owners < 3, 0, 5)   # clients 3-5 get data at round 5
  store = fl.ContinualStore(owners, arrivals, 6, cap=8, policy="fifo")
  store.advance_to(0)
  arrays = {"x": rng.normal(size=(60, 3)).astype(np.float32),
            "y": rng.integers(0, 2, 60).astype(np.int32)}
  data = store.federated_data(arrays)
  assert data.client_sizes()[3:].tolist() == [0, 0, 0]

  def loss_fn(p, batch, rng_):
    logits = batch["x"] @ p["w"]
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["y"]), {}
  alg = fl.fedavg(loss_fn, client_lr=0.1)
  state = alg.server_init({"w": jnp.zeros((3, 2))})
  cohort = fl.select_clients(data.client_sizes(), 3, round=0, seed=0,
                             method="activity")
  state, _, m = fl.run_round(alg, state, data, cohort, batch_size=4,
                             local_epochs=1, seed=0, round=0)
  assert np.isfinite(np.asarray(state["params"]["w"])).all()
  assert np.isfinite(m["client_loss"])


def test_bad_input():
  with pytest.raises(ValueError, match="policy"):
    fl.ContinualStore(np.zeros(3, int), np.zeros(3, int), 1, policy="lru")
  with pytest.raises(ValueError, match="cap"):
    fl.ContinualStore(np.zeros(3, int), np.zeros(3, int), 1, cap=0)
  with pytest.raises(ValueError, match="one entry per"):
    fl.ContinualStore(np.zeros(3, int), np.zeros(2, int), 1)
  s = fl.ContinualStore(np.zeros(3, int), np.zeros(3, int), 1)
  s.advance_to(2)
  with pytest.raises(ValueError, match="go back"):
    s.advance_to(1)
