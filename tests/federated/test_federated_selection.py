"""Client selection: fixed shapes, determinism, unbiased aggregation weights."""

import numpy as np
import pytest

from trustjax import federated as fl

SIZES = np.array([1, 2, 3, 5, 8, 13, 40, 100, 0, 7, 1, 20])


@pytest.mark.parametrize("kw", [
    dict(method="uniform"),
    dict(method="uniform", replace=True),
    dict(method="activity", replace=True),
    dict(method="activity", power=0.5, replace=True),
    dict(method="activity"),
    dict(method="uniform", availability=np.linspace(0.3, 1.0, 12)),
    dict(method="activity", availability=np.linspace(0.3, 1.0, 12)),
])
def test_weights_are_unbiased(kw):
  """E[sum_{k in cohort} w_k Delta_k] = sum_k (n_k/N) Delta_k for any Delta:
  equivalently E[w_k 1{k selected}] = n_k / N for every client."""
  rounds = 6000
  acc = np.zeros(len(SIZES))
  for r in range(rounds):
    c = fl.select_clients(SIZES, 4, round=r, seed=3, **kw)
    np.add.at(acc, c.clients[c.mask], c.weights[c.mask])
  est = acc / rounds
  share = SIZES / SIZES.sum()
  # Monte-Carlo tolerance: relative 15% on clients with share > 2%.
  big = share > 0.02
  np.testing.assert_allclose(est[big], share[big], rtol=0.15)
  assert abs(est.sum() - 1.0) < 0.05


def test_fixed_shape_and_determinism():
  a = fl.select_clients(SIZES, 4, round=7, seed=1, method="activity")
  b = fl.select_clients(SIZES, 4, round=7, seed=1, method="activity")
  c = fl.select_clients(SIZES, 4, round=8, seed=1, method="activity")
  assert np.array_equal(a.clients, b.clients)
  assert a.clients.shape == c.clients.shape
  assert not np.any(a.clients[a.mask] == 8)  # the empty client is never drawn
  n = fl.select_clients(SIZES, 4, round=7, seed=1, normalize=True)
  assert np.isclose(n.weights.sum(), 1.0)


def test_activity_prefers_large_clients():
  counts = np.zeros(len(SIZES))
  for r in range(2000):
    c = fl.select_clients(SIZES, 3, round=r, seed=0, method="activity")
    np.add.at(counts, c.clients[c.mask], 1)
  assert counts[7] > 5 * counts[0]


def test_bad_input():
  with pytest.raises(ValueError, match="exceeds"):
    fl.select_clients(SIZES, 20, round=0, seed=0)
  with pytest.raises(ValueError, match="empty"):
    fl.select_clients(np.zeros(5, int), 2, round=0, seed=0)
  with pytest.raises(ValueError, match="method"):
    fl.select_clients(SIZES, 2, round=0, seed=0, method="greedy")
  with pytest.raises(ValueError, match="availability"):
    fl.select_clients(SIZES, 2, round=0, seed=0, availability=np.ones(3))
