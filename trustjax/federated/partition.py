"""Partitioners: assign every example to exactly one client.

Each returns `client_of_example: int64[N]` with values in [0, num_clients);
feed it to `FederatedData.from_assignment`. Partition randomness comes from
its own `seed` (a `numpy.random.Generator`), separate from training seeds.

References: label skew by Dirichlet (Hsu et al. 2019, "Measuring the effects
of non-identical data distribution"); #labels per client (McMahan et al.
2017 shards; Li et al. 2022 "Federated learning on non-IID data silos");
quantity skew (Li et al. 2022); clustering of embeddings as pseudo-labels
(FedNLP, Lin et al. 2022).
"""

from __future__ import annotations

import numpy as np


def _check(num_clients: int, n: int) -> None:
  if num_clients < 1:
    raise ValueError(f"num_clients={num_clients} must be >= 1")
  if n < 1:
    raise ValueError("cannot partition an empty data set")


def _split_by_proportions(idx: np.ndarray, props: np.ndarray) -> list:
  """Splits idx into len(props) parts of sizes ~ props (sum to len(idx))."""
  cuts = (np.cumsum(props)[:-1] * len(idx)).round().astype(int)
  return np.split(idx, cuts)


def iid(num_examples: int, num_clients: int, *, seed: int) -> np.ndarray:
  """Shuffled, (near-)equal shares."""
  _check(num_clients, num_examples)
  rng = np.random.default_rng(seed)
  out = np.empty(num_examples, np.int64)
  for c, part in enumerate(np.array_split(rng.permutation(num_examples),
                                          num_clients)):
    out[part] = c
  return out


def dirichlet_label_skew(labels: np.ndarray, num_clients: int, *,
                         alpha: float, seed: int, min_size: int = 0,
                         max_tries: int = 100,
                         size_weights: np.ndarray | None = None
                         ) -> np.ndarray:
  """For each label, its examples are split by proportions ~ Dir(alpha).

  Small alpha: each client sees few labels; alpha -> inf approaches IID.
  `size_weights[K]` (e.g. log-normal draws) multiply each client's
  proportions before renormalising, which adds heavy-tailed quantity skew
  (client k's expected size ∝ size_weights[k]).
  Retries (up to `max_tries`) until every client has >= `min_size` examples.
  """
  labels = np.asarray(labels)
  _check(num_clients, len(labels))
  if alpha <= 0:
    raise ValueError(f"alpha={alpha} must be > 0")
  rng = np.random.default_rng(seed)
  for _ in range(max_tries):
    out = np.empty(len(labels), np.int64)
    for y in np.unique(labels):
      idx = rng.permutation(np.flatnonzero(labels == y))
      props = rng.dirichlet(np.full(num_clients, alpha))
      if size_weights is not None:
        props = props * np.asarray(size_weights, np.float64)
        props = props / props.sum()
      for c, part in enumerate(_split_by_proportions(idx, props)):
        out[part] = c
    if np.bincount(out, minlength=num_clients).min() >= min_size:
      return out
  raise ValueError(
      f"no Dirichlet(alpha={alpha}) partition in {max_tries} tries gave every "
      f"one of {num_clients} clients >= {min_size} examples; lower min_size "
      "or num_clients, or raise alpha")


def labels_per_client(labels: np.ndarray, num_clients: int, *,
                      labels_each: int, seed: int) -> np.ndarray:
  """Each client holds `labels_each` labels; a label's examples are split
  evenly among the clients holding it. Labels are dealt round-robin over a
  random permutation so every label has at least one client."""
  labels = np.asarray(labels)
  _check(num_clients, len(labels))
  classes = np.unique(labels)
  if not 1 <= labels_each <= len(classes):
    raise ValueError(f"labels_each={labels_each} must be in [1, "
                     f"{len(classes)}]")
  if num_clients * labels_each < len(classes):
    raise ValueError(
        f"{num_clients} clients x {labels_each} labels cannot cover "
        f"{len(classes)} labels; every example must be assigned")
  rng = np.random.default_rng(seed)
  perm = rng.permutation(classes)
  holders = {y: [] for y in classes}
  for c in range(num_clients):
    for j in range(labels_each):
      holders[perm[(c * labels_each + j) % len(classes)]].append(c)
  out = np.empty(len(labels), np.int64)
  for y, cs in holders.items():
    idx = rng.permutation(np.flatnonzero(labels == y))
    for c, part in zip(cs, np.array_split(idx, len(cs))):
      out[part] = c
  return out


