"""Partitioners and FederatedData: every example assigned exactly once."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from trustjax import federated as fl


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 400), k=st.integers(1, 30), seed=st.integers(0, 99),
       kind=st.sampled_from(["iid", "dirichlet", "labels", "quantity",
                             "heavy"]))
def test_every_example_assigned_exactly_once(n, k, seed, kind):
  labels = np.random.default_rng(seed).integers(0, 5, n)
  if kind == "iid":
    a = fl.iid(n, k, seed=seed)
  elif kind == "dirichlet":
    a = fl.dirichlet_label_skew(labels, k, alpha=0.5, seed=seed)
  elif kind == "labels":
    each = min(2, len(np.unique(labels)))
    if k * each < len(np.unique(labels)):
      return
    a = fl.labels_per_client(labels, k, labels_each=each, seed=seed)
  elif kind == "heavy":
    if k > n:
      return
    a = fl.heavy_tailed_dirichlet(labels, k, alpha=0.3, sigma=1.0, seed=seed)
    assert np.bincount(a, minlength=k).min() >= 1
  else:
    if k > n:
      return
    a = fl.quantity_skew(n, k, seed=seed)
  assert a.shape == (n,) and a.min() >= 0 and a.max() < k
  data = fl.FederatedData.from_assignment({"label": labels}, a, k)
  seen = np.concatenate([data.client_indices(c) for c in range(k)])
  assert np.array_equal(np.sort(seen), np.arange(n))
  assert data.client_sizes().sum() == n
  assert np.array_equal(data.client_of_example(), a)


def _mean_tv_to_global(labels, assign, k):
  data = fl.FederatedData.from_assignment({"label": labels}, assign, k)
  lc = data.label_counts().astype(float)
  glob = lc.sum(0) / lc.sum()
  per = lc / np.maximum(lc.sum(1, keepdims=True), 1)
  return float(np.mean(0.5 * np.abs(per - glob).sum(1)))


def test_dirichlet_large_alpha_approaches_iid():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 20000)
  k = 20
  tv_iid = _mean_tv_to_global(labels, fl.iid(len(labels), k, seed=1), k)
  tv_big = _mean_tv_to_global(
      labels, fl.dirichlet_label_skew(labels, k, alpha=1e4, seed=1), k)
  tv_small = _mean_tv_to_global(
      labels, fl.dirichlet_label_skew(labels, k, alpha=0.1, seed=1), k)
  assert tv_big < 2 * tv_iid + 0.01
  assert tv_small > 0.5 > tv_big


def test_labels_per_client_and_min_size():
  labels = np.repeat(np.arange(10), 50)
  a = fl.labels_per_client(labels, 20, labels_each=2, seed=0)
  data = fl.FederatedData.from_assignment({"label": labels}, a, 20)
  assert ((data.label_counts() > 0).sum(1) <= 2).all()
  with pytest.raises(ValueError, match="cannot cover"):
    fl.labels_per_client(labels, 3, labels_each=2, seed=0)
  a = fl.dirichlet_label_skew(labels, 10, alpha=0.5, seed=0, min_size=10)
  assert np.bincount(a, minlength=10).min() >= 10
  with pytest.raises(ValueError, match="min_size"):
    fl.dirichlet_label_skew(labels, 100, alpha=0.01, seed=0, min_size=40,
                            max_tries=3)


def test_quantity_skew_is_heavy_tailed_and_nonempty():
  a = fl.quantity_skew(20000, 1000, seed=0, sigma=1.5)
  sizes = np.bincount(a, minlength=1000)
  assert sizes.min() >= 1 and sizes.sum() == 20000
  assert sizes.max() / np.median(sizes) > 8
  with pytest.raises(ValueError, match="min_size"):
    fl.quantity_skew(10, 20, seed=0)


def test_cluster_skew_uses_embedding_clusters():
  rng = np.random.default_rng(0)
  centers = rng.normal(0, 10, (4, 8))
  which = rng.integers(0, 4, 800)
  emb = centers[which] + rng.normal(0, 0.1, (800, 8))
  clusters = fl.kmeans(emb, 4, seed=0)
  # k-means recovers the planted clusters up to relabelling.
  for c in range(4):
    assert len(np.unique(which[clusters == c])) == 1
  a = fl.cluster_skew(emb, 10, num_clusters=4, alpha=0.1, seed=0)
  assert np.bincount(a, minlength=10).sum() == 800


def test_natural_clients_and_errors():
  data = fl.FederatedData.from_client_ids({"x": np.arange(5)},
                                          ["b", "a", "b", "c", "a"])
  assert data.client_names == ["a", "b", "c"]
  assert data.client_sizes().tolist() == [2, 2, 1]
  assert sorted(data.client_indices(1).tolist()) == [0, 2]
  with pytest.raises(ValueError, match="no data"):
    fl.FederatedData.from_assignment({"x": np.arange(3)}, [0, 0, 2], 3,
                                     allow_empty=False)
  with pytest.raises(ValueError, match="client ids"):
    fl.FederatedData.from_assignment({"x": np.arange(3)}, [0, 5, 1], 3)
  with pytest.raises(ValueError, match="empty"):
    fl.iid(0, 3, seed=0)
  st_ = data.statistics(label_key="none")
  assert st_["num_clients"] == 3 and st_["size_max"] == 2


def test_heavy_tailed_dirichlet_is_skewed_in_size_and_labels():
  labels = np.repeat(np.arange(150), 100)
  a = fl.heavy_tailed_dirichlet(labels, 1000, alpha=0.5, sigma=1.5, seed=0)
  data = fl.FederatedData.from_assignment({"label": labels}, a, 1000)
  sizes = data.client_sizes()
  assert sizes.min() >= 1 and sizes.max() / np.median(sizes) > 20
  # Large clients see far fewer distinct labels than an IID draw would.
  big = sizes >= 100
  distinct = (data.label_counts() > 0).sum(1)[big]
  iid_expect = 150 * (1 - (1 - 1 / 150) ** sizes[big])
  assert big.sum() >= 5 and np.mean(distinct / iid_expect) < 0.8
