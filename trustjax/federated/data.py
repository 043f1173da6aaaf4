"""Federated data: every client's examples in one flat array plus offsets.

No per-client Python objects: client k owns rows
`order[offsets[k]:offsets[k+1]]` of the flat arrays, so a population of
millions of clients costs two integer arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class FederatedData:
  """Flat arrays `[N, ...]` grouped by client.

  Attributes:
    arrays: name -> array with leading axis N (examples).
    order: int64[N], example indices sorted by client.
    offsets: int64[num_clients + 1]; client k's examples are
      `order[offsets[k]:offsets[k+1]]`.
    client_names: optional names (e.g. Shakespeare speaker ids).
  """
  arrays: Mapping[str, np.ndarray]
  order: np.ndarray
  offsets: np.ndarray
  client_names: Sequence[str] | None = None

  def __post_init__(self):
    n = {k: len(v) for k, v in self.arrays.items()}
    if len(set(n.values())) > 1:
      raise ValueError(f"arrays have different lengths: {n}")
    if len(self.offsets) < 2 or self.offsets[0] != 0 or \
        self.offsets[-1] != len(self.order) or np.any(np.diff(self.offsets)
                                                      < 0):
      raise ValueError("offsets must start at 0, be non-decreasing and end "
                       f"at len(order)={len(self.order)}")

  @classmethod
  def from_assignment(cls, arrays: Mapping[str, np.ndarray],
                      client_of_example: np.ndarray, num_clients: int | None
                      = None, client_names: Sequence[str] | None = None,
                      allow_empty: bool = True) -> "FederatedData":
    """Groups examples by `client_of_example[i]` in [0, num_clients)."""
    cid = np.asarray(client_of_example, np.int64)
    if cid.ndim != 1:
      raise ValueError(f"client_of_example must be 1-D, got {cid.shape}")
    k = int(num_clients if num_clients is not None else cid.max() + 1)
    if cid.size and (cid.min() < 0 or cid.max() >= k):
      raise ValueError(f"client ids must lie in [0, {k}); got "
                       f"[{cid.min()}, {cid.max()}]")
    order = np.argsort(cid, kind="stable")
    counts = np.bincount(cid, minlength=k)
    if not allow_empty and np.any(counts == 0):
      raise ValueError(f"{int(np.sum(counts == 0))} clients have no data "
                       "(allow_empty=False)")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return cls(arrays=dict(arrays), order=order, offsets=offsets,
               client_names=client_names)

  @classmethod
  def from_client_ids(cls, arrays: Mapping[str, np.ndarray],
                      client_ids: Sequence[str]) -> "FederatedData":
    """Natural clients (e.g. Shakespeare speakers): one per distinct id."""
    names, cid = np.unique(np.asarray(client_ids), return_inverse=True)
    return cls.from_assignment(arrays, cid, len(names),
                               client_names=[str(n) for n in names])

  @property
  def num_clients(self) -> int:
    return len(self.offsets) - 1

  @property
  def num_examples(self) -> int:
    return len(self.order)

  def client_sizes(self) -> np.ndarray:
    return np.diff(self.offsets)

  def client_indices(self, k: int) -> np.ndarray:
    if not 0 <= k < self.num_clients:
      raise ValueError(f"client {k} out of range [0, {self.num_clients})")
    return self.order[self.offsets[k]:self.offsets[k + 1]]

  def client_of_example(self) -> np.ndarray:
    out = np.empty(self.num_examples, np.int64)
    out[self.order] = np.repeat(np.arange(self.num_clients),
                                self.client_sizes())
    return out

  def label_counts(self, label_key: str = "label",
                   num_labels: int | None = None) -> np.ndarray:
    """int[num_clients, num_labels] histogram of labels per client."""
    y = np.asarray(self.arrays[label_key])
    c = self.client_of_example()
    m = int(num_labels or y.max() + 1)
    out = np.zeros((self.num_clients, m), np.int64)
    np.add.at(out, (c, y), 1)
    return out

  def statistics(self, label_key: str = "label") -> dict:
    """Sizes and label spread per client, for reports and plots."""
    sizes = self.client_sizes()
    stats = {"num_clients": self.num_clients,
             "num_examples": self.num_examples,
             "size_min": int(sizes.min()), "size_median": float(
                 np.median(sizes)), "size_max": int(sizes.max()),
             "size_mean": float(sizes.mean()),
             "empty_clients": int(np.sum(sizes == 0))}
    if label_key in self.arrays:
      lc = self.label_counts(label_key)
      stats["labels_per_client_mean"] = float(np.mean((lc > 0).sum(1)))
    return stats

  def plot(self, path: str, label_key: str = "label") -> str:
    """PNG: histogram of examples per client and, when `label_key` is one
    of the arrays, of distinct labels per client."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    panels = 2 if label_key in self.arrays else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.5), dpi=110,
                             squeeze=False)
    axes = axes[0]
    axes[0].hist(self.client_sizes(), bins=50)
    axes[0].set_xlabel("examples per client")
    axes[0].set_ylabel("clients")
    axes[0].set_yscale("log")
    if label_key in self.arrays:
      axes[1].hist((self.label_counts(label_key) > 0).sum(1), bins=30)
      axes[1].set_xlabel("distinct labels per client")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
