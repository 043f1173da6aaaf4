"""Host-side bucket building (vectorised over a bucket's clients) against
per-client Python references: the batches of `client_batch_indices`, and
each client's own embedding rows from `np.unique`."""

import numpy as np
import pytest

from trustjax import federated as fl
from trustjax.federated import rounds

# Very different sizes, empty clients, sizes on both sides of a batch.
SIZES = [1, 2, 3, 0, 7, 12, 5, 30, 2, 1, 4, 9, 17, 16, 33, 0, 64]
V = 60


def _data(seed=0):
  rng = np.random.default_rng(seed)
  owner = np.repeat(np.arange(len(SIZES)), SIZES)
  rng.shuffle(owner)   # a client's examples are not contiguous
  n = len(owner)
  mask = rng.random((n, 5)) < 0.7
  arrays = {"ids": np.where(mask, rng.integers(1, V, (n, 5)), 0).astype(
      np.int32), "mask": mask, "label": rng.integers(0, 4, n),
            "x": rng.normal(size=(n, 2, 3)).astype(np.float32)}
  return fl.FederatedData.from_assignment(arrays, owner, len(SIZES))


def _buckets(data, batch_size, epochs, ndev=1, min_client_steps=8):
  clients = np.random.default_rng(1).permutation(len(SIZES))
  weights = np.linspace(1.0, 2.0, len(SIZES)).astype(np.float32)
  return rounds.cohort_buckets(data, clients, weights, ndev=ndev,
                               batch_size=batch_size, local_epochs=epochs,
                               min_client_steps=min_client_steps,
                               max_clients=4)


@pytest.mark.parametrize("batch_size,epochs", [(4, 1), (4, 2), (5, 3),
                                               (16, 1)])
def test_bucket_batches_equal_per_client_reference(batch_size, epochs):
  data = _data()
  seen = []
  for b in _buckets(data, batch_size, epochs):
    for slots in (None, np.arange(len(b.ids))[1::2]):
      out = b.batches(data, seed=3, round=5, slots=slots)
      slots = np.arange(len(b.ids)) if slots is None else slots
      for r, j in enumerate(slots):
        if j >= b.size:   # a padding client: no data
          assert not out["example_mask"][r].any()
          assert all(not np.any(out[k][r]) for k in data.arrays)
          continue
        c = int(b.ids[j])
        idx, mask = fl.client_batch_indices(
            data, c, steps=b.steps, batch_size=batch_size,
            local_epochs=epochs, seed=3, round=5)
        # The bucket's rows hold every batch in full.
        assert not mask[:, b.rows:].any()
        idx, mask = idx[:, :b.rows], mask[:, :b.rows]
        np.testing.assert_array_equal(out["example_mask"][r], mask)
        for k, v in data.arrays.items():
          ref = np.where(mask.reshape(mask.shape + (1,) * (v.ndim - 1)),
                         v[idx], 0)
          np.testing.assert_array_equal(out[k][r], ref)
          assert out[k].dtype == v.dtype
        seen.append(c)
  assert sorted(set(seen)) == list(range(len(SIZES)))


def test_client_rows_match_unique_ids_and_renumber():
  data = _data(seed=2)
  table = rounds.client_rows(data, "ids")
  ids = data.arrays["ids"]
  assert table.max_id == ids.max()
  for c in range(data.num_clients):
    own = data.client_indices(c)
    rows_c = table.rows[table.offsets[c]:table.offsets[c + 1]]
    np.testing.assert_array_equal(rows_c, np.union1d(ids[own], [0]))
    np.testing.assert_array_equal(rows_c[table.local[own]], ids[own])
  # Cached: the same object on the next call.
  assert rounds.client_rows(data, "ids") is table


def test_row_table_and_renumbered_batches_reproduce_ids():
  data = _data(seed=3)
  table = rounds.client_rows(data, "ids", num_rows=V)
  for b in _buckets(data, 4, 2):
    budget = 64
    for slots in (None, np.arange(len(b.ids))[::2]):
      plain = b.batches(data, seed=0, round=1, slots=slots)
      renum = b.batches(data, seed=0, round=1, slots=slots,
                        renumbered=("ids", table.local))
      rows = b.row_table(table, slots, budget, V)
      slots = np.arange(len(b.ids)) if slots is None else slots
      assert rows.shape == (len(slots), budget) and rows.dtype == np.int32
      for r, j in enumerate(slots):
        np.testing.assert_array_equal(rows[r][renum["ids"][r]],
                                      plain["ids"][r])
        real = rows[r][rows[r] < V]
        assert np.all(rows[r][len(real):] == V)   # unused: out of range
        if j < b.size:
          c = int(b.ids[j])
          expect = np.union1d(data.arrays["ids"][data.client_indices(c)],
                              [0])
        else:
          expect = [0]   # a padding client holds only id 0
        np.testing.assert_array_equal(real, expect)
      for k in ("mask", "label", "x", "example_mask"):
        np.testing.assert_array_equal(renum[k], plain[k])


def test_client_rows_refuses_out_of_range_ids():
  data = _data()
  with pytest.raises(ValueError, match="outside"):
    rounds.client_rows(data, "ids",
                       num_rows=int(data.arrays["ids"].max()))
  arrays = dict(data.arrays)
  arrays["ids"] = arrays["ids"].copy()
  arrays["ids"][0, 0] = -2
  bad = fl.FederatedData(arrays, data.order, data.offsets)
  with pytest.raises(ValueError, match="negative"):
    rounds.client_rows(bad, "ids")


@pytest.mark.parametrize("ndev", [1, 2])
def test_bucket_padding_is_bounded_by_client_steps(ndev):
  data = _data()
  for b in _buckets(data, 4, 1, ndev=ndev, min_client_steps=8):
    m_pad = len(b.ids)
    assert m_pad % ndev == 0 and b.size <= m_pad
    # At least 8 // steps clients, else the next power of two (times ndev).
    need = max(1 << max(b.size - 1, 0).bit_length(), 8 // b.steps)
    assert m_pad == -(-need // ndev) * ndev
    assert np.all(b.unit[b.size:] == 0) and np.all(b.weights[b.size:] == 0)
    assert np.all(b.unit[:b.size] == 1)
