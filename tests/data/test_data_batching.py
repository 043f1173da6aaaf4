"""Fixed-shape batching: padding rows, example_mask, determinism."""

import numpy as np
import pytest

from trustjax.data import batch_iterator
from trustjax.data import gather_batch


def _arrays(n=10):
  return {"ids": np.arange(n * 3, dtype=np.int32).reshape(n, 3) + 1,
          "label": np.arange(n, dtype=np.int32) + 100}


def test_shapes_padding_and_coverage():
  arrays = _arrays(10)
  batches = list(batch_iterator(arrays, 4, seed=0, epoch=0))
  assert len(batches) == 3
  for b in batches:
    assert b["ids"].shape == (4, 3) and b["label"].shape == (4,)
    assert b["example_mask"].shape == (4,) and b["example_mask"].dtype == bool
  last = batches[-1]
  np.testing.assert_array_equal(last["example_mask"], [1, 1, 0, 0])
  assert (last["ids"][2:] == 0).all() and (last["label"][2:] == 0).all()
  seen = np.concatenate([b["label"][b["example_mask"]] for b in batches])
  assert sorted(seen) == list(range(100, 110))
  # Rows stay aligned across arrays.
  for b in batches:
    m = b["example_mask"]
    np.testing.assert_array_equal(b["ids"][m][:, 0] - 1,
                                  (b["label"][m] - 100) * 3)


def test_deterministic_per_seed_and_epoch():
  def order(seed, epoch):
    return np.concatenate([b["label"] for b in batch_iterator(
        _arrays(), 4, seed=seed, epoch=epoch)])
  np.testing.assert_array_equal(order(1, 2), order(1, 2))
  assert not np.array_equal(order(1, 2), order(1, 3))
  assert not np.array_equal(order(1, 2), order(2, 2))
  # Reference: the documented permutation.
  perm = np.random.default_rng([1, 2]).permutation(10)
  np.testing.assert_array_equal(order(1, 2)[:10], perm + 100)


def test_no_shuffle_and_drop_remainder():
  batches = list(batch_iterator(_arrays(), 4, seed=0, epoch=0,
                                shuffle=False, drop_remainder=True))
  assert len(batches) == 2 and all(b["example_mask"].all() for b in batches)
  np.testing.assert_array_equal(batches[1]["label"], [104, 105, 106, 107])


def test_errors():
  with pytest.raises(ValueError, match="batch_size"):
    list(batch_iterator(_arrays(), 0, seed=0, epoch=0))
  with pytest.raises(ValueError, match="lengths"):
    list(batch_iterator({"a": np.zeros(3), "b": np.zeros(4)}, 2, seed=0,
                        epoch=0))
  with pytest.raises(ValueError, match="shape"):
    gather_batch(_arrays(), np.zeros(3, np.int32), np.ones(4, bool))


def test_gather_batch_zeroes_padding_rows():
  arrays = _arrays()
  idx = np.array([7, 2, 0, 0], np.int32)
  mask = np.array([True, True, False, False])
  out = gather_batch(arrays, idx, mask)
  np.testing.assert_array_equal(out["label"], [107, 102, 0, 0])
  assert (out["ids"][2:] == 0).all()
  np.testing.assert_array_equal(out["ids"][0], arrays["ids"][7])
  np.testing.assert_array_equal(out["example_mask"], mask)
  # The source arrays are not modified.
  np.testing.assert_array_equal(arrays["label"], np.arange(10) + 100)