def heavy_tailed_dirichlet(labels: np.ndarray, num_clients: int, *,
                           alpha: float, sigma: float, seed: int,
                           min_size: int = 1) -> np.ndarray:
  """Log-normal(0, sigma) client sizes with Dirichlet(alpha) label mixes.

  The heavy-tailed non-IID population of real device fleets, and it scales
  to more clients than examples per label (where per-label Dirichlet splits
  leave clients empty). Sizes are drawn first (every client >= min_size,
  summing to N); then each client k draws p_k ~ Dir(alpha 1) over labels and
  takes its n_k examples one label draw at a time from p_k restricted to the
  labels not yet used up. Every example is assigned exactly once.
  """
  labels = np.asarray(labels)
  n = len(labels)
  sizes = np.bincount(quantity_skew(n, num_clients, seed=seed, sigma=sigma,
                                    min_size=min_size),
                      minlength=num_clients)
  rng = np.random.default_rng([seed, 2])
  classes, y = np.unique(labels, return_inverse=True)
  pools = [list(rng.permutation(np.flatnonzero(y == c)))
           for c in range(len(classes))]
  left = np.array([len(p) for p in pools], np.float64)
  out = np.empty(n, np.int64)
  for k in rng.permutation(num_clients):
    p = rng.dirichlet(np.full(len(classes), alpha))
    for _ in range(sizes[k]):
      q = p * (left > 0)
      if q.sum() <= 0:
        q = (left > 0).astype(np.float64)
      c = rng.choice(len(classes), p=q / q.sum())
      out[pools[c].pop()] = k
      left[c] -= 1
  return out


def quantity_skew(num_examples: int, num_clients: int, *, seed: int,
                  method: str = "lognormal", sigma: float = 1.0,
                  alpha: float = 1.0, min_size: int = 1) -> np.ndarray:
  """IID content, skewed sizes: log-normal(0, sigma) (heavy-tailed, like
  device populations) or Dirichlet(alpha) proportions. Every client gets at
  least `min_size` examples."""
  _check(num_clients, num_examples)
  if num_clients * min_size > num_examples:
    raise ValueError(f"{num_clients} clients x min_size={min_size} exceeds "
                     f"{num_examples} examples")
  rng = np.random.default_rng(seed)
  if method == "lognormal":
    w = rng.lognormal(0.0, sigma, num_clients)
  elif method == "dirichlet":
    w = rng.dirichlet(np.full(num_clients, alpha))
  else:
    raise ValueError(f"method={method!r}; valid: lognormal, dirichlet")
  spare = num_examples - num_clients * min_size
  sizes = min_size + np.floor(w / w.sum() * spare).astype(np.int64)
  rest = num_examples - sizes.sum()
  np.add.at(sizes, rng.choice(num_clients, size=rest, p=w / w.sum()), 1)
  out = np.repeat(np.arange(num_clients), sizes)
  return out[np.argsort(rng.permutation(num_examples))]


def kmeans(x: np.ndarray, k: int, *, seed: int, iters: int = 50
           ) -> np.ndarray:
  """Lloyd's k-means with k-means++ init; returns cluster ids int64[N]."""
  x = np.asarray(x, np.float64)
  rng = np.random.default_rng(seed)
  centers = [x[rng.integers(len(x))]]
  for _ in range(1, k):
    d = np.min(((x[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), 1)
    centers.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0
                   else x[rng.integers(len(x))])
  c = np.array(centers)
  assign = np.zeros(len(x), np.int64)
  for _ in range(iters):
    d = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]
    new = d.argmin(1)
    if np.array_equal(new, assign) and _ > 0:
      break
    assign = new
    for j in range(k):
      if np.any(assign == j):
        c[j] = x[assign == j].mean(0)
  return assign


def cluster_skew(embeddings: np.ndarray, num_clients: int, *,
                 num_clusters: int, alpha: float, seed: int,
                 min_size: int = 0) -> np.ndarray:
  """Feature skew (FedNLP): k-means clusters of embeddings as pseudo-labels,
  then Dirichlet(alpha) label skew over those clusters."""
  emb = np.asarray(embeddings)
  if emb.ndim != 2:
    raise ValueError(f"embeddings must be [N, D], got {emb.shape}")
  clusters = kmeans(emb, num_clusters, seed=seed)
  return dirichlet_label_skew(clusters, num_clients, alpha=alpha,
                              seed=seed + 1, min_size=min_size)
